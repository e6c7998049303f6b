"""Constrained dynamics (sdekit.constraints): SHAKE/RATTLE keep g(q) = 0 and G M^-1 p = 0
to rounding; constrained BAOAB samples exp(-U/kT) times the surface measure (error
bars from independent paths, 4.5 standard errors); g-BAOAB; bad input."""
import math

import numpy as np
import pytest
from scipy import integrate, special

import sdekit
from sdekit import DivergenceError, Scheme
from sdekit.constraints import Circle, Constraint, Sphere, Stiefel
from sdekit.systems import Harmonic, custom

from conftest import assert_within

A_ELL, B_ELL = 2.0, 1.0  # the ellipse x^2/a^2 + y^2/b^2 = 1
KAPPA = 2.0  # von Mises-Fisher concentration on the unit sphere


def g_ellipse(q, out):
    out[0] = q[0] * q[0] / (A_ELL * A_ELL) + q[1] * q[1] / (B_ELL * B_ELL) - 1.0


def jac_ellipse(q, out):
    out[0, 0] = 2.0 * q[0] / (A_ELL * A_ELL)
    out[0, 1] = 2.0 * q[1] / (B_ELL * B_ELL)


def zero_gradient(q, out):
    for i in range(q.shape[0]):
        out[i] = 0.0


def vmf_gradient(q, out):  # U = -kappa e_z . q
    out[0] = 0.0
    out[1] = 0.0
    out[2] = -KAPPA


def linear_x_gradient(q, out):  # U = x
    out[0] = 1.0
    out[1] = 0.0


def circle_gradient(q, out):  # U = -w_1 on (w_1, w_2, s_1, s_2): nothing on w_2 or the slacks
    out[0] = -1.0
    out[1] = 0.0
    out[2] = 0.0
    out[3] = 0.0


FREE3 = custom(zero_gradient, dim=3)
ELLIPSE = Constraint(g_ellipse, jac_ellipse, m=1, name="ellipse")
STIEFEL = Stiefel(3, 2)
W0 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]).ravel()
CASES = {  # name: (constraint, system, q0)
    "sphere": (Sphere(1.0), custom(vmf_gradient, dim=3), np.array([0.0, 0.0, 1.0])),
    "stiefel": (STIEFEL, custom(zero_gradient, dim=6), W0),
    "ellipse": (ELLIPSE, custom(linear_x_gradient, dim=2), np.array([A_ELL, 0.0])),
    "circle": (Circle(1.0), custom(circle_gradient, dim=4), np.array([1.0, 0.0, 0.0, 1.0])),
}


def path_averages(system, constraint, q0, f, *, h, n_paths, burn, chunks, every, gamma=1.0,
                  seed=0, scheme="BAOAB"):
    """Mean over independent paths of each path's time average of f(q, p), and its standard
    error (from the spread of the per-path averages)."""
    kw = dict(h=h, n_paths=n_paths, gamma=gamma, kT=1.0, constraint=constraint)
    e = sdekit.ensemble(scheme, system, n_steps=burn, q0=q0, seed=seed, **kw)
    total = 0.0
    for _ in range(chunks):
        e = sdekit.ensemble(scheme, system, n_steps=every, resume=e.state, **kw)
        total = total + f(e.q, e.p)
    values = total / chunks
    return values.mean(axis=0), values.std(axis=0, ddof=1) / math.sqrt(n_paths)


# ------------------------------------------------------------------ on the manifold to rounding

def test_residual_and_tangency_at_every_step_sphere_one_path():
    """|g(q)| <= 1e-10 and |G M^-1 p| <= 1e-10 after each of 10^5 steps of one path."""
    check_one_path("sphere")


