"""Issue 9: a bad-input matrix over the public API and the CLI.

Every bad argument must give a ValueError whose message starts with the argument's
name (or the file's path), a run that blows up a DivergenceError naming the step;
never a crash from inside numpy/scipy/numba/torch (TypeError, IndexError,
LinAlgError, TypingError...), never a silent NaN, never a changed checkpoint.
"""
import re
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import sdekit
from sdekit import analysis, constraints, datasets, kernels, kl, linear, systems
from sdekit.cli import main as cli_main

NAN, INF = float("nan"), float("inf")


class Obj:
    def __repr__(self):
        return "<Obj>"


# values wrong for any real scalar parameter
BAD_REAL = [NAN, INF, -INF, "1.0", None, True, 1j, [1.0, 2.0], [], Obj(), np.array([0.5, 0.5])]
# ... for a parameter that must be > 0 / >= 0
BAD_POSITIVE = BAD_REAL + [0.0, -1.0]
BAD_NONNEG = BAD_REAL + [-1e-3]
# ... for an integer count >= 1
BAD_COUNT = [0, -1, 1.5, 2.0, "3", None, True, NAN, 1j, [2], Obj()]
# ... for an array argument of a 1-D system (shape (1,) or scalar is fine)
BAD_ARRAY_1D = [[NAN], [INF], "abc", "1.0", np.array([1 + 1j]), np.array(["1.0"], dtype=object),
                [], [1.0, 2.0], np.zeros((2, 2)), [None], Obj(), [True]]


