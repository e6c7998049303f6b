"""Constrained dynamics in the compiled backends (issue 6): the cpu kernels (every
constraint) and the cuda kernels (Sphere, Circle; run here under numba-cuda's simulator)
apply SHAKE and RATTLE exactly as the numpy reference does.

* noise-free (kT = 0: no random numbers) the cpu kernel and the numpy reference are the
  same deterministic map, to ~1e-12;
* |g(q)| and |G M^-1 p| stay at rounding after every one of 10^5 steps;
* the invariant measures (exp(-U/kT) times the surface measure; the tangent momenta
  Gaussian) within 4.5 standard errors, from independent paths;
* bitwise reproducibility across threads, chunking and checkpoints; cuda = cpu to rounding.

The kernels here are shared between the tests (one per system, constraint and scheme), so
that a cold cache compiles each once; numba's disk cache serves later runs.
"""
import inspect
import json
import math
import textwrap

import numpy as np
import pytest
from scipy import special

import sdekit
import sdekit.kernels
from sdekit import DivergenceError, Scheme
from sdekit.constraints import Circle, Constraint, Sphere, Stiefel
from sdekit.kernels import cpu as kcpu
from sdekit.systems import custom

from conftest import assert_same_ensemble, assert_within
from test_kernels import run_child
from test_constraints import A_ELL, B_ELL, ELLIPSE, KAPPA, vmf_gradient, zero_gradient


def circle_gradient(q, out):  # U = -w_1 on (w_1, w_2, s_1, s_2): nothing on w_2 or the slacks
    out[0] = -1.0
    out[1] = 0.0
    out[2] = 0.0
    out[3] = 0.0


def linear_x_gradient(q, out):  # U = x
    out[0] = 1.0
    out[1] = 0.0


FREE3, VMF, FREE6 = custom(zero_gradient, dim=3), custom(vmf_gradient, dim=3), custom(zero_gradient, dim=6)
CIRCLE_SYS, ELLIPSE_SYS = custom(circle_gradient, dim=4), custom(linear_x_gradient, dim=2)
GEO3 = Scheme("BAOAB", geodesic_steps=3)
CASES = {  # name: (constraint, system, scheme, q0 on the manifold, mass)
    "sphere": (Sphere(1.0), VMF, "OBABO", [0.0, 0.0, 1.0], None),
    "sphere-geodesic-mass": (Sphere(1.0), VMF, GEO3, [0.0, 0.0, 1.0], [1.0, 2.0, 0.5]),
    "circle": (Circle(1.0), CIRCLE_SYS, "OBABO", [1.0, 0.0, 0.0, 1.0], None),
    "stiefel": (Stiefel(3, 2), FREE6, "OBABO", [1.0, 0.0, 0.0, 1.0, 0.0, 0.0], None),
    "ellipse-badodab": (ELLIPSE, ELLIPSE_SYS, "BADODAB", [A_ELL, 0.0], None),
}