@pytest.mark.parametrize("name", ["stiefel", "ellipse", "circle"])
def test_residual_and_tangency_at_every_step(name):
    """|g(q)| <= 1e-10 and |G M^-1 p| <= 1e-10 after every step: 10 paths x 10^4 steps.

    The observables' across-path mean square bounds the worst path:
    max_i x_i <= sqrt(n_paths * mean(x^2)).
    """
    constraint, system, q0 = CASES[name]
    n = 10
    obs = {"res": lambda q, p: constraint.residual(q), "tan": lambda q, p: constraint.tangency(q, p)}
    e = sdekit.ensemble("BAOAB", system, h=0.1, n_steps=10_000, n_paths=n, gamma=1.0, kT=1.0, q0=q0,
                        seed=1, record_every=1, observables=obs, constraint=constraint)
    assert e.meansq["res"].shape == (10_001,)
    res, tan = np.sqrt(n * e.meansq["res"]).max(), np.sqrt(n * e.meansq["tan"]).max()
    assert res <= 1e-10, f"{name}: max |g(q)| <= {res:.3g}"
    assert tan <= 1e-10, f"{name}: max |G M^-1 p| <= {tan:.3g}"
    assert np.abs(e.q - q0).max() > 0.5  # they moved


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stiefel", "ellipse", "circle"])
def test_residual_and_tangency_at_every_step_one_path(name):
    check_one_path(name)


def check_one_path(name):
    constraint, system, q0 = CASES[name]
    run = sdekit.simulate("BAOAB", system, h=0.1, n_steps=100_000, gamma=1.0, kT=1.0, q0=q0, seed=1,
                          record_every=1, constraint=constraint)
    assert run.q.shape[0] == 100_001
    res, tan = constraint.residual(run.q), constraint.tangency(run.q, run.p)
    assert res.max() <= 1e-10, f"{name}: max |g(q)| = {res.max():.3g}"
    assert tan.max() <= 1e-10, f"{name}: max |G M^-1 p| = {tan.max():.3g}"
    assert np.ptp(run.q, axis=0).max() > 0.5  # it moved


def test_residual_and_tangency_with_mass_and_geodesic_steps():
    """Diagonal mass and K = 3 geodesic sub-steps: still on the manifold, p in the
    M^-1-cotangent space (|G M^-1 p| = 0, not |G p|)."""
    mass = np.array([1.0, 2.0, 3.0, 0.5, 1.5, 4.0])
    run = sdekit.simulate(Scheme("BAOAB", geodesic_steps=3), CASES["stiefel"][1], h=0.1, n_steps=2_000,
                          mass=mass, q0=W0, seed=2, constraint=STIEFEL)
    assert STIEFEL.residual(run.q).max() <= 1e-10
    assert STIEFEL.tangency(run.q, run.p, mass).max() <= 1e-10
    assert STIEFEL.tangency(run.q, run.p).max() > 1e-3  # mass matters


def test_stiefel_rattle_is_the_tangent_projection():
    """With unit mass, RATTLE on the Stiefel manifold is P - W (W^T P + P^T W) / 2."""
    rng = np.random.default_rng(3)
    W = STIEFEL.project(rng.standard_normal((5, 6))).reshape(5, 3, 2)
    np.testing.assert_allclose(np.swapaxes(W, 1, 2) @ W, np.broadcast_to(np.eye(2), (5, 2, 2)), atol=1e-12)
    P = rng.standard_normal((5, 3, 2))
    np.testing.assert_allclose(STIEFEL.rattle(W.reshape(5, 6), P.reshape(5, 6)).reshape(5, 3, 2),
                               STIEFEL.tangent_projection(W, P), rtol=0, atol=1e-13)


def test_closed_form_sphere_shake_equals_newton():
    """Sphere's closed-form SHAKE and RATTLE equal Newton on the same g (with a mass)."""
    r = 1.5

    def g(q, out):
        out[0] = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] - r * r) / (2.0 * r)

    def jac(q, out):
        for i in range(3):
            out[0, i] = q[i] / r

    newton, closed = Constraint(g, jac, m=1, name="sphere_by_newton"), Sphere(r)
    rng = np.random.default_rng(4)
    mass = np.array([1.0, 2.0, 0.5])
    q = closed.project(rng.standard_normal((20, 3)))
    p = closed.rattle(q, rng.standard_normal((20, 3)), mass)
    q1, p1 = closed.drift(q, p, 0.2, mass=mass, steps=2)
    q2, p2 = newton.drift(q, p, 0.2, mass=mass, steps=2)
    np.testing.assert_allclose(q1, q2, rtol=0, atol=1e-11)
    np.testing.assert_allclose(p1, p2, rtol=0, atol=1e-10)
    assert closed.residual(q1).max() <= 1e-14 and newton.residual(q2).max() <= 1e-11


