"""The backend registry (sdekit.backends): names, capabilities, refusals and the default.

The default is the first backend of ``PREFERENCE`` that is available and does not refuse
the spec; a GPU is simulated here by making the cuda backend report itself available
(nothing runs on it), and the one test that runs cuda uses numba-cuda's simulator.
"""
import json

import numpy as np
import pytest

import sdekit
from sdekit import backends, cli, constraints, kernels, systems
from sdekit.simulate import make_spec

from test_kernels import run_child

S3 = systems.Harmonic(1.0, dim=3)
NORTH = [0.0, 0.0, 1.0]
OBS = {"e": lambda q, p: q[:, 0]}


class UnitSphere(constraints.Sphere):
    """A user's subclass of Sphere: it keeps the closed forms, so cuda runs it."""


class NumpyOnly(systems.System):
    """A system with no numba gradient (as a torch module)."""

    numpy_only = True
    dim = 1
    name = "numpy-only"

    def grad(self, q):
        return q


def spec(system=systems.Harmonic(), constraint=None, gamma=1.0):
    return make_spec("BAOAB", system, 0.1, gamma, 1.0, 1.0, None, None, "float64", None, constraint)


@pytest.fixture
def gpu(monkeypatch):
    """Pretend a GPU is there: the cuda backend reports itself available."""
    monkeypatch.setattr(backends.CudaBackend, "available", lambda self: True)


def test_registry_names_and_order():
    assert tuple(backends.REGISTRY) == ("numpy", "cpu", "cuda")
    assert backends.PREFERENCE == ["cuda", "cpu", "numpy"]
    assert backends.TIME_DEPENDENT_BACKENDS == ("numpy", "cpu")
    assert sdekit.simulate.__module__ == "sdekit.simulate"
    assert all(b.name == name for name, b in backends.REGISTRY.items())
    assert backends.get("cpu") is backends.REGISTRY["cpu"]
    with pytest.raises(ValueError, match=r"^backend: must be one of \['numpy', 'cpu', 'cuda'\], got 'tpu'"):
        backends.get("tpu")


def test_cli_backend_choices_come_from_the_registry(capsys):
    parser = cli.build_parser()
    for name in backends.REGISTRY:
        assert parser.parse_args(["bias", "--backend", name]).backend == name
    assert cli.main(["bias", "--backend", "tpu"]) == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


@pytest.mark.parametrize("make,refusers", [
    (lambda: spec(), set()),
    (lambda: spec(NumpyOnly()), {"cpu", "cuda"}),
    (lambda: spec(gamma=lambda t: 1.0), {"cuda"}),
    (lambda: spec(S3, constraints.Sphere(1.0)), set()),
    (lambda: spec(S3, UnitSphere(1.0)), set()),
    (lambda: spec(systems.Harmonic(1.0, dim=6), constraints.Stiefel(3, 2)), {"cuda"}),
], ids=["plain", "numpy-only", "time-dependent", "sphere", "sphere-subclass", "stiefel"])
def test_refusals(make, refusers):
    s = make()
    got = {name for name, b in backends.REGISTRY.items() if b.refuses(s) is not None}
    assert got == refusers
    for name in got:  # a message naming the argument
        assert backends.REGISTRY[name].refuses(s).split(":")[0] in ("backend", "constraint")
    assert backends.REGISTRY["cpu"].refuses(spec(), OBS).startswith("observables: user observables ['e']")
    assert backends.REGISTRY["numpy"].refuses(spec(), OBS) is None


@pytest.mark.parametrize("make,observables,want", [
    (lambda: spec(), None, "cuda"),
    (lambda: spec(), OBS, "numpy"),
    (lambda: spec(NumpyOnly()), None, "numpy"),
    (lambda: spec(gamma=lambda t: 1.0), None, "cpu"),
    (lambda: spec(S3, UnitSphere(1.0)), None, "cuda"),
    (lambda: spec(systems.Harmonic(1.0, dim=6), constraints.Stiefel(3, 2)), None, "cpu"),
], ids=["plain", "observables", "numpy-only", "time-dependent", "sphere-subclass", "stiefel"])
def test_default_is_the_first_available_backend_that_does_not_refuse(gpu, make, observables, want):
    assert backends.default(make(), observables).name == want
    assert backends.default().name == "cuda"


def test_default_without_a_gpu(monkeypatch):
    monkeypatch.setattr(backends.CudaBackend, "available", lambda self: False)
    assert backends.default().name == "cpu" and backends.default(spec(S3, UnitSphere(1.0))).name == "cpu"
    with pytest.raises(ValueError, match="^backend: 'cuda' needs numba-cuda"):
        backends.check("cuda", spec())
    with pytest.raises(ValueError, match="^constraint: .*cuda"):  # the refusal first, then availability
        backends.check("cuda", spec(systems.Harmonic(1.0, dim=6), constraints.Stiefel(3, 2)))