def raises_named(name, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` must raise ValueError with a message starting with ``name``."""
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert type(info.value) is ValueError or isinstance(info.value, ValueError)
    assert msg.startswith(name), f"message does not start with {name!r}: {msg!r}"
    assert "\n" not in msg.split(":", 1)[0]
    return msg


def ids(value):
    """A test id that is the same in every process (no memory addresses: xdist compares them)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))[:30]


# ----------------------------------------------------------------------------- simulate / ensemble

H1 = systems.Harmonic()
DW = systems.DoubleWell()
SIM = dict(scheme="BAOAB", system=H1, h=0.1, n_steps=3, gamma=1.0, kT=1.0, seed=0, backend="numpy")
ENS = dict(SIM, n_paths=4)

SIM_CASES = (
    [("scheme", v) for v in ["BAXAB", "", "   ", 3, None, [("B", 0.5)], [("A", NAN)], [("Q", 1.0)],
                             [("A", 1.0, 2.0)], Obj(), ["AB"], {"steps": "BAOAB", "junk": 1},
                             # issue 15: Metropolis sub-words, force groups, repetition
                             "O{AB}O", "O{BOB}O", "{BAB", "BAB}", "O{}O", "(BA)^0", "(BA", "BAB0", "B2AB2", "O3AB"]]
    + [("system", v) for v in [None, "DoubleWell", H1.grad, Obj()]]
    + [("h", v) for v in BAD_POSITIVE]
    + [("n_steps", v) for v in [-1, 1.5, 2.0, "3", None, True, NAN, Obj()]]
    + [("gamma", v) for v in BAD_NONNEG]
    + [("kT", v) for v in BAD_NONNEG]
    + [("eps", v) for v in BAD_NONNEG]
    + [("sigma_A", v) for v in [NAN, INF, -1.0, "1", True, 1j]]
    + [("mass", v) for v in BAD_ARRAY_1D + [0.0, -1.0, [0.0]]]
    + [("q0", v) for v in BAD_ARRAY_1D]
    + [("p0", v) for v in BAD_ARRAY_1D]
    + [("xi0", v) for v in [NAN, INF, "abc", 1j, [], [1.0, 2.0], None, Obj()]]
    + [("seed", v) for v in [-1, 1.5, "0", True, NAN, Obj(), [1, 2]]]
    + [("record_every", v) for v in BAD_COUNT if v is not None]
    + [("backend", v) for v in ["gpu", "", 0, 1, "NUMPY"]]
    + [("dtype", v) for v in ["float16", "complex128", np.complex128, "int64", 64, None, ""]]
    + [("max_abs", v) for v in [0.0, -1.0, NAN, INF, "1", True]]
    + [("observables", v) for v in [{"q": lambda q, p: q}, {"f": 3}, {"p2": lambda q, p: q}]]
    + [("resume", v) for v in ["state.npz", 3, Obj(), {"q": [0.0]}]]
    + [("drift_change", v) for v in [Obj(), "Harmonic", 1.0, systems.Harmonic(1.0, dim=2), H1.grad]]   # issue 20
    + [("shadow_work", v) for v in ["yes", 1, 0, None, NAN, Obj(), [True]]]   # issue 20
)


@pytest.mark.parametrize("name,value", SIM_CASES, ids=[f"{n}={ids(v)[:25]}" for n, v in SIM_CASES])
@pytest.mark.parametrize("driver", ["simulate", "ensemble"])
def test_driver_bad_argument(driver, name, value):
    kwargs = dict(SIM if driver == "simulate" else ENS)
    kwargs[name] = value
    fn = sdekit.simulate if driver == "simulate" else sdekit.ensemble
    raises_named(name, fn, **kwargs)


def _gradient(q, out):
    out[0] = q[0]


NEW_LETTER_CASES = [   # issue 15: what the new letters ask of the system and of sdekit.linear
    ("potential", lambda: sdekit.ensemble("O{BAB}O", systems.custom(_gradient, 1), h=0.1, n_steps=2, n_paths=2)),
    ("potential", lambda: systems.custom(_gradient, 1, potential=3)),
    ("system", lambda: sdekit.ensemble("B1 (B0 A B0)^2 B1", H1, h=0.1, n_steps=2, n_paths=2)),
    ("parts", lambda: systems.split(H1)),
    ("parts", lambda: systems.split(H1, systems.DoubleWell(2))),
    ("parts", lambda: systems.split(H1, Obj())),
    ("hessian", lambda: linear.stationary_covariance("B1 (B0 A O A B0)^2 B1", 1.0, 0.1)),
    ("hessian[1]", lambda: linear.stationary_covariance("B1 (B0 A O A B0)^2 B1", [1.0, -1.0], 0.1)),
    ("scheme", lambda: linear.stationary_covariance("O{BAB}O", 1.0, 0.1)),
    ("kT", lambda: sdekit.ensemble("MALA", H1, h=0.1, n_steps=2, n_paths=2, kT=lambda t: 1.0)),
    ("sigma_A", lambda: sdekit.ensemble("O{BAB}O", H1, h=0.1, n_steps=2, n_paths=2, sigma_A=1.0)),
    ("max_mb", lambda: kernels.prune_cache(max_mb=-1.0)),
]

_SW = dict(h=0.1, n_steps=2, n_paths=2, backend="numpy", shadow_work=True)
SHADOW_CASES = [   # issue 20: what shadow work and the KL estimate refuse, naming the argument
    ("shadow_work", lambda: sdekit.ensemble("BADODAB", H1, **_SW)),
    ("shadow_work", lambda: sdekit.ensemble("EM", H1, **_SW)),
    ("shadow_work", lambda: sdekit.ensemble("BAOAB", H1, gamma=lambda t: 1.0, **_SW)),
    ("shadow_work", lambda: sdekit.ensemble("BAOAB", H1, sigma_A=1.0, **_SW)),
    ("shadow_work", lambda: sdekit.ensemble("BAOAB", systems.custom(_gradient, 1), **_SW)),
    ("shadow_work", lambda: sdekit.ensemble("BAOAB", systems.Harmonic(1.0, dim=3), q0=[1.0, 0.0, 0.0],
                                            constraint=constraints.Sphere(1.0), **_SW)),
    ("scheme", lambda: kl.kl_estimate("ABO", H1, 0.1, n_paths=4)),
    ("scheme", lambda: kl.kl_estimate("BAB", H1, 0.1, n_paths=4)),
    ("marginals", lambda: kl.kl_estimate("BAOAB", H1, 0.1, n_paths=4, marginals="configurational")),
    ("marginals", lambda: kl.kl_estimate("BAOAB", H1, 0.1, n_paths=4, marginals=[])),
    ("protocol_steps", lambda: kl.kl_estimate("BAOAB", H1, 0.1, n_paths=4, protocol_steps=0)),
    ("n_paths", lambda: kl.kl_estimate("BAOAB", H1, 0.1, n_paths=1)),
    ("n_paths", lambda: kl.kl_estimate("BAOAB", H1, 0.1, q_eq=np.zeros((4, 1)), n_paths=5)),
    ("kT", lambda: kl.kl_estimate("BAOAB", H1, 0.1, n_paths=4, kT=0.0)),
    ("kT", lambda: kl.kl_estimate("BAOAB", H1, 0.1, n_paths=4, kT=lambda t: 1.0)),
    ("q_eq", lambda: kl.kl_estimate("BAOAB", H1, 0.1, q_eq=np.zeros((4, 2)))),
    ("q_eq", lambda: kl.kl_estimate("BAOAB", H1, 0.1, q_eq=[[NAN], [0.0]])),
    ("q_eq", lambda: kl.kl_estimate("BAOAB", systems.DoubleWell(2), 0.1, n_paths=4)),
    ("seed", lambda: kl.kl_estimate("BAOAB", H1, 0.1, n_paths=4, seed=-1)),
    ("marginal", lambda: kl.gaussian_kl("BAOAB", 1.0, 0.1, marginal="both")),
    ("w_reverse", lambda: kl.near_equilibrium_kl([0.0, 1.0], [0.0])),
    ("w_forward", lambda: kl.near_equilibrium_kl([NAN, 1.0], [0.0, 1.0])),
    ("letter", lambda: sdekit.letters.register(type("Bad", (sdekit.letters.Letter,), dict(
        name="J", title="bad", shadow="energy"))())),
]


@pytest.mark.parametrize("name,call", SHADOW_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SHADOW_CASES)])
def test_shadow_bad_input(name, call):
    raises_named(name, call)


@pytest.mark.parametrize("name,call", NEW_LETTER_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NEW_LETTER_CASES)])
def test_new_letters_bad_input(name, call):
    raises_named(name, call)


def _weighted(scheme="BAOAB", **kw):
    from sdekit import girsanov
    args = dict(h=0.1, n_steps=2, n_paths=2, drift_change=girsanov.difference(systems.Harmonic(1.5), H1))
    return lambda: sdekit.ensemble(scheme, H1, **{**args, **kw})


def _law(**kw):
    from sdekit import girsanov
    return lambda: girsanov.log_weight_law(**{**dict(scheme="BAOAB", hessian=1.0, drift_hessian=0.5, h=0.1,
                                                    n_steps=2), **kw})


GIRSANOV_CASES = [   # issue 20: path weights for a change of drift (sdekit.girsanov)
    ("scheme", _weighted("BADODAB")), ("scheme", _weighted("BAB")), ("scheme", _weighted("LM")),
    ("gamma", _weighted(gamma=0.0)), ("drift_change", _weighted(kT=lambda t: 1.0)),
    ("kT", _weighted("EM", kT=0.0)), ("gamma", _weighted(gamma=INF)), ("sigma_A", _weighted(sigma_A=0.0)),
    ("constraint", lambda: sdekit.ensemble("BAOAB", systems.Harmonic(1.0, dim=3), h=0.1, n_steps=2, n_paths=2,
                                           q0=[0.0, 0.0, 1.0], constraint=constraints.Sphere(1.0),
                                           drift_change=systems.Harmonic(1.0, dim=3))),
    ("log_weight", lambda: sdekit.girsanov.reweight([1.0, 2.0], [0.0, NAN])),
    ("log_weight", lambda: sdekit.girsanov.effective_sample_size([])),
    ("log_weight", lambda: sdekit.girsanov.effective_sample_size("x")),
    ("values", lambda: sdekit.girsanov.reweight([1.0, 2.0, 3.0], [0.0, 0.0])),
    ("values", lambda: sdekit.girsanov.reweight(1.0, [0.0])),
    ("drift_hessian", _law(drift_hessian=np.zeros((2, 2)))), ("drift_hessian", _law(drift_hessian=NAN)),
    ("x0", _law(x0=[1.0])), ("n_steps", _law(n_steps=-1)), ("scheme", _law(scheme="LM")),
    ("hessian", _law(hessian=-1.0)),
    ("target", lambda: sdekit.girsanov.difference(Obj(), H1)),
    ("target", lambda: sdekit.girsanov.difference(systems.Harmonic(1.0, dim=2), H1)),
]


@pytest.mark.parametrize("name,call", GIRSANOV_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(GIRSANOV_CASES)])
def test_girsanov_bad_input(name, call):
    raises_named(name, call)


@pytest.mark.parametrize("value", [0, -1, 1.5, 2.0, "4", None, True, NAN, Obj(), 10 ** 12], ids=ids)
def test_ensemble_bad_n_paths(value):
    raises_named("n_paths", sdekit.ensemble, **dict(ENS, n_paths=value))


NUMPY_VALUES = [("h", np.float64(-0.3), "-0.3"), ("h", np.array(-0.3), "-0.3"), ("n_steps", np.int64(-1), "-1"),
                ("mass", np.array(-1.0), "-1.0"), ("gamma", np.float32(-0.5), "-0.5"),
                ("record_every", np.int32(0), "0"), ("xi0", np.array(NAN), "nan")]


@pytest.mark.parametrize("name,value,shown", NUMPY_VALUES, ids=[f"{n}={v!r}" for n, v, _ in NUMPY_VALUES])
@pytest.mark.parametrize("driver", ["simulate", "ensemble"])
def test_messages_show_numpy_values_as_plain_numbers(driver, name, value, shown):
    """Issue 16: numpy 2 reprs (np.float64(0.3), array(-1.)) in messages are shown as plain numbers."""
    fn = sdekit.simulate if driver == "simulate" else sdekit.ensemble
    msg = raises_named(name, fn, **dict(SIM if driver == "simulate" else ENS, **{name: value}))
    assert msg.endswith(f"got {shown}") and "np." not in msg and "array(" not in msg, msg


@pytest.mark.parametrize("value", ["ignore", "", None, "RAISE", 1, True], ids=ids)
def test_ensemble_bad_on_divergence(value):
    raises_named("on_divergence", sdekit.ensemble, **dict(ENS, on_divergence=value))


@pytest.mark.parametrize("q0", [np.zeros((3, 1)), np.zeros((4, 2)), np.zeros((4,)), [[NAN]] * 4,
                                np.array([[1 + 1j]] * 4)], ids=["3 paths", "2 dof", "(4,)", "nan rows", "complex"])
def test_ensemble_bad_q0_shape(q0):
    raises_named("q0", sdekit.ensemble, **dict(ENS, q0=q0))


@pytest.mark.parametrize("value", [[NAN] * 4, [1.0] * 3, np.zeros((4, 1)), "x"], ids=ids)
def test_ensemble_bad_xi0(value):
    raises_named("xi0", sdekit.ensemble, **dict(ENS, xi0=value))


def test_overdamped_refuses_p0_and_mass():
    raises_named("p0", sdekit.simulate, **dict(SIM, scheme="EM", p0=[1.0]))
    raises_named("mass", sdekit.simulate, **dict(SIM, scheme="LM", mass=2.0))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_compiled_backend_checks_too(backend):
    # the checks sit before the backend: the compiled backend refuses the same things
    for name, value in [("h", NAN), ("q0", [INF]), ("n_steps", -1), ("dtype", "float16"), ("mass", 0.0)]:
        raises_named(name, sdekit.ensemble, **dict(ENS, backend=backend, **{name: value}))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("driver", ["simulate", "ensemble"])
def test_unstable_step_is_a_divergence_naming_the_step(driver, backend):
    # BAOAB on the double well at h = 2 from q = 3: blows up within a few steps
    kwargs = dict(SIM, system=DW, h=2.0, n_steps=200, q0=[3.0], backend=backend)
    if driver == "ensemble":
        kwargs["n_paths"] = 3
    with pytest.raises(sdekit.DivergenceError) as info:
        getattr(sdekit, driver)(**kwargs)
    err = info.value
    assert isinstance(err.step, int) and 1 <= err.step <= 200
    assert str(err.step) in str(err)
    if driver == "ensemble":
        assert err.path is not None and str(err.path) in str(err)


def test_max_abs_is_a_divergence():
    with pytest.raises(sdekit.DivergenceError) as info:
        sdekit.simulate(**dict(SIM, q0=[1.0], max_abs=0.5, n_steps=50))
    assert info.value.step >= 1


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_mask_reports_diverged_paths_not_nan(backend):
    q0 = np.array([[0.5], [3.0], [0.5]])
    e = sdekit.ensemble(**dict(ENS, system=DW, h=0.3, n_paths=3, q0=q0, n_steps=50,
                               on_divergence="mask", backend=backend))
    assert 1 in e.diverged.tolist() and e.n_alive[-1] == 2
    for k, v in e.mean.items():
        assert np.all(np.isfinite(v[1:] if k in ("p_O", "p2_O") else v)), k  # p_O undefined before step 1


# ----------------------------------------------------------------------------- checkpoints / resume

def test_checkpoint_arguments(tmp_path):
    raises_named("checkpoint", sdekit.simulate, **SIM, checkpoint=3)
    raises_named("checkpoint", sdekit.simulate, **SIM, checkpoint=Obj())
    raises_named("checkpoint_every", sdekit.simulate, **SIM, checkpoint_every=2)
    raises_named("checkpoint", sdekit.simulate, **SIM, checkpoint=tmp_path / "no" / "such" / "c.npz")
    raises_named("checkpoint", sdekit.simulate, **SIM, checkpoint=tmp_path)
    state = sdekit.simulate(**SIM).state
    raises_named(str(tmp_path / "no" / "c.npz"), sdekit.save, tmp_path / "no" / "c.npz", state)
    raises_named(str(tmp_path), sdekit.save, tmp_path, state)
    for bad in [0, -1, 1.5, True, "2"]:
        raises_named("checkpoint_every", sdekit.simulate, **SIM, checkpoint=tmp_path / "c.npz", checkpoint_every=bad)
    raises_named("checkpoint_every", sdekit.simulate, **dict(SIM, record_every=2),
                 checkpoint=tmp_path / "c.npz", checkpoint_every=3)
    for bad in [-1, 1.5, None, "3"]:
        raises_named("n_steps", sdekit.simulate, **dict(SIM, n_steps=bad), checkpoint=tmp_path / "c.npz")


@pytest.mark.parametrize("change", [dict(h=0.2), dict(gamma=2.0), dict(kT=0.5), dict(scheme="ABOBA"),
                                   dict(system=systems.Harmonic(2.0)), dict(mass=2.0), dict(dtype="float32"),
                                   dict(backend="cpu"), dict(eps=0.5), dict(max_abs=10.0)],
                         ids=lambda d: next(iter(d)))
def test_resume_with_other_settings_is_refused_and_checkpoint_kept(tmp_path, change):
    path = tmp_path / "run.npz"
    sdekit.ensemble(**ENS, checkpoint=path)
    before = path.read_bytes()
    state = sdekit.load(path)
    raises_named("resume", sdekit.ensemble, **dict(ENS, **change), resume=state)
    raises_named("resume", sdekit.ensemble, **dict(ENS, **change), resume=state, checkpoint=path)
    assert path.read_bytes() == before  # the refused resume did not touch the checkpoint
    e = sdekit.ensemble(**ENS, resume=sdekit.load(path))  # still good
    assert np.all(np.isfinite(e.q))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_divergence_keeps_the_last_good_checkpoint(tmp_path, backend):
    path = tmp_path / "run.npz"
    kwargs = dict(ENS, system=DW, h=2.0, n_steps=40, n_paths=2, q0=[3.0], backend=backend)
    with pytest.raises(sdekit.DivergenceError) as info:
        sdekit.ensemble(**kwargs, checkpoint=path, checkpoint_every=1)
    state = sdekit.load(path)  # still there, readable, and finite: the last completed chunk
    assert state.step < info.value.step
    assert np.all(np.isfinite(state.q)) and np.all(np.isfinite(state.p))


def test_resume_other_path_count_refused(tmp_path):
    state = sdekit.ensemble(**ENS).state
    raises_named("resume", sdekit.ensemble, **dict(ENS, n_paths=5), resume=state)
    raises_named("resume", sdekit.simulate, **SIM, resume=state)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("name,value", [("q", np.zeros((4, 2))), ("q", np.zeros(4)), ("p", np.zeros((3, 1))),
                                        ("p", None), ("xi", np.zeros(2)), ("force", np.zeros((4, 1), dtype=np.int64)),
                                        ("force", np.zeros((4, 1), dtype=complex)), ("step", -3), ("step", 1.5),
                                        ("q", [[0.0]] * 4)], ids=lambda x: ids(x)[:20])
def test_resume_with_damaged_state_arrays(backend, name, value):
    # the compiled kernels index the state without bounds checks: a wrong shape must be
    # refused up front (it once corrupted the heap), never run
    import dataclasses

    state = sdekit.ensemble(**dict(ENS, backend=backend)).state
    bad = dataclasses.replace(state, **{name: value})
    raises_named("resume", sdekit.ensemble, **dict(ENS, backend=backend), resume=bad)


def test_save_load_bad_arguments(tmp_path):
    raises_named("state", sdekit.save, tmp_path / "x.npz", "not a state")
    raises_named("state", sdekit.save, tmp_path / "x.npz", None)
    missing = str(tmp_path / "missing.npz")
    raises_named(missing, sdekit.load, missing)
    folder = str(tmp_path)
    raises_named(folder, sdekit.load, folder)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    raises_named(str(text), sdekit.load, str(text))
    pick = tmp_path / "pickle.npz"
    np.savez(pick, __meta__=np.array([Obj()], dtype=object))
    raises_named(str(pick), sdekit.load, str(pick))
    for bad in [3, None, Obj()]:
        raises_named("path", sdekit.save, bad, sdekit.simulate(**SIM).state)
        raises_named("path", sdekit.load, bad)


# ----------------------------------------------------------------------------- Scheme and systems

@pytest.mark.parametrize("definition", ["BAXAB", "", "  ", "B A O A B X", 7, None, 1.5, b"BAOAB",
                                        [], [("B", 0.5), ("A", 1.0)], [("A", 0.0), ("A", 1.0)],
                                        [("A", INF)], [("A", "half")], [("A",)], [("a", 1.0)],
                                        [("A", 1j)], {"steps": [["A", 1.0]], "other": 1}, {}, Obj()],
                         ids=ids)
def test_scheme_bad_definition(definition):
    raises_named("scheme", sdekit.Scheme, definition)


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True, NAN, Obj()], ids=ids)
def test_scheme_bad_geodesic_steps(value):
    raises_named("geodesic_steps", sdekit.Scheme, "BAOAB", geodesic_steps=value)


def test_scheme_geodesic_steps_without_A():
    raises_named("geodesic_steps", sdekit.Scheme, "EM", geodesic_steps=2)


@pytest.mark.parametrize("omega", [0.0, -1.0, NAN, INF, "1", 1j, [], [[1.0]], Obj(), [1.0, -1.0]], ids=ids)
def test_harmonic_bad_omega(omega):
    raises_named("omega", systems.Harmonic, omega)


@pytest.mark.parametrize("dim", [0, -1, 1.5, "2", True, NAN, Obj()], ids=ids)
def test_systems_bad_dim(dim):
    raises_named("dim", systems.DoubleWell, dim)
    raises_named("dim", systems.custom, lambda q, out: None, dim)
    raises_named("dim", systems.Harmonic, 1.0, dim)


@pytest.mark.parametrize("K", [[[1.0, 2.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]], [[NAN]], [1.0, 2.0],
                               [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "K", [[1j]], [], np.zeros((2, 2, 2)),
                               [[0.0]]], ids=ids)
def test_gaussian_bad_precision(K):
    raises_named("precision", systems.Gaussian, K)


def test_custom_bad_gradient():
    raises_named("gradient", systems.custom, "grad", 1)
    raises_named("gradient", systems.custom, None, 1)


# ----------------------------------------------------------------------------- linear

LIN = dict(scheme="BAOAB", hessian=1.0, h=0.5, gamma=1.0, kT=1.0)
LIN_CASES = (
    [("scheme", v) for v in ["BAXAB", "BADODAB", 3, None]]
    + [("hessian", v) for v in [NAN, INF, -1.0, 0.0, "K", 1j, [], [[1.0, 2.0], [0.0, 1.0]],
                                [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.zeros((2, 2, 2)), None, Obj()]]
    + [("h", v) for v in BAD_POSITIVE]
    + [("gamma", v) for v in [NAN, INF, -1.0, "1", 1j, [1.0, 1.0], [], Obj(), None]]
    + [("kT", v) for v in [NAN, INF, -1.0, "1", 1j, [1.0, 1.0], [], Obj(), None]]
    + [("mass", v) for v in [0.0, -1.0, NAN, "1", 1j, [1.0, 1.0], [], Obj()]]
)


@pytest.mark.parametrize("name,value", LIN_CASES, ids=[f"{n}={ids(v)[:25]}" for n, v in LIN_CASES])
@pytest.mark.parametrize("fn", ["one_step", "stationary_covariance", "stability_limit", "transient_moments"])
def test_linear_bad_argument(fn, name, value):
    kwargs = dict(LIN, **{name: value})
    if fn == "transient_moments":
        kwargs["n_steps"] = 3
    raises_named(name, getattr(linear, fn), **kwargs)


@pytest.mark.parametrize("value", [-1, 1.5, "3", True, NAN, None], ids=ids)
def test_transient_moments_bad_n_steps(value):
    raises_named("n_steps", linear.transient_moments, **LIN, n_steps=value)


@pytest.mark.parametrize("name,value", [("mean0", [NAN, 0.0]), ("mean0", [0.0]), ("mean0", "x"),
                                        ("cov0", -1.0), ("cov0", [[1.0, 2.0], [0.0, 1.0]]), ("cov0", np.eye(3)),
                                        ("cov0", NAN), ("cov0", "c")], ids=str)
def test_transient_moments_bad_initial_law(name, value):
    raises_named(name, linear.transient_moments, **LIN, n_steps=2, **{name: value})


@pytest.mark.parametrize("name,value", [("hessian", -1.0), ("t", -1.0), ("t", NAN), ("t", "1"), ("gamma", -1.0),
                                        ("kT", NAN), ("mass", 0.0), ("mean0", [1.0]), ("cov0", -1.0),
                                        ("overdamped", "yes")], ids=str)
def test_exact_moments_bad_argument(name, value):
    kwargs = dict(hessian=1.0, t=1.0, gamma=1.0, kT=1.0)
    kwargs[name] = value
    raises_named(name, linear.exact_moments, **kwargs)


@pytest.mark.parametrize("scheme,h", [("BAOAB", 2.5), ("OBABO", 2.5), ("EM", 2.5), ("ABOBA", 3.0)])
def test_stationary_covariance_unstable_says_the_limit(scheme, h):
    msg = raises_named("h", linear.stationary_covariance, scheme, 1.0, h)
    assert "unstable" in msg and "stable for h <" in msg
    limit = float(msg.split("stable for h < ")[1].split()[0])
    assert 0 < limit < h
    # and just below the limit the covariance is finite
    cov = linear.stationary_covariance(scheme, 1.0, 0.99 * limit)
    assert np.all(np.isfinite(cov))


def test_stationary_covariance_zero_friction():
    raises_named("gamma", linear.stationary_covariance, "BAOAB", 1.0, 0.5, gamma=0.0)


# ----------------------------------------------------------------------------- analysis

SB = dict(scheme="BAOAB", system=H1, observable="q2", hs=[0.2, 0.4], n_paths=4, n_steps=40, burn_in=4,
          n_batches=4, n_records=8, backend="numpy")
SB_CASES = (
    [("scheme", v) for v in ["BAXAB", 3]]
    + [("system", v) for v in [None, "harmonic"]]
    + [("observable", v) for v in ["q3", "", [], ["q2", "xx"], 3, None]]
    + [("hs", v) for v in [[], [0.0], [-0.1], [NAN], "0.1", [[0.1, 0.2]], None, [1j]]]
    + [("n_paths", v) for v in [1, 0, 1.5, "4", True]]
    + [("n_steps", v) for v in [-1, 1.5, "40", [40], True]]
    + [("burn_in", v) for v in [-1, 1.5, [1, 2, 3]]]
    + [("n_records", v) for v in [0, 1, 1.5, True]]
    + [("n_batches", v) for v in [0, 1, 1.5, True, "4"]]
    + [("gamma", v) for v in [NAN, -1.0, "1"]]
    + [("kT", v) for v in [NAN, -1.0, "1"]]
    + [("coordinate", v) for v in [1, -1, 1.5, True, "0"]]
    + [("seed", v) for v in [-1, 1.5, "0"]]
    + [("min_significance", v) for v in [NAN, -1.0, "2"]]
)


@pytest.mark.parametrize("name,value", SB_CASES, ids=[f"{n}={ids(v)[:25]}" for n, v in SB_CASES])
def test_stationary_bias_bad_argument(name, value):
    raises_named(name, analysis.stationary_bias, **dict(SB, **{name: value}))


WE = dict(scheme="BAOAB", system=H1, observable="q2", T=0.8, hs=[0.2, 0.4], n_paths=4, backend="numpy")
WE_CASES = (
    [("scheme", v) for v in ["BAXAB", 3]]
    + [("system", v) for v in [None, "harmonic"]]
    + [("observable", v) for v in ["q3", "", ["q2", "p2"], 3, None]]
    + [("T", v) for v in [0.0, -1.0, NAN, INF, "1", True, 0.75]]
    + [("hs", v) for v in [[], [0.0], [-0.1], [NAN], "0.1", None, [0.3]]]
    + [("n_paths", v) for v in [1, 0, 1.5, "4", True]]
    + [("q0", v) for v in [NAN, "x", [1.0, 2.0], 1j, Obj()]]
    + [("p0", v) for v in [NAN, "x", [1.0, 2.0], 1j]]
    + [("gamma", v) for v in [NAN, -1.0]]
    + [("kT", v) for v in [NAN, -1.0]]
    + [("reference", v) for v in ["best", None, 3]]
    + [("h_ref", v) for v in [0.0, -1.0, NAN, "0.1"]]
    + [("ref_paths", v) for v in [0, 1, 1.5, True]]
    + [("coordinate", v) for v in [1, -1, 1.5]]
)


@pytest.mark.parametrize("name,value", WE_CASES, ids=[f"{n}={ids(v)[:25]}" for n, v in WE_CASES])
def test_weak_error_bad_argument(name, value):
    kwargs = dict(WE, **{name: value})
    if name in ("h_ref", "ref_paths"):
        kwargs.update(system=DW, reference="fine")
    msg = raises_named("hs" if (name, value) == ("T", 0.75) else name, analysis.weak_error, **kwargs)
    if name == "T":
        assert "T=" in msg or "T:" in msg


FIT_CASES = [("hs", dict(hs=[0.1, -0.2, 0.4])), ("hs", dict(hs=[NAN, 0.2, 0.4])), ("hs", dict(hs=[])),
             ("hs", dict(hs="abc")), ("errors", dict(errors=[1e-2, 4e-2])), ("errors", dict(errors=[NAN, 1.0, 2.0])),
             ("stderr", dict(stderr=[0.0, 1e-4, 1e-4])), ("stderr", dict(stderr=[INF, 1e-4, 1e-4])),
             ("level", dict(level=1.5)), ("level", dict(level=NAN)), ("min_significance", dict(min_significance=-1.0)),
             ("min_significance", dict(min_significance="2"))]


@pytest.mark.parametrize("name,change", FIT_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FIT_CASES)])
def test_fit_order_bad_argument(name, change):
    kwargs = dict(hs=[0.1, 0.2, 0.4], errors=[1e-2, 4e-2, 1.6e-1], stderr=[1e-4, 1e-4, 1e-4])
    kwargs.update(change)
    raises_named(name, analysis.fit_order, **kwargs)


@pytest.mark.parametrize("series,n,name", [([1.0] * 10, 1, "n_batches"), ([1.0] * 10, 20, "n_batches"),
                                            ([1.0] * 10, 2.5, "n_batches"), ([NAN] * 10, 2, "series"),
                                            ("abc", 2, "series"), ([], 2, "series")], ids=str)
def test_batch_means_bad_argument(series, n, name):
    raises_named(name, analysis.batch_means, series, n)


# ----------------------------------------------------------------------------- constraints

@pytest.mark.parametrize("name,make", [
    ("radius", lambda: constraints.Sphere(0.0)), ("radius", lambda: constraints.Sphere(-1.0)),
    ("radius", lambda: constraints.Sphere(NAN)), ("radius", lambda: constraints.Sphere("1")),
    ("radius", lambda: constraints.Sphere(True)), ("dim", lambda: constraints.Sphere(1.0, dim=1)),
    ("dim", lambda: constraints.Sphere(1.0, dim=2.5)),
    ("radius", lambda: constraints.Circle(0.0)), ("radius", lambda: constraints.Circle(INF)),
    ("n", lambda: constraints.Stiefel(0, 1)), ("p", lambda: constraints.Stiefel(2, 3)),
    ("n", lambda: constraints.Stiefel(2.0, 1)), ("p", lambda: constraints.Stiefel(2, True)),
    ("tol", lambda: constraints.Stiefel(2, 1, tol=0.0)), ("max_iter", lambda: constraints.Stiefel(2, 1, max_iter=0)),
    ("g", lambda: constraints.Constraint("g", lambda q, out: None, 1)),
    ("jacobian", lambda: constraints.Constraint(lambda q, out: None, None, 1)),
    ("m", lambda: constraints.Constraint(lambda q, out: None, lambda q, out: None, 0)),
    ("m", lambda: constraints.Constraint(lambda q, out: None, lambda q, out: None, 3, dim=3)),
    ("scale", lambda: constraints.Constraint(lambda q, out: None, lambda q, out: None, 1, scale=NAN)),
], ids=lambda x: x if isinstance(x, str) else "")
def test_constraint_constructors(name, make):
    raises_named(name, make)


def test_constrained_run_bad_inputs():
    s3 = systems.Harmonic(1.0, dim=3)
    on = np.array([0.0, 0.0, 1.0])
    base = dict(scheme="BAOAB", system=s3, h=0.1, n_steps=2, seed=0, q0=on)
    raises_named("constraint", sdekit.simulate, **base, constraint="sphere")
    if kernels.cuda_available():  # cuda runs Sphere and Circle only
        raises_named("constraint", sdekit.simulate, **base, constraint=constraints.Stiefel(3, 1), backend="cuda")
    else:
        raises_named("backend", sdekit.simulate, **base, constraint=constraints.Sphere(1.0), backend="cuda")
    raises_named("constraint", sdekit.simulate, **base, constraint=constraints.Sphere(1.0), dtype="float32")
    raises_named("constraint", sdekit.simulate, **base, constraint=constraints.Stiefel(2, 2))
    raises_named("q0", sdekit.simulate, **dict(base, q0=[0.0, 0.0, 2.0]), constraint=constraints.Sphere(1.0))
    raises_named("constraint", sdekit.simulate, **dict(base, scheme="EM", q0=on), constraint=constraints.Sphere(1.0))
    s = constraints.Sphere(1.0)
    raises_named("q", s.residual, "abc")
    raises_named("q", s.project, [NAN, 0.0, 1.0])
    raises_named("delta", s.drift, on, np.zeros(3), 0.0)
    raises_named("p", s.rattle, on, np.zeros(4))


# ----------------------------------------------------------------------------- sweep

SW = dict(grid={"h": [0.1], "scheme": ["BAOAB"]}, system=H1, n_steps=2, n_paths=3, scheduler="serial")


@pytest.mark.parametrize("name,change", [
    ("grid", dict(grid={})), ("grid", dict(grid=[("h", [0.1])])), ("grid", dict(grid={"h": []})),
    ("grid", dict(grid={"h": "0.1", "scheme": ["BAOAB"]})), ("grid", dict(grid={"h": [0.1]})),
    ("grid", dict(grid={"scheme": ["BAOAB"]})),
    ("system", dict(system="harmonic")), ("n_steps", dict(n_steps=-1)), ("n_steps", dict(n_steps=1.5)),
    ("n_paths", dict(n_paths=1)), ("n_paths", dict(n_paths=True)), ("observables", dict(observables=("q3",))),
    ("h", dict(grid={"h": [NAN], "scheme": ["BAOAB"]})), ("scheme", dict(grid={"h": [0.1], "scheme": ["BXB"]})),
    ("scheduler", dict(scheduler=3)), ("backend", dict(backend="gpu")), ("n_workers", dict(scheduler=None, n_workers=0)),
    ("omega", dict(system=systems.Harmonic, grid={"h": [0.1], "scheme": ["BAOAB"], "omega": [-1.0]})),
], ids=lambda x: x if isinstance(x, str) else "")
def test_sweep_bad_argument(name, change):
    raises_named(name, sdekit.sweep, **dict(SW, **change))


# ----------------------------------------------------------------------------- datasets

@pytest.mark.parametrize("fn,name,value", [
    (f, "n", v) for f in ("spirals", "trig") for v in [0, 1, 2.5, "10", True, None, NAN]
] + [("spirals", n, v) for n in ("turns", "a", "p") for v in [0.0, -1.0, NAN, INF, "1", True, None]]
  + [("trig", n, v) for n in ("a", "b") for v in [0.0, -1.0, NAN, INF, "1", True, None]]
  + [(f, "c", v) for f in ("spirals", "trig") for v in [-1.0, NAN, INF, "0.1", True]]
  + [(f, "seed", v) for f in ("spirals", "trig") for v in [-1, 1.5, "0", True]],
    ids=lambda x: ids(x)[:20])
def test_datasets_bad_argument(fn, name, value):
    kwargs = {"n": 20, name: value}
    raises_named(name, getattr(datasets, fn), **kwargs)


def test_as_tensors_bad_shapes():
    pytest.importorskip("torch")
    raises_named("X", datasets.as_tensors, np.zeros(5), np.zeros(5))
    raises_named("X", datasets.as_tensors, np.zeros((5, 2)), np.zeros(4))


# ----------------------------------------------------------------------------- torch

torch = pytest.importorskip("torch")
from sdekit import torch as st_torch  # noqa: E402


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))


OPT_CASES = (
    [("lr", v) for v in [0.0, -0.1, NAN, INF, "0.1", True, None, 1j, torch.tensor([0.1, 0.2])]]
    + [("gamma", v) for v in [-1.0, NAN, -INF, "1", True, None]]
    + [("kT", v) for v in [-1.0, NAN, INF, "0", True, None]]
    + [("eps", v) for v in [-1.0, NAN, "0.1", True]]
    + [("sigma_A", v) for v in [-1.0, NAN, INF, "1"]]
    + [("xi0", v) for v in [NAN, INF, "0", True]]
    + [("scheme", v) for v in ["BAXAB", "", "AO", 3, None, [("B", 0.5)], "ABO X"]]
    + [("seed", v) for v in [-1, 1.5, "0", True, 2**64]]
    + [("generator", v) for v in ["g", 3, np.random.default_rng(0)]]
    + [("noise", v) for v in ["numpy", "Philox", 3, True]]
)


@pytest.mark.parametrize("name,value", OPT_CASES, ids=[f"{n}={ids(v)[:25]}" for n, v in OPT_CASES])
def test_sdeoptimizer_bad_argument(name, value):
    raises_named(name, st_torch.SDEOptimizer, _net().parameters(), **{name: value})


def test_sdeoptimizer_bad_noise_combinations():
    """noise='philox' takes a seed, not a torch.Generator, and has no prefetch."""
    raises_named("generator", st_torch.SDEOptimizer, _net().parameters(), noise="philox",
                 generator=torch.Generator().manual_seed(0))
    raises_named("prefetch_noise", st_torch.SDEOptimizer, _net().parameters(), noise="philox", prefetch_noise=True)
    raises_named("prefetch_noise", st_torch.AdLaLa, _net(), noise="torch", prefetch_noise="yes")


def test_sdeoptimizer_bad_params():
    raises_named("params", st_torch.SDEOptimizer, [torch.zeros(3, dtype=torch.int64)])
    raises_named("params", st_torch.SDEOptimizer, [[1.0, 2.0]])
    raises_named("params", st_torch.SDEOptimizer, [{"params": []}])
    raises_named("params", st_torch.SDEOptimizer, [torch.zeros(2), torch.zeros(2, dtype=torch.float64)])
    raises_named("params", st_torch.SDEOptimizer, [3])


@pytest.mark.parametrize("words", [("BAOAB", "ABOBA"), ("BAOAB", "BAOABAB"), ("BAOAB", "EM"),
                                   ("BAOAB", [("B", 0.5), ("A", 1.0), ("O", 1.0), ("B", 0.5), ("A", 0.0)])],
                         ids=str)
def test_mismatched_partitioned_groups(words):
    net = _net()
    groups = [{"params": net[0].parameters(), "scheme": words[0]},
              {"params": net[2].parameters(), "scheme": words[1]}]
    raises_named("scheme", st_torch.SDEOptimizer, groups)
    opt = st_torch.SDEOptimizer([{"params": net[0].parameters(), "scheme": words[0]}])
    raises_named("scheme", opt.add_param_group, {"params": net[2].parameters(), "scheme": words[1]})


def test_torch_presets_bad_arguments():
    net = _net()
    raises_named("model_or_groups", st_torch.AdLaLa, 3)
    raises_named("model_or_groups", st_torch.AdLaLa, [list(net.parameters())])
    raises_named("model_or_groups", st_torch.LOL, torch.nn.ReLU())
    raises_named("model_or_groups", st_torch.MultiLayerLangevin, [])
    for name, kw in [("tau1", dict(tau1=-1.0)), ("kT", dict(tau1=NAN)), ("lr", dict(lr=0.0)),
                     ("sigma_A", dict(sigma_A=-1.0)), ("gamma", dict(gamma=NAN)), ("eps", dict(eps=-1.0)),
                     ("xi0", dict(xi0=INF)), ("tau2", dict(tau2="x"))]:
        with pytest.raises(ValueError) as info:
            st_torch.AdLaLa(_net(), **kw)
        assert str(info.value).split(":")[0] in (name, "kT", "tau1", "tau2"), str(info.value)
    raises_named("gamma", st_torch.MultiLayerLangevin, _net(), gamma=[1.0])
    raises_named("kT", st_torch.MultiLayerLangevin, _net(), kT=[1.0, -1.0])
    raises_named("sigma", st_torch.SGLD, _net().parameters(), kT=1.0, sigma=1.0)
    raises_named("sigma", st_torch.SGLD, _net().parameters(), sigma=-1.0)
    raises_named("lr", st_torch.sgd_equivalent, 0.0, 0.5)
    raises_named("momentum", st_torch.sgd_equivalent, 0.1, 1.0)
    raises_named("momentum", st_torch.sgd_equivalent, 0.1, NAN)


def test_torch_step_nonfinite_gradient_is_not_silent():
    net = _net()
    opt = st_torch.SDEOptimizer(net.parameters(), lr=0.1, seed=0)
    for p in net.parameters():
        p.grad = torch.full_like(p, NAN)
    with pytest.raises((ValueError, sdekit.DivergenceError, FloatingPointError)):
        opt.step()
        assert all(torch.isfinite(p).all() for p in net.parameters())


def test_torch_load_state_dict_bad():
    opt = st_torch.SDEOptimizer(_net().parameters(), seed=0)
    raises_named("state_dict", opt.load_state_dict, {"state": {}, "param_groups": opt.state_dict()["param_groups"]})


# ----------------------------------------------------------------------------- CLI

CLI_CASES = [
    (["study", "--hs", "0.1,abc"], "--hs"), (["study", "--hs", "0.1,-0.2"], "--hs"), (["study", "--hs", "nan"], "--hs"),
    (["study", "--hs", ""], "--hs"), (["study", "--schemes", "BAXAB"], "scheme"), (["study", "--steps", "0"], "--steps"),
    (["study", "--steps", "1.5"], "--steps"), (["study", "--paths", "1"], "--paths"), (["study", "--gamma", "x"], "--gamma"),
    (["study", "--gamma", "nan", "--quick"], "gamma"), (["study", "--kT", "-1", "--quick"], "kT"),
    (["study", "--seed", "-1"], "--seed"), (["study", "--system", "nope"], "--system"), (["study", "--backend", "gpu"], "--backend"),
    (["schemes", "BAXAB"], "scheme"), (["schemes", "BA1"], "scheme"),
    (["bias", "--scheme", "BAXAB"], "scheme"), (["bias", "--observable", "q3"], "observable"),
    (["bias", "--time", "-1"], "time"), (["bias", "--time", "nan"], "time"), (["bias", "--time", "inf"], "time"),
    (["bias", "--burn-in", "-1"], "burn"), (["bias", "--burn-in", "500"], "burn"), (["bias", "--hs", "0"], "--hs"),
    (["bias", "--gamma", "-1"], "gamma"), (["bias", "--kT", "inf"], "kT"), (["bias", "--paths", "x"], "--paths"),
    (["weak", "--scheme", "XX"], "scheme"), (["weak", "--observable", "q3"], "observable"), (["weak", "--T", "0"], "T"),
    (["weak", "--T", "nan"], "T"), (["weak", "--T", "1", "--hs", "0.3"], "hs"), (["weak", "--q0", "nan"], "q0"),
    (["weak", "--q0", "inf"], "q0"), (["weak", "--coordinate", "3"], "coordinate"), (["weak", "--coordinate", "-1"], "--coordinate"),
    (["weak", "--observable", "q2,p2"], "observable"), (["nonsense"], "command"), (["bias", "--bogus"], "--bogus"),
    (["train", "--steps", "0"], "--steps"), (["train", "--lr", "nan"], "--lr"), (["train", "--lr", "-1"], "--lr"),
    (["train", "--batch-frac", "0"], "--batch-frac"), (["train", "--optimizer", "no-such-opt"], "--optimizer"),
    (["train", "--hidden", "x"], "--hidden"), (["train", "--bogus"], "--bogus"), (["train", "--n-train", "1"], "--n-train"),
    (["train", "--turns", "inf"], "--turns"), (["train", "--seed", "-1"], "--seed"),
    # issue 20: sdekit reweight
    (["reweight", "--target", "-1"], "--target"), (["reweight", "--omega", "nan"], "--omega"),
    (["reweight", "--scheme", "BADODAB"], "scheme"), (["reweight", "--scheme", "LM"], "scheme"),
    (["reweight", "--gamma", "0"], "gamma"), (["reweight", "--h", "0"], "h"), (["reweight", "--steps", "0"], "--steps"),
    (["reweight", "--paths", "x"], "--paths"), (["reweight", "--scheme", "BAXAB"], "scheme"),
]


@pytest.mark.parametrize("argv,name", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_bad_arguments(argv, name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli_main(argv + ["--no-progress"] if argv[0] in ("study", "bias", "weak", "reweight") and "--bogus" not in argv
                    else argv)
    out, err = capsys.readouterr()
    assert code not in (0, None), (argv, out, err)
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert lines, "no message on stderr"
    last = lines[-1]
    assert "Traceback" not in err, err
    assert last.startswith("sdekit") and "error:" in last, last
    assert name.lower() in last.lower(), f"{name!r} not in {last!r}"
    assert os.listdir(tmp_path) in ([], ["sdekit-study"]) and not any(
        os.listdir(os.path.join(tmp_path, d)) for d in os.listdir(tmp_path)), "a failed command wrote output"


def test_cli_console_script_subprocess():
    exe = shutil.which("sdekit", path=os.path.dirname(sys.executable)) or shutil.which("sdekit")
    assert exe, "the sdekit console script is not installed"
    res = subprocess.run([exe, "bias", "--hs", "0.1,-1", "--no-progress"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("sdekit") and "error:" in last and "--hs" in last, res.stderr
    res = subprocess.run([exe, "weak", "--T", "0", "--no-progress"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("sdekit: error: T"), res.stderr


# ----------------------------------------------------------------------------- property: any word, any h

LETTER = st.sampled_from("ABOD")
WORD = st.text(alphabet="ABOD", min_size=1, max_size=8)


@st.composite
def schemes(draw):
    word = draw(WORD)
    if not draw(st.booleans()):
        return word
    # explicit fractions: per letter, random weights that sum to one
    out = []
    for ch in word:
        out.append([ch, draw(st.floats(-1.0, -1e-3) | st.floats(1e-3, 2.0))])
    for ch in set(word):
        idx = [i for i, (c, _) in enumerate(out) if c == ch]
        rest = math.fsum(out[i][1] for i in idx[:-1])
        last = 1.0 - rest
        if abs(last) < 1e-3:
            return word
        out[idx[-1]][1] = last
    return [tuple(x) for x in out]


def _run_and_check(scheme, h, gamma, kT, system, backend, driver, q0):
    sys_ = H1 if system == "harmonic" else DW
    kwargs = dict(gamma=gamma, kT=kT, q0=[q0], seed=1, backend=backend, record_every=2)
    try:
        if driver == "simulate":
            r = sdekit.simulate(scheme, sys_, h, 6, **kwargs)
            arrays = [r.q, r.xi] + ([r.p] if r.p is not None else [])
        else:
            r = sdekit.ensemble(scheme, sys_, h, 6, 3, **kwargs)
            # p_O before the first step (record 0) is undefined (NaN by design); later records must be finite
            arrays = [r.q, r.xi] + ([r.p] if r.p is not None else []) + \
                [v[1:] if k in ("p_O", "p2_O") else v for k, v in r.mean.items()]
    except sdekit.DivergenceError as err:
        assert err.step is not None and 1 <= err.step <= 6 and str(err.step) in str(err)
        event("diverged")
        return
    except ValueError as err:
        assert str(err).split(":")[0] in ("scheme", "h", "gamma", "kT"), str(err)
        event(f"refused: {str(err).split(':')[0]}")
        return
    event("completed")
    for a in arrays:
        assert np.all(np.isfinite(a)), (scheme, h, a)


COMMON = dict(h=st.floats(1e-3, 3.0), gamma=st.floats(0.0, 5.0), kT=st.floats(0.0, 3.0),
              system=st.sampled_from(["harmonic", "doublewell"]), driver=st.sampled_from(["simulate", "ensemble"]),
              q0=st.floats(-2.0, 2.0))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=schemes(), **COMMON)
def test_any_word_any_step_numpy(scheme, h, gamma, kT, system, driver, q0):
    """Random words (with random explicit fractions): finite values or a documented error."""
    _run_and_check(scheme, h, gamma, kT, system, "numpy", driver, q0)


# the compiled backend generates and compiles a kernel per word (seconds each, then cached
# on disk), so it draws its words from a small pool and varies everything else
CPU_WORDS = ["BAOAB", "OBABO", "BADODAB", "ABO"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=st.sampled_from(CPU_WORDS), **COMMON)
def test_any_step_cpu_backend(scheme, h, gamma, kT, system, driver, q0):
    _run_and_check(scheme, h, gamma, kT, system, "cpu", driver, q0)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_state_beyond_overflow_bound_is_a_divergence(backend):
    """ABO on the double well at h = 1: |q| reaches ~1e49 at step 4 and ~1e160 at step 6,
    still finite but with an infinite square. The run used to finish with <q^2> = inf; a
    state beyond sdekit._checks.overflow_bound is now a divergence, at the same step on
    every backend."""
    with pytest.raises(sdekit.DivergenceError, match="at step 6") as err:
        sdekit.ensemble("ABO", DW, 1.0, 6, 3, gamma=1.0, kT=0.0, q0=[2.0], seed=1, backend=backend, record_every=2)
    assert err.value.step == 6


# ---- issue 16: command line

@pytest.mark.parametrize("argv,name", [(["schemes", ","], "NAMES"), (["schemes", "BAOAB,BAXAB"], "scheme"),
                                       (["study", "--backend", "cuda"], "--backend"),
                                       (["bias", "--backend", "cuda"], "--backend")])
def test_cli_issue16_bad_arguments(argv, name, capsys, tmp_path, monkeypatch):
    """A comma list of scheme names is split (a bad one still named); an unavailable
    backend is refused before the run plan is printed or a directory written."""
    monkeypatch.setattr(type(sdekit.backends.REGISTRY["cuda"]), "available", lambda self: False)
    monkeypatch.chdir(tmp_path)
    assert cli_main(argv) == 2
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1]
    assert out == "" and last.startswith("sdekit") and "error:" in last and name in last, (out, err)
    assert os.listdir(tmp_path) == []


# ---- issue 16: systems

def _grad_not_numba(q, out):
    out[0] = sum(x for x in {"a": 1.0}.values())


@pytest.mark.parametrize("system", [systems.Harmonic(), systems.Gaussian(np.eye(1)), systems.DoubleWell()], ids=repr)
@pytest.mark.parametrize("name", ["q3", "", None, 2, ["q2"]], ids=ids)
def test_exact_bad_name(system, name):
    msg = raises_named("name", system.exact, name, 1.0)
    assert repr(name) in msg


@pytest.mark.parametrize("value", BAD_NONNEG, ids=ids)
def test_exact_bad_kT(value):
    raises_named("kT", systems.DoubleWell().exact, "q2", value)


@pytest.mark.parametrize("time_dependent", [False, True])
def test_custom_gradient_numba_cannot_compile(time_dependent):
    msg = raises_named("gradient", systems.custom, _grad_not_numba, 1, time_dependent=time_dependent)
    assert "_grad_not_numba" in msg and "\n" not in msg