def test_resume_is_bit_for_bit():
    constraint, system, q0 = CASES["sphere"]
    kw = dict(h=0.1, gamma=1.0, kT=1.0, constraint=constraint)
    full = sdekit.simulate("BAOAB", system, n_steps=200, q0=q0, seed=5, **kw)
    half = sdekit.simulate("BAOAB", system, n_steps=100, q0=q0, seed=5, **kw)
    rest = sdekit.simulate("BAOAB", system, n_steps=100, resume=half.state, **kw)
    np.testing.assert_array_equal(full.q[-1], rest.q[-1])
    np.testing.assert_array_equal(full.p[-1], rest.p[-1])


def test_geodesic_steps_change_constrained_runs_only():
    """K sub-steps change a constrained trajectory (slightly) but not an unconstrained one."""
    constraint, system, q0 = CASES["sphere"]
    kw = dict(h=0.3, n_steps=50, q0=q0, seed=6)
    a = sdekit.simulate("BAOAB", system, constraint=constraint, **kw)
    b = sdekit.simulate(Scheme("BAOAB", geodesic_steps=4), system, constraint=constraint, **kw)
    assert 1e-8 < np.abs(a.q[-1] - b.q[-1]).max() < 0.5
    sys = Harmonic(1.0, dim=3)
    c = sdekit.simulate("BAOAB", sys, backend="numpy", **kw)
    d = sdekit.simulate(Scheme("BAOAB", geodesic_steps=4), sys, backend="numpy", **kw)
    np.testing.assert_allclose(c.q, d.q, rtol=1e-12, atol=1e-12)


def test_shake_failure_names_the_step():
    """A drift that leaves the sphere's reach (delta |p| > r): DivergenceError at step 1."""
    constraint, system, q0 = Sphere(1.0), FREE3, np.array([0.0, 0.0, 1.0])
    with pytest.raises(DivergenceError, match="SHAKE.*step 1") as info:
        sdekit.simulate("BAOAB", system, h=4.0, n_steps=5, q0=q0, p0=[1.0, 0.0, 0.0], kT=0.0,
                        seed=0, constraint=constraint)
    assert info.value.step == 1
    e = sdekit.ensemble("BAOAB", system, h=4.0, n_steps=3, n_paths=4, q0=q0,
                        p0=[[0.1, 0, 0], [1.0, 0, 0], [0.1, 0, 0], [0.0, 0.1, 0]], kT=0.0, seed=0,
                        constraint=constraint, on_divergence="mask")
    assert e.diverged.tolist() == [1]


# ------------------------------------------------------------------ invariant measures

def report(est, se, exact, what):
    """Print the comparison (shown with pytest -s)."""
    z = (np.asarray(est) - np.asarray(exact, dtype=float)) / np.asarray(se)
    print(f"\n{what}:\n  estimate {np.round(est, 5)}\n  +- SE    {np.round(se, 5)}\n"
          f"  exact    {np.round(np.asarray(exact, dtype=float), 5)}\n  z        {np.round(z, 2)}")


def kinetic(p):
    return (p * p).sum(axis=1)


@pytest.mark.statistical
def test_sphere_uniform_and_kinetic_temperature():
    """Unit sphere in R^3, U = 0: E[q] = 0, E[q_i^2] = 1/3, E[|p|^2] = 2 kT (2 tangent dofs)."""
    constraint, _, q0 = CASES["sphere"]
    f = lambda q, p: np.column_stack([q, q * q, kinetic(p)])
    est, se = path_averages(FREE3, constraint, q0, f, h=0.2, n_paths=4_000,
                            burn=150, chunks=10, every=10, seed=7)
    report(est, se, [0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 2.0], "sphere U=0: q, q^2, |p|^2")
    assert_within(est, se, [0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 2.0], what="sphere U=0: q, q^2, |p|^2")


@pytest.mark.statistical
def test_sphere_von_mises_fisher():
    """U = -kappa e_z.q on the unit sphere: E[q_z] = coth(kappa) - 1/kappa, E[q_x] = E[q_y] = 0,
    E[|p|^2] = 2 kT."""
    constraint, system, q0 = CASES["sphere"]
    f = lambda q, p: np.column_stack([q, kinetic(p)])
    est, se = path_averages(system, constraint, q0, f, h=0.1, n_paths=4_000, burn=200, chunks=10,
                            every=20, seed=8)
    exact = 1 / math.tanh(KAPPA) - 1 / KAPPA
    report(est, se, [0, 0, exact, 2.0], "von Mises-Fisher: q, |p|^2")
    assert_within(est, se, [0, 0, exact, 2.0], what="von Mises-Fisher: q, |p|^2")


