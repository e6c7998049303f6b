"""System identity: a fingerprint of the system's code and parameters (not its repr), used by
the resume check and the kernel cache; checkpoints written before it still load and resume."""
import json
import os

import numpy as np
import pytest

import sdekit
from sdekit import kernels, systems
from sdekit.kernels import system_fingerprint

from test_bad_input import raises_named
from test_kernels import run_child

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
ENS = dict(h=0.2, n_steps=10, n_paths=4, seed=1, backend="numpy")


def grad_linear(q, out):
    out[0] = q[0]


def grad_steeper(q, out):
    out[0] = 2.0 * q[0]


def stiffness(k):
    def gradient(q, out):
        out[0] = k * q[0]

    return gradient


def test_fingerprint_follows_code_and_parameters_not_repr():
    a, b = systems.custom(grad_linear, 1), systems.custom(grad_steeper, 1)
    assert repr(a) == repr(b) and system_fingerprint(a) != system_fingerprint(b)
    assert system_fingerprint(a) == system_fingerprint(systems.custom(grad_linear, 1))
    same, other = systems.custom(stiffness(1.0), 1), systems.custom(stiffness(2.0), 1)
    assert system_fingerprint(same) == system_fingerprint(systems.custom(stiffness(1.0), 1))
    assert system_fingerprint(same) != system_fingerprint(other)  # a closed-over constant
    g1, g2 = systems.Gaussian([[2.0, 0.5], [0.5, 1.0]]), systems.Gaussian([[2.0, 0.4], [0.4, 1.0]])
    assert repr(g1) == repr(g2) and system_fingerprint(g1) != system_fingerprint(g2)
    assert system_fingerprint(systems.Harmonic(1.0)) == system_fingerprint(systems.Harmonic(1.0))
    assert system_fingerprint(systems.Harmonic(1.0)) != system_fingerprint(systems.Harmonic(2.0))
    assert len(system_fingerprint(systems.DoubleWell())) == 64


def test_fingerprint_is_the_same_in_another_process():
    """A checkpoint is resumed in a later process: the fingerprint must not depend on ids."""
    code = """
    import json
    from sdekit import systems
    from sdekit.kernels import system_fingerprint
    print(json.dumps([system_fingerprint(s) for s in
                      (systems.Harmonic([1.0, 2.0]), systems.DoubleWell(2), systems.Gaussian([[2.0, 0.5], [0.5, 1.0]]))]))
    """
    here = [system_fingerprint(s) for s in
            (systems.Harmonic([1.0, 2.0]), systems.DoubleWell(2), systems.Gaussian([[2.0, 0.5], [0.5, 1.0]]))]
    assert json.loads(run_child(code)) == here


def test_unstable_system_has_no_fingerprint_and_still_resumes():
    system = systems.custom(grad_linear, 1)
    system.table = object()  # a public attribute the hash cannot describe
    assert system_fingerprint(system) is None
    half = sdekit.ensemble("BAOAB", system, **ENS)
    assert half.state.spec["system_fingerprint"] is None
    rest = sdekit.ensemble("BAOAB", system, **dict(ENS, n_steps=5), resume=half.state)
    assert rest.state.step == 15


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_resume_under_another_custom_potential_with_the_same_repr_is_refused(tmp_path, backend):
    kw = dict(ENS, backend=backend)
    a, b = systems.custom(grad_linear, 1), systems.custom(grad_steeper, 1)
    state = sdekit.ensemble("BAOAB", a, **kw).state
    assert state.spec["system_fingerprint"] == system_fingerprint(a)
    msg = raises_named("resume", sdekit.ensemble, "BAOAB", b, **kw, resume=state)
    assert "system_fingerprint" in msg and "system:" not in msg  # the reprs agree, the code does not
    back = sdekit.load(sdekit.save(tmp_path / "a.npz", state))
    raises_named("resume", sdekit.ensemble, "BAOAB", b, **kw, resume=back)
    again = sdekit.ensemble("BAOAB", systems.custom(grad_linear, 1), **kw, resume=back)  # the same code: accepted
    assert again.state.step == 20


def test_kernel_cache_tells_same_repr_systems_apart():
    a, b = systems.custom(grad_linear, 1), systems.custom(grad_steeper, 1)
    assert kernels.build("BAOAB", a) is not kernels.build("BAOAB", b)
    assert kernels.build("BAOAB", a) is kernels.build("BAOAB", systems.custom(grad_linear, 1))


# ----------------------------------------------------------------------------- old checkpoints
# written by the code before fingerprints (State.spec identified the system by its repr only):
#   sdekit.ensemble("BAOAB", Harmonic(1.0), h=0.2, n_steps=10, n_paths=4, seed=11, record_every=5,
#                   backend="numpy", checkpoint="pristine_numpy_ensemble.npz")
#   sdekit.simulate("BAOAB", DoubleWell(), h=0.1, n_steps=10, seed=12, backend="cpu",
#                   checkpoint="pristine_cpu_simulate.npz")

def test_old_numpy_checkpoint_loads_and_resumes_bitwise(tmp_path):
    old = sdekit.load(os.path.join(DATA, "pristine_numpy_ensemble.npz"))
    assert "system_fingerprint" not in old.spec and old.step == 10 and old.backend == "numpy"
    kw = dict(h=0.2, n_paths=4, record_every=5, backend="numpy")
    whole = sdekit.ensemble("BAOAB", systems.Harmonic(1.0), n_steps=20, seed=11, **kw)
    rest = sdekit.ensemble("BAOAB", systems.Harmonic(1.0), n_steps=10, resume=old, **kw)
    for name in ("q", "p", "xi"):
        np.testing.assert_array_equal(getattr(rest, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(rest.mean["q2"], whole.mean["q2"][3:])
    assert rest.state.rng == whole.state.rng
    assert rest.state.spec == whole.state.spec  # the resumed state records the fingerprint from now on
    raises_named("resume", sdekit.ensemble, "BAOAB", systems.Harmonic(2.0), n_steps=10, resume=old, **kw)
    path = tmp_path / "c.npz"  # and it checkpoints on
    sdekit.ensemble("BAOAB", systems.Harmonic(1.0), n_steps=10, resume=old, checkpoint=path, **kw)
    assert sdekit.load(path).spec["system_fingerprint"] == system_fingerprint(systems.Harmonic(1.0))


def test_old_cpu_checkpoint_loads_and_resumes_bitwise():
    old = sdekit.load(os.path.join(DATA, "pristine_cpu_simulate.npz"))
    assert "system_fingerprint" not in old.spec and old.backend == "cpu" and old.rng["generator"] == "philox4x32_10"
    whole = sdekit.simulate("BAOAB", systems.DoubleWell(), h=0.1, n_steps=20, seed=12, backend="cpu")
    rest = sdekit.simulate("BAOAB", systems.DoubleWell(), h=0.1, n_steps=10, resume=old)  # backend from the state
    assert rest.state.backend == "cpu"
    np.testing.assert_array_equal(rest.q, whole.q[11:])
    np.testing.assert_array_equal(rest.p_O, whole.p_O[11:])
    np.testing.assert_array_equal(rest.t, whole.t[11:])
    assert rest.state.rng == whole.state.rng