def random_start(constraint, d, n, seed):
    """n points of the manifold (projections of normal draws) and normal momenta."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, d))
    if isinstance(constraint, Constraint):  # the ellipse: a point at a random angle
        t = rng.uniform(0, 2 * np.pi, n)
        q = np.column_stack([A_ELL * np.cos(t), B_ELL * np.sin(t)])
    return constraint.project(q), rng.normal(size=(n, d))


# ----------------------------------------------------------------------------- exact: cpu = numpy

@pytest.mark.parametrize("name", [n for n in CASES if n != "sphere"])  # the sphere: with K = 3 and a mass
def test_noiseless_cpu_equals_numpy(name):
    """kT = 0: SHAKE, RATTLE and the letters are the same deterministic map in the kernel and
    in sdekit.reference, over 300 steps (friction on, so O acts; BADODAB's xi moves)."""
    constraint, system, scheme, _, mass = CASES[name]
    q0, p0 = random_start(constraint, system.dim, 16, seed=1)
    kw = dict(h=0.05, n_steps=300, n_paths=16, gamma=0.7, kT=0.0, q0=q0, p0=p0, xi0=0.1, eps=0.5,
              record_every=100, mass=mass, constraint=constraint, seed=0)
    a = sdekit.ensemble(scheme, system, backend="cpu", **kw)
    b = sdekit.ensemble(scheme, system, backend="numpy", **kw)
    assert a.n_alive[-1] == 16 and a.state.backend == "cpu"
    for k in ("q", "p", "xi"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-12, atol=1e-13, err_msg=k)
    for k in b.mean:
        np.testing.assert_allclose(a.mean[k], b.mean[k], rtol=1e-12, atol=1e-13, err_msg=k)
    assert np.abs(a.q - q0).max() > 0.1  # the paths moved
    # one path through the trajectory driver: the same map, every record
    s = dict(kw, q0=q0[3], p0=p0[3], record_every=50)
    del s["n_paths"]
    c, r = sdekit.simulate(scheme, system, backend="cpu", **s), sdekit.simulate(scheme, system, backend="numpy", **s)
    np.testing.assert_allclose(c.q, r.q, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c.p, r.p, rtol=1e-12, atol=1e-13)


def test_source_has_a_line_per_projection():
    text = sdekit.kernels.source(GEO3, VMF, constraint=Sphere(1.0))
    body = text[text.index("def step("):text.index("return xi, ctr, spare, ok")]
    assert body.count("shake(") == 2 and body.count("rattle(") == 2 + 2 + 1  # 2 A, 2 B, 1 O
    assert "for _ in range(GEO)" in body and "GEO = 3" in text and "NDOF = D - M" in text
    plain = sdekit.kernels.source("BAOAB", VMF)
    assert "shake" not in plain and "rattle" not in plain and "ok" not in plain.split("def step(")[1][:80]


# ----------------------------------------------------------------------------- on the manifold

@pytest.mark.parametrize("name", ["sphere", "circle", "stiefel", "ellipse-badodab"])
def test_residual_and_tangency_after_every_step(name):
    """kT = 1, 10^5 steps of one path on the cpu, every step recorded: |g(q)| <= 1e-10 and
    |G M^-1 p| <= 1e-10 throughout (and the path explores: q spreads over the manifold)."""
    constraint, system, scheme, q0, mass = CASES[name]
    t = sdekit.simulate(scheme, system, h=0.1, n_steps=100_000, q0=q0, gamma=1.0, kT=1.0, eps=0.5,
                        seed=3, mass=mass, constraint=constraint, backend="cpu")
    assert t.q.shape == (100_001, system.dim)
    assert constraint.residual(t.q).max() <= 1e-10
    assert constraint.tangency(t.q, t.p, mass).max() <= 1e-10
    assert t.q.std(axis=0).max() > 0.3


# ----------------------------------------------------------------------------- invariant measures

def final_averages(name, f, *, h, n_paths, n_steps, seed, constraint=None):
    """Mean over independent paths of f(q, p) at the last step, and its standard error."""
    con, system, scheme, q0, mass = CASES[name]
    e = sdekit.ensemble(scheme, system, h=h, n_steps=n_steps, n_paths=n_paths, q0=q0, gamma=1.0, kT=1.0,
                        seed=seed, mass=mass, constraint=constraint or con, backend="cpu")
    assert e.n_alive[-1] == n_paths
    v = f(e.q, e.p)
    return v.mean(axis=0), v.std(axis=0, ddof=1) / math.sqrt(n_paths)


def kinetic(p):
    return (p * p).sum(axis=1)


def report(est, se, exact, what):
    z = (np.asarray(est) - np.asarray(exact, dtype=float)) / np.asarray(se)
    print(f"\n{what}: estimate {np.round(est, 4)} +- {np.round(se, 4)}, exact "
          f"{np.round(np.asarray(exact, dtype=float), 4)}, z {np.round(z, 2)}")
    assert_within(est, se, exact, what=what)


@pytest.mark.statistical
def test_cpu_sphere_uniform_and_von_mises_fisher():
    """Unit sphere in R^3: U = 0 gives E[q_i^2] = 1/3; U = -kappa e_z.q gives
    E[q_z] = coth(kappa) - 1/kappa; both E[|p|^2] = 2 kT (two tangent dofs)."""
    f = lambda q, p: np.column_stack([q, q * q, kinetic(p)])
    # U = 0 through the vMF kernel's sibling: the free system
    con, _, scheme, q0, _ = CASES["sphere"]
    e = sdekit.ensemble(scheme, FREE3, h=0.1, n_steps=200, n_paths=20_000, q0=q0, gamma=1.0, kT=1.0, seed=21,
                        constraint=con, backend="cpu")
    v = f(e.q, e.p)
    report(v.mean(axis=0), v.std(axis=0, ddof=1) / math.sqrt(len(v)), [0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 2.0],
           "cpu sphere U=0: q, q^2, |p|^2")
    est, se = final_averages("sphere", lambda q, p: np.column_stack([q, kinetic(p)]), h=0.1,
                             n_paths=20_000, n_steps=200, seed=22)
    report(est, se, [0, 0, 1 / math.tanh(KAPPA) - 1 / KAPPA, 2.0], "cpu von Mises-Fisher: q, |p|^2")


@pytest.mark.statistical
def test_cpu_stiefel_uniform():
    """Stiefel(3, 2), U = 0: E[W] = 0, E[W_ij^2] = 1/n, E[|P|^2] = np - p(p+1)/2 = 3."""
    est, se = final_averages("stiefel", lambda q, p: np.column_stack([q, q * q, kinetic(p)]), h=0.1,
                             n_paths=10_000, n_steps=200, seed=23)
    report(est, se, [0] * 6 + [1 / 3] * 6 + [3.0], "cpu Stiefel(3,2) U=0: W, W^2, |P|^2")


@pytest.mark.statistical
def test_cpu_circle():
    """Two weights with slacks on circles of radius 1, U = -w_1: E[w_1] = I1(1)/I0(1),
    E[w_2^2] = 1/2, E[|p|^2] = 2 (one tangent dof per circle)."""
    est, se = final_averages("circle", lambda q, p: np.column_stack([q[:, 0], q[:, 1], q[:, 1] ** 2, kinetic(p)]),
                             h=0.1, n_paths=20_000, n_steps=200, seed=24)
    report(est, se, [special.iv(1, 1.0) / special.iv(0, 1.0), 0.0, 0.5, 2.0], "cpu circle: w1, w2, w2^2, |p|^2")


# ----------------------------------------------------------------------------- reproducibility

CHILD_HEAD = """
import json, numba, numpy as np, sdekit, sdekit.kernels
from sdekit.constraints import Circle, Sphere
from sdekit.systems import custom
KAPPA = 2.0
""" + "".join(textwrap.dedent(inspect.getsource(f)) for f in (vmf_gradient, circle_gradient))  # same code: same kernels

THREADS_CHILD = CHILD_HEAD + """
e = sdekit.ensemble("OBABO", custom(vmf_gradient, dim=3), h=0.1, n_steps=60, n_paths=600, seed=4,
                    q0=[0.0, 0.0, 1.0], record_every=20, constraint=Sphere(1.0), backend="cpu")
mod = sdekit.kernels.build("OBABO", custom(vmf_gradient, dim=3), constraint=Sphere(1.0))
print(json.dumps({"q": e.q.tobytes().hex(), "p": e.p.tobytes().hex(), "rng": e.state.rng,
                  "mean": {k: v.tobytes().hex() for k, v in e.mean.items()},
                  "meansq": {k: v.tobytes().hex() for k, v in e.meansq.items()},
                  "threads": numba.get_num_threads(), "hits": sdekit.kernels.cache_stats(mod)["ensemble"][0]}))
"""


def test_bitwise_equal_for_one_and_two_threads():
    """Same bits with 1 and 2 threads (and here); the second process loads numba's disk cache
    (the constraint's per-path functions have a stable fingerprint)."""
    one = json.loads(run_child(THREADS_CHILD, NUMBA_NUM_THREADS=1))
    two = json.loads(run_child(THREADS_CHILD, NUMBA_NUM_THREADS=2))
    assert (one.pop("threads"), two.pop("threads")) == (1, 2)
    assert two.pop("hits") >= 1 and one.pop("hits") >= 0
    assert one == two
    here = sdekit.ensemble("OBABO", VMF, h=0.1, n_steps=60, n_paths=600, seed=4, q0=[0.0, 0.0, 1.0],
                           record_every=20, constraint=Sphere(1.0), backend="cpu")
    assert one["q"] == here.q.tobytes().hex()


def test_bitwise_equal_across_chunking_checkpoints_and_path_counts(monkeypatch):
    con, system, scheme, q0, mass = CASES["sphere"]
    kw = dict(h=0.1, gamma=1.0, kT=1.0, seed=5, q0=q0, constraint=con, backend="cpu", record_every=50)
    full = sdekit.ensemble(scheme, system, n_steps=200, n_paths=600, **kw)
    half = sdekit.ensemble(scheme, system, n_steps=100, n_paths=600, **kw)
    rest = sdekit.ensemble(scheme, system, n_steps=100, n_paths=600, resume=half.state, **kw)
    for k in ("q", "p", "xi"):
        np.testing.assert_array_equal(getattr(rest, k), getattr(full, k), err_msg=k)
    np.testing.assert_array_equal(rest.mean["q2"][-1], full.mean["q2"][-1])
    assert rest.state.rng == full.state.rng
    few = sdekit.ensemble(scheme, system, n_steps=200, n_paths=100, **kw)  # path i: its own stream
    np.testing.assert_array_equal(few.q, full.q[:100])
    monkeypatch.setattr(kcpu, "PARTIAL_SUMS_BYTES", 1)  # one chunk of 256 paths per parallel sweep
    chunked = sdekit.ensemble(scheme, system, n_steps=200, n_paths=600, **kw)
    assert_same_ensemble(chunked, full)


# ----------------------------------------------------------------------------- failures, backends

def test_shake_failure_is_a_divergence_naming_the_step():
    """A drift beyond the sphere's reach (delta |p| > r): DivergenceError at step 1 naming
    SHAKE, or the path masked, as on the numpy backend."""
    con, _, scheme, q0, _ = CASES["sphere"]
    system = FREE3  # no force: |p| stays as given
    kw = dict(h=4.0, n_steps=3, q0=q0, kT=0.0, gamma=0.0, seed=0, constraint=con)
    for backend in ("cpu", "numpy"):
        with pytest.raises(DivergenceError, match="SHAKE.*step 1") as info:
            sdekit.simulate(scheme, system, p0=[1.0, 0.0, 0.0], backend=backend, **kw)
        assert info.value.step == 1
        p0 = [[0.1, 0, 0], [1.0, 0, 0], [0.1, 0, 0], [0.0, 2.0, 0]]
        with pytest.raises(DivergenceError, match=r"SHAKE.*step 1 \(path 1\)") as info:
            sdekit.ensemble(scheme, system, n_paths=4, p0=p0, backend=backend, **kw)
        assert (info.value.step, info.value.path) == (1, 1)
        e = sdekit.ensemble(scheme, system, n_paths=4, p0=p0, on_divergence="mask", backend=backend, **kw)
        assert e.diverged.tolist() == [1, 3] and e.n_alive[-1] == 2
        assert np.isnan(e.q[[1, 3]]).all() and np.isfinite(e.q[[0, 2]]).all()


def test_backends_for_constraints():
    con, system, scheme, q0, _ = CASES["sphere"]
    kw = dict(h=0.1, n_steps=2, n_paths=2, q0=q0, seed=0)
    e = sdekit.ensemble(scheme, system, constraint=con, **kw)
    default = sdekit.backends.default().name
    assert e.state.backend == default  # the usual default runs a Sphere
    stiefel, sys6, _, w0, _ = CASES["stiefel"]
    e = sdekit.ensemble(scheme, sys6, q0=w0, constraint=stiefel, h=0.1, n_steps=2, n_paths=2, seed=0)
    assert e.state.backend == "cpu"  # never cuda
    for c, sys_, q in [(stiefel, sys6, w0), (ELLIPSE, ELLIPSE_SYS, [A_ELL, 0.0])]:
        with pytest.raises(ValueError, match=r"^constraint: .*cuda"):
            sdekit.ensemble(scheme, sys_, q0=q, constraint=c, backend="cuda", h=0.1, n_steps=2, n_paths=2)
        with pytest.raises(ValueError, match=r"^constraint: .*cuda"):
            sdekit.kernels.source(scheme, sys_, backend="cuda", constraint=c)


CUDA_KW = dict(h=0.2, n_steps=8, n_paths=40, seed=3, record_every=4, gamma=0.5, kT=1.0)
CUDA_CASES = ("sphere-geodesic-mass", "circle")
CUDASIM_CHILD = CHILD_HEAD + f"""
CASES = {{"sphere-geodesic-mass": (Sphere(1.0), custom(vmf_gradient, dim=3), sdekit.Scheme("BAOAB", geodesic_steps=3),
                                  {CASES["sphere-geodesic-mass"][3]}, {CASES["sphere-geodesic-mass"][4]}),
         "circle": (Circle(1.0), custom(circle_gradient, dim=4), "OBABO", {CASES["circle"][3]}, None)}}
out = {{}}
for name, (con, system, scheme, q0, mass) in CASES.items():
    g = sdekit.ensemble(scheme, system, backend="cuda", q0=q0, mass=mass, constraint=con, **{CUDA_KW!r})
    out[name] = {{"q": g.q.tolist(), "p": g.p.tolist(), "rng": g.state.rng, "n_alive": g.n_alive.tolist(),
                 "mean": {{k: v.tolist() for k, v in g.mean.items()}}}}
print(json.dumps(out))
"""


@pytest.mark.cuda
def test_cuda_sphere_and_circle_under_the_simulator():
    """The cuda kernel (Sphere, Circle: the constraints' per-path text compiled as device
    functions) gives the cpu kernel's numbers to rounding, noise included."""
    out = json.loads(run_child(CUDASIM_CHILD, NUMBA_ENABLE_CUDASIM=1))
    assert sorted(out) == sorted(CUDA_CASES)
    for name, g in out.items():
        con, system, scheme, q0, mass = CASES[name]
        c = sdekit.ensemble(scheme, system, backend="cpu", q0=q0, mass=mass, constraint=con, **CUDA_KW)
        np.testing.assert_allclose(g["q"], c.q, rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(g["p"], c.p, rtol=1e-12, atol=1e-14, err_msg=name)
        assert g["rng"] == c.state.rng and g["n_alive"] == c.n_alive.tolist()
        for k in c.mean:
            np.testing.assert_allclose(g["mean"][k], c.mean[k], rtol=1e-12, atol=1e-14, err_msg=f"{name} {k}")


def test_constrained_and_time_dependent_cpu_equals_numpy():
    """Constraint and gamma(t) together (kT = 0): the cpu kernel is the numpy reference's map."""
    con, system, scheme, _, _ = CASES["sphere"]
    q0, p0 = random_start(con, system.dim, 8, seed=2)
    kw = dict(h=0.05, n_steps=100, n_paths=8, gamma=lambda t: 0.5 + t, kT=0.0, q0=q0, p0=p0, constraint=con,
              seed=0, record_every=50)
    a = sdekit.ensemble(scheme, system, backend="cpu", **kw)
    b = sdekit.ensemble(scheme, system, backend="numpy", **kw)
    for k in ("q", "p"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-12, atol=1e-13, err_msg=k)
    assert a.spec.time_dependent and np.abs(a.p).max() < 0.5 * np.abs(p0).max()  # the friction acted