@pytest.mark.statistical
def test_stiefel_uniform():
    """Stiefel(3, 2), U = 0 (uniform, Haar): E[W] = 0, E[W_ij^2] = 1/n, E[|P|^2] = np - p(p+1)/2."""
    constraint, system, q0 = CASES["stiefel"]
    f = lambda q, p: np.column_stack([q, q * q, kinetic(p)])
    est, se = path_averages(system, constraint, q0, f, h=0.2, n_paths=3_000, burn=150, chunks=8,
                            every=10, seed=9)
    report(est, se, [0] * 6 + [1 / 3] * 6 + [3.0], "Stiefel(3,2) U=0: W, W^2, |P|^2")
    assert_within(est, se, [0] * 6 + [1 / 3] * 6 + [3.0], what="Stiefel(3,2) U=0: W, W^2, |P|^2")


def ellipse_exact(kT=1.0):
    """E[x], E[x^2], E[y^2] under exp(-x/kT) times arc length on the ellipse (quadrature)."""
    ds = lambda t: math.hypot(A_ELL * math.sin(t), B_ELL * math.cos(t))
    w = lambda t, f: f(t) * math.exp(-A_ELL * math.cos(t) / kT) * ds(t)
    quad = lambda f: integrate.quad(w, 0, 2 * math.pi, args=(f,), epsabs=0, epsrel=1e-12, limit=200)[0]
    z = quad(lambda t: 1.0)
    return [quad(lambda t: A_ELL * math.cos(t)) / z, quad(lambda t: (A_ELL * math.cos(t)) ** 2) / z,
            quad(lambda t: (B_ELL * math.sin(t)) ** 2) / z]


@pytest.mark.statistical
def test_general_constraint_ellipse_against_quadrature():
    """Ellipse x^2/4 + y^2 = 1, U = x: E[x], E[x^2], E[y^2] against quadrature of
    exp(-U) in arc length (not in the angle), and E[|p|^2] = 1 (one tangent dof)."""
    constraint, system, q0 = CASES["ellipse"]
    f = lambda q, p: np.column_stack([q[:, 0], q[:, 0] ** 2, q[:, 1] ** 2, kinetic(p)])
    est, se = path_averages(system, constraint, q0, f, h=0.1, n_paths=4_000, burn=200, chunks=10,
                            every=20, seed=10)
    exact = ellipse_exact() + [1.0]
    report(est, se, exact, "ellipse, U = x: x, x^2, y^2, |p|^2")
    assert_within(est, se, exact, what="ellipse, U = x: x, x^2, y^2, |p|^2")
    # the test can tell arc length from the angle measure dt (E[x] = -2 I1(2)/I0(2) there)
    angle = -A_ELL * special.iv(1, A_ELL) / special.iv(0, A_ELL)
    assert abs(angle - exact[0]) > 10 * se[0]


@pytest.mark.statistical
def test_circle_slack_magnitude_constraint():
    """Two weights with slacks on circles of radius 1, U = -w_1: w_1 = cos(theta) with
    theta ~ exp(cos theta) (E[w_1] = I1(1)/I0(1)), w_2 uniform on the circle (E[w_2^2] = 1/2),
    E[|p|^2] = 2 (one tangent dof per circle)."""
    constraint, system, q0 = CASES["circle"]
    f = lambda q, p: np.column_stack([q[:, 0], q[:, 1], q[:, 1] ** 2, kinetic(p)])
    est, se = path_averages(system, constraint, q0, f, h=0.1, n_paths=4_000, burn=200, chunks=10,
                            every=20, seed=11)
    exact = [special.iv(1, 1.0) / special.iv(0, 1.0), 0.0, 0.5, 2.0]
    report(est, se, exact, "circle: w1, w2, w2^2, |p|^2")
    assert_within(est, se, exact, what="circle: w1, w2, w2^2, |p|^2")


# ------------------------------------------------------------------ bad input