def test_device_capability_is_a_property_of_the_constraint_not_its_name():
    assert constraints.Sphere.device_functions and constraints.Circle.device_functions
    assert UnitSphere(1.0).device_functions and not constraints.Stiefel(3, 1).device_functions
    assert kernels.supports_constraint(UnitSphere(1.0), "cuda")
    impostor = type("Sphere", (constraints.Stiefel,), {})(3, 1)  # named Sphere, solved by Newton
    assert not kernels.supports_constraint(impostor, "cuda") and kernels.supports_constraint(impostor, "cpu")
    assert backends.REGISTRY["cuda"].refuses(spec(S3, impostor)).startswith("constraint: ")
    with pytest.raises(ValueError, match="^constraint: .*cuda"):
        kernels.source("BAOAB", S3, backend="cuda", constraint=impostor)
    text = kernels.source("BAOAB", S3, backend="cuda", constraint=UnitSphere(1.0))  # not refused
    compile(text, "<cuda>", "exec")


def test_a_backend_object_and_a_registered_backend_run(tmp_path):
    kw = dict(h=0.2, n_steps=10, n_paths=5, seed=3, record_every=5)
    ref = sdekit.ensemble("BAOAB", systems.Harmonic(), backend="numpy", **kw)
    same = sdekit.ensemble("BAOAB", systems.Harmonic(), backend=backends.REGISTRY["numpy"], **kw)
    assert same.state.backend == "numpy" and np.array_equal(same.q, ref.q)

    class Mirror(backends.NumpyBackend):
        name = "mirror"

    backends.register(Mirror(), prefer=True)
    try:
        assert backends.PREFERENCE[0] == "mirror"
        e = sdekit.ensemble("BAOAB", systems.Harmonic(), **kw)  # the preferred one now
        assert e.state.backend == "mirror" and np.array_equal(e.q, ref.q) and np.array_equal(e.mean["q2"], ref.mean["q2"])
        assert cli.build_parser().parse_args(["bias", "--backend", "mirror"]).backend == "mirror"
        with pytest.raises(ValueError, match="^resume: the state was made by backend 'mirror', not 'numpy'"):
            sdekit.ensemble("BAOAB", systems.Harmonic(), backend="numpy", resume=e.state, **kw)
        with pytest.raises(ValueError, match="^backend: must be a Backend with a new name"):
            backends.register(Mirror())
    finally:
        del backends.REGISTRY["mirror"]
        backends.PREFERENCE.remove("mirror")


def test_drivers_pick_the_default_and_refuse_with_the_reason():
    kw = dict(h=0.1, n_steps=2, n_paths=2, seed=0)
    assert sdekit.ensemble("BAOAB", NumpyOnly(), **kw).state.backend == "numpy"
    with pytest.raises(ValueError, match=r"^backend: numpy-only runs on the numpy backend only .* got backend='cpu'"):
        sdekit.ensemble("BAOAB", NumpyOnly(), backend="cpu", **kw)
    with pytest.raises(ValueError, match=r"^observables: .*use backend='numpy'"):
        sdekit.ensemble("BAOAB", systems.Harmonic(), backend="cpu", observables=OBS, **kw)
    e = sdekit.ensemble("BAOAB", S3, q0=NORTH, constraint=UnitSphere(1.0), **kw)
    assert e.state.backend == backends.default().name


CUDASIM_CHILD = """
import json
import sdekit
from sdekit import constraints, systems

class UnitSphere(constraints.Sphere):
    pass

kw = dict(h=0.2, n_steps=6, n_paths=8, seed=5, record_every=3, q0=[0.0, 0.0, 1.0])
e = sdekit.ensemble("BAOAB", systems.Harmonic(1.0, dim=3), constraint=UnitSphere(1.0), **kw)  # default backend
print(json.dumps({"backend": e.state.backend, "q": e.q.tolist(), "p": e.p.tolist(), "rng": e.state.rng,
                  "q2": e.mean["q2"].tolist()}))
"""


@pytest.mark.cuda
def test_sphere_subclass_runs_on_cuda_under_the_simulator():
    """A subclass of Sphere keeps its device functions: the default backend on a (simulated)
    GPU is cuda, and it gives the cpu kernel's numbers to rounding."""
    out = json.loads(run_child(CUDASIM_CHILD, NUMBA_ENABLE_CUDASIM=1))
    assert out["backend"] == "cuda"
    c = sdekit.ensemble("BAOAB", S3, constraint=UnitSphere(1.0), backend="cpu", h=0.2, n_steps=6, n_paths=8,
                        seed=5, record_every=3, q0=NORTH)
    np.testing.assert_allclose(out["q"], c.q, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out["p"], c.p, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out["q2"], c.mean["q2"], rtol=1e-12, atol=1e-14)
    assert out["rng"] == c.state.rng