def test_bad_constraint_arguments():
    for bad, name in [(lambda: Sphere(0.0), "radius"), (lambda: Sphere(-1.0), "radius"),
                      (lambda: Sphere(float("nan")), "radius"), (lambda: Circle(0), "radius"),
                      (lambda: Stiefel(2, 3), "p"), (lambda: Stiefel(0, 0), "n"),
                      (lambda: Stiefel(3, 2, tol=0), "tol"),
                      (lambda: Constraint(g_ellipse, jac_ellipse, m=0), "m"),
                      (lambda: Constraint(g_ellipse, jac_ellipse, m=2, dim=2), "m"),
                      (lambda: Constraint(None, jac_ellipse, m=1), "g"),
                      (lambda: Scheme("BAOAB", geodesic_steps=0), "geodesic_steps"),
                      (lambda: Scheme("EM", geodesic_steps=2), "geodesic_steps")]:
        with pytest.raises(ValueError, match=f"^{name}:"):
            bad()


def test_bad_run_arguments():
    constraint, system, q0 = CASES["sphere"]
    kw = dict(h=0.1, n_steps=2, seed=0)
    with pytest.raises(ValueError, match=r"^q0: not on the constraint manifold.*residual"):
        sdekit.simulate("BAOAB", system, q0=[0.0, 0.0, 1.1], constraint=constraint, **kw)
    with pytest.raises(ValueError, match=r"^q0: .*path 1"):
        sdekit.ensemble("BAOAB", system, n_paths=2, q0=[[0, 0, 1.0], [0, 1e-3, 1.0]], constraint=constraint, **kw)
    with pytest.raises(ValueError, match="^q0:"):  # the default q0 = 0 is off the sphere
        sdekit.simulate("BAOAB", system, constraint=constraint, **kw)
    with pytest.raises(ValueError, match="^constraint:.*6 coordinates"):
        sdekit.simulate("BAOAB", system, q0=q0, constraint=STIEFEL, **kw)
    with pytest.raises(ValueError, match="^constraint:.*even"):
        sdekit.simulate("BAOAB", system, q0=q0, constraint=Circle(1.0), **kw)
    with pytest.raises(ValueError, match="^constraint:"):
        sdekit.simulate("BAOAB", system, q0=q0, constraint=Sphere(1.0, dim=4), **kw)
    with pytest.raises(ValueError, match="^constraint:"):
        sdekit.simulate("BAOAB", custom(zero_gradient, dim=1), q0=[1.0], constraint=Sphere(1.0), **kw)
    with pytest.raises(ValueError, match="^constraint:.*overdamped"):
        sdekit.simulate("EM", system, q0=q0, constraint=constraint, **kw)
    with pytest.raises(ValueError, match="^constraint:.*float64"):
        sdekit.simulate("BAOAB", system, q0=q0, constraint=constraint, dtype="float32", **kw)
    with pytest.raises(ValueError, match="^constraint:"):
        sdekit.simulate("BAOAB", system, q0=q0, constraint="sphere", **kw)
    with pytest.raises(ValueError, match="^q:"):
        constraint.residual(np.zeros((3, 1)))


def test_p0_is_projected_onto_the_tangent_space():
    constraint, system, q0 = CASES["sphere"]
    run = sdekit.simulate("BAOAB", system, h=0.1, n_steps=0, q0=q0, p0=[1.0, 2.0, 3.0], seed=0,
                          constraint=constraint)
    np.testing.assert_allclose(run.p[0], [1.0, 2.0, 0.0], atol=1e-15)


def test_scheme_geodesic_steps_is_part_of_the_scheme():
    k1, k5 = Scheme("BAOAB"), Scheme("BAOAB", geodesic_steps=5)
    assert k1.geodesic_steps == 1 and k5.geodesic_steps == 5
    assert k5 != k1 and hash(k5) != hash(k1) and k5 == Scheme("BAOAB", geodesic_steps=5)
    assert repr(k5) == "Scheme('BAOAB', geodesic_steps=5)" and repr(k1) == "Scheme('BAOAB')"
    assert "5 geodesic sub-steps" in k5.describe() and "geodesic" not in k1.describe()
    assert Scheme(k5.to_json()) == k5 and Scheme(k5) == k5 and Scheme(k5, geodesic_steps=1) == k1
    assert k5.force_evaluations == 1


def test_zero_drift_refused():
    with pytest.raises(ValueError, match="^delta:"):
        Sphere(1.0).drift([0.0, 0.0, 1.0], [1.0, 0.0, 0.0], 0.0)
