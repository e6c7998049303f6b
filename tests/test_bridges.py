"""Schrödinger-bridge samplers (sdekit.bridges): exact laws, the closed-form entropic OT plan,
orders of convergence, sampling against the recursion.

Exact where exact: the schedule's integrals, the I2SB marginal, the posterior sampler given
the true x0 (every grid time, any N), the entropic OT plan (against an independent
Sinkhorn on a quadrature grid). Statistical where sampled: 4.5 standard errors from the
data, fixed seeds.
"""
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import integrate, special

from conftest import assert_within

from sdekit import bridges as SB

BR = SB.Bridge()
M0, A = np.array([0.5, -1.0]), np.array([[2.0, 0.6], [0.6, 0.5]])
M1, B = np.array([0.0, 0.3]), np.array([[1.0, -0.2], [-0.2, 0.7]])
PAIR = SB.GaussianPair(BR, M0, A, M1, B)


def _block(mom, rows):
    return SB.Moments(mom.mean[rows], mom.cov[rows, rows])


# ----------------------------------------------------------------------------- schedule and marginals

def test_schedule_is_i2sb_s_discrete_schedule_in_the_limit():
    """I2SB: betas = linspace(1e-4 ** .5, (0.3 / n) ** .5, n) ** 2, first half mirrored; as rates
    (n betas) on the grid t = k / n they approach beta(t), and their sums sigma_t^2."""
    n = 20_000
    betas = np.linspace(1e-4 ** 0.5 * math.sqrt(1000 / n), (0.3 / n) ** 0.5, n) ** 2
    betas = np.concatenate([betas[:n // 2], np.flip(betas[:n // 2])])
    sch = SB.I2SBSchedule()
    t = np.arange(n) / n
    assert np.abs(n * betas - [sch.beta(u) for u in t]).max() < 1e-4
    assert abs(betas.sum() - sch.total) < 1e-4


@pytest.mark.parametrize("bmin,bmax", [(0.1, 0.3), (0.5, 0.5), (2.0, 0.2)])
def test_schedule_integral_is_the_quadrature_of_beta(bmin, bmax):
    sch = SB.I2SBSchedule(bmin, bmax)
    for t in (0.0, 0.13, 0.5, 0.71, 1.0):
        ref = integrate.quad(sch.beta, 0.0, t, points=[0.5] if t > 0.5 else None, epsabs=1e-14)[0]
        assert abs(sch.sigma2(t) - ref) < 1e-13
    assert sch.sigma2(1.0) == sch.total
    peak = ((math.sqrt(bmin) + math.sqrt(bmax)) / 2) ** 2
    assert sch.beta(0.0) == pytest.approx(bmin, rel=1e-14) and sch.beta(0.5) == pytest.approx(peak, rel=1e-14)
    if bmin == bmax:
        assert sch.sigma2(0.3) == pytest.approx(bmin * 0.3, rel=1e-14)


def test_i2sb_marginal_is_the_gaussian_product():
    """I2SB Eq. 11: N(x0, sigma_t^2) times N(x1, sigma_bar_t^2), normalised."""
    t = 0.37
    s2 = integrate.quad(BR.schedule.beta, 0, t)[0]
    sb2 = integrate.quad(BR.schedule.beta, t, 1, points=[0.5])[0]
    a, b, v = BR.coefficients(t)
    assert a == pytest.approx(sb2 / (s2 + sb2), rel=1e-12)
    assert b == pytest.approx(s2 / (s2 + sb2), rel=1e-12)
    assert v == pytest.approx(s2 * sb2 / (s2 + sb2), rel=1e-12)
    assert BR.coefficients(0.0) == (1.0, 0.0, 0.0) and BR.coefficients(1.0) == (0.0, 1.0, 0.0)


# ----------------------------------------------------------------------------- exact samplers

@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), bmin=st.floats(0.05, 3.0), bmax=st.floats(0.05, 3.0),
       coupling=st.sampled_from(["schrodinger", "independent"]))
def test_posterior_given_x0_is_exact_at_every_grid_time(n, bmin, bmax, coupling):
    """Given the true x0 the posterior step is the exact bridge transition: the law of
    (x0, x1, x_n) equals the bridge's at every t_n, to rounding, for any N; the OT-ODE then
    follows the noise-free interpolant exactly."""
    br = SB.Bridge(SB.I2SBSchedule(bmin, bmax))
    pair = SB.GaussianPair(br, M0, A, M1, B, coupling=coupling)
    ts = SB.time_grid(n)
    for sampler, noise in ((SB.Posterior(br), True), (SB.OTODE(br), False)):
        _, path = SB.exact_output_moments(sampler, pair, n, predictor="pinned", return_path=True)
        for t, mom in zip(ts[1:], path):
            ref = pair.state_moments(t, noise=noise)
            np.testing.assert_allclose(mom.mean, ref.mean, rtol=0, atol=1e-12)
            np.testing.assert_allclose(mom.cov, ref.cov, rtol=0, atol=1e-11)
    out = _block(path[-1], slice(4, 6))
    np.testing.assert_allclose(out.cov, A, atol=1e-11)          # x_out = x0


def test_posterior_with_the_perfect_predictor_drops_the_conditional_variance():
    """With x0_hat = E[x0 | x_{n+1}] one posterior step from the exact law at t_{n+1} misses
    exactly (1 - s_n/s_{n+1})^2 Cov(x0 | x_{n+1}) of the exact covariance at t_n."""
    t, t_prev = 0.3, 0.2
    exact = PAIR.state_moments(t)
    pred = SB.GaussianPredictor(PAIR)
    P, c = pred.affine(t)
    a, b, v = BR.posterior(t_prev, t)
    m, C = exact.mean[4:], exact.cov[4:, 4:]
    out = (a * P + b * np.eye(2)) @ C @ (a * P + b * np.eye(2)).T + v * np.eye(2)
    cond = A - exact.cov[:2, 4:] @ np.linalg.solve(C, exact.cov[4:, :2])   # Cov(x0 | x_t)
    np.testing.assert_allclose(out + a * a * cond, PAIR.state_moments(t_prev).cov[4:, 4:], atol=1e-13)
    assert np.linalg.eigvalsh(cond).min() > 1e-3                        # so the sampler is not exact
    np.testing.assert_allclose((a * P + b * np.eye(2)) @ m + a * c, PAIR.state_moments(t_prev).mean[4:],
                               atol=1e-13)                              # the mean is exact


# ----------------------------------------------------------------------------- entropic OT in closed form

def _sinkhorn_cross_cov(x, w0, y, w1, eps, tol=1e-11, max_iter=5000):
    """Log-domain Sinkhorn for cost |x - y|^2 and eps KL, on quadrature points, run until the
    plan's second marginal is right to ``tol``; the plan's cross-covariance (independent of
    the closed form)."""
    K = -((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / eps
    lw0, lw1 = np.log(w0), np.log(w1)
    f, g = np.zeros(len(x)), np.zeros(len(y))
    for _ in range(max_iter):
        f = lw0 - special.logsumexp(K + g[None, :], axis=1)
        g_new = lw1 - special.logsumexp(K + f[:, None], axis=0)
        done = np.abs(g_new - g).max() < tol
        g = g_new
        if done:
            break
    else:
        raise AssertionError(f"Sinkhorn did not converge in {max_iter} iterations")
    P = np.exp(K + f[:, None] + g[None, :])
    assert abs(P.sum(0) - w1).max() < 1e-9 and abs(P.sum(1) - w0).max() < 1e-9
    mx, my = w0 @ x, w1 @ y
    return (x - mx).T @ P @ (y - my)


def _grid(mean, cov, n):
    """A uniform grid on +-6.5 sd of a Gaussian, normalised weights."""
    L = np.linalg.cholesky(cov)
    u = np.linspace(-6.5, 6.5, n)
    U = np.stack(np.meshgrid(*[u] * len(mean), indexing="ij"), -1).reshape(-1, len(mean))
    w = np.exp(-0.5 * (U ** 2).sum(-1))
    return mean + U @ L.T, w / w.sum()


@pytest.mark.parametrize("d,eps", [(1, 0.38), (1, 2.0), (2, 0.8)])
def test_entropic_ot_cross_covariance_matches_sinkhorn(d, eps):
    a, b = (np.array([[1.7]]), np.array([[0.6]])) if d == 1 else (A, B)
    n = 201 if d == 1 else 21
    x, w0 = _grid(np.zeros(d), a, n)
    y, w1 = _grid(np.ones(d), b, n)
    ref = _sinkhorn_cross_cov(x, w0, y, w1, eps)
    np.testing.assert_allclose(SB.entropic_ot_cross_covariance(a, b, eps), ref, atol=1e-8 if d == 1 else 1e-5)


spd = st.tuples(st.floats(0.2, 3.0), st.floats(0.2, 3.0), st.floats(-0.9, 0.9)).map(
    lambda v: np.array([[v[0], v[2] * math.sqrt(v[0] * v[1])], [v[2] * math.sqrt(v[0] * v[1]), v[1]]]))


@settings(max_examples=40, deadline=None)
@given(a=spd, b=spd, eps=st.floats(0.01, 20.0))
def test_entropic_plan_precision_has_the_cost_in_its_off_diagonal_block(a, b, eps):
    """The plan's density is exp((f(x) + g(y) - |x - y|^2)/eps): its precision's (x, y)
    block is -(2/eps) I, and its marginals are the given laws."""
    C = SB.entropic_ot_cross_covariance(a, b, eps)
    J = np.block([[a, C], [C.T, b]])
    assert np.linalg.eigvalsh(J).min() > 0
    prec = np.linalg.inv(J)
    np.testing.assert_allclose(prec[:2, 2:], -(2.0 / eps) * np.eye(2), atol=1e-7 * max(1.0, 2.0 / eps))


def test_entropic_plan_tends_to_the_monge_map():
    Ah = SB._sqrtm(A)
    monge = Ah @ SB._sqrtm(Ah @ B @ Ah) @ np.linalg.inv(Ah)       # Cov(x, T x), T the OT map
    np.testing.assert_allclose(SB.entropic_ot_cross_covariance(A, B, 1e-7), monge, atol=1e-6)
    assert np.abs(SB.entropic_ot_cross_covariance(A, B, 1e7)).max() < 1e-6
    sb = SB.schrodinger_coupling(M0, A, M1, B, BR.S)                  # eps = 2S: the pair's coupling
    np.testing.assert_array_equal(sb.cov, PAIR.joint().cov)
    np.testing.assert_array_equal(sb.mean, np.concatenate([M0, M1]))


# ----------------------------------------------------------------------------- orders and the SB limit

@pytest.mark.parametrize("sampler,order", [(SB.EulerMaruyama(BR), 1.0), (SB.Splitting(BR, "OBO"), 1.0),
                                           (SB.Splitting(BR, "OBO", kick="heun"), 2.0)])
def test_samplers_converge_to_the_schrodinger_bridge_at_their_order(sampler, order):
    """With the perfect predictor the bridge SDE is the Schrödinger bridge between the
    Gaussians: the output coupling (x_out, x1) tends to the closed-form static SB."""
    r = SB.convergence_study(sampler, PAIR, [32, 64, 128, 256])
    assert np.all(np.diff(np.log(r["w2_coupling"])) < 0) and np.all(np.diff(np.log(r["w2"])) < 0)
    assert abs(r["order"] - order) < 0.05, r["order"]
    slope = np.log2(r["w2_coupling"][-2] / r["w2_coupling"][-1])
    assert abs(slope - order) < 0.05, slope
    assert r["w2_coupling"][-1] < 5e-3


def test_ot_ode_reaches_the_marginal_but_not_the_schrodinger_coupling():
    r = SB.convergence_study(SB.OTODE(BR), PAIR, [64, 128, 256])
    assert abs(r["order"] - 1.0) < 0.05 and r["w2"][-1] < 2e-3
    assert r["w2_coupling"].min() > 0.1          # a deterministic map of x1, not the entropic plan


def test_posterior_with_perfect_predictor_converges_slower_than_first_order():
    """Its per-step variance deficit (1 - s_n/s_{n+1})^2 Cov(x0|x_{n+1}) ~ h^2/t sums to h log(1/h)."""
    r = SB.convergence_study(SB.Posterior(BR), PAIR, [128, 256, 512, 1024])
    assert 0.75 < r["order"] < 0.95
    ratio = r["w2"] * r["steps"]                  # W2 / h grows like log N
    assert np.all(np.diff(ratio) > 0)


# ----------------------------------------------------------------------------- sampling vs the recursion

def _moments_se(X):
    """Sample mean and covariance with their standard errors, from the data."""
    n = len(X)
    m = X.mean(0)
    D = X - m
    prods = D[:, :, None] * D[:, None, :]
    return m, X.std(0, ddof=1) / math.sqrt(n), prods.mean(0), prods.std(0, ddof=1) / math.sqrt(n)


@pytest.mark.parametrize("sampler,predictor", [(SB.EulerMaruyama(BR), "markov"), (SB.Splitting(BR, "OBO"), "markov"),
                                               (SB.Posterior(BR), "markov"), (SB.Splitting(BR, "OBO"), "pinned")])
def test_sampling_agrees_with_the_exact_recursion(sampler, predictor):
    rng = np.random.default_rng(7)
    n, N = 20_000, 6
    m, J = PAIR.joint()
    xy = m + rng.standard_normal((n, 4)) @ np.linalg.cholesky(J).T
    x0, x1 = xy[:, :2], xy[:, 2:]
    predict = SB.GaussianPredictor(PAIR) if predictor == "markov" else (lambda x, t: x0)
    res = SB.sample(sampler, predict, x1, N, seed=11)
    assert res.evaluations == N * sampler.evals_per_step
    exact = SB.exact_output_moments(sampler, PAIR, N, predictor=predictor)
    X = np.hstack([x0, x1, res.x])
    mean, mse, cov, cse = _moments_se(X)
    assert_within(mean[4:], mse[4:], exact.mean[4:], what=f"{sampler.label} mean")
    assert_within(cov[4:, :], cse[4:, :], exact.cov[4:, :], what=f"{sampler.label} cov with (x0, x1, x)")


# ----------------------------------------------------------------------------- distances and input

def test_empirical_w2_is_exact_on_equal_size_clouds():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 1)), 0.5 + 2 * rng.standard_normal((300, 1))
    sorted_w2 = math.sqrt(np.mean((np.sort(a[:, 0]) - np.sort(b[:, 0])) ** 2))   # 1-D: monotone plan
    assert SB.empirical_w2(a, b) == pytest.approx(sorted_w2, rel=1e-12)


def test_empirical_w2_equals_pot_emd2():
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((200, 2)), rng.standard_normal((200, 2)) @ np.array([[1, 0.5], [0, 1]])
    w = np.full(200, 1 / 200)
    assert SB.empirical_w2(a, b) == pytest.approx(math.sqrt(ot.emd2(w, w, ot.dist(a, b))), rel=1e-9)


def test_torch_predictor_uses_i2sb_parametrization():
    torch = pytest.importorskip("torch")

    class Const(torch.nn.Module):
        def forward(self, x, t):
            return torch.ones_like(x) * t

    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    pred = SB.TorchPredictor(Const().double(), BR)
    np.testing.assert_allclose(pred(x, 0.4), x - math.sqrt(BR.sigma2(0.4)) * 0.4, rtol=1e-14)


def test_splitting_is_composed_from_the_letters():
    sm = SB.Splitting(BR, "OBO")
    assert [(l, f, round(a, 12), round(b, 12)) for l, f, a, b in sm.substep_times(1.0, 0.1)] == \
        [("O", 0.5, 1.0, 0.95), ("B", 1.0, 0.95, 0.95), ("O", 0.5, 0.95, 0.9)]
    assert sm.n_noise(2) == 4 and sm.evals_per_step == 1


@pytest.mark.parametrize("call,name", [
    (lambda: SB.Splitting(BR, "BOB"), "scheme"),
    (lambda: SB.Splitting(BR, "BAB"), "scheme"),
    (lambda: SB.Splitting(BR, "OBO", kick="rk4"), "kick"),
    (lambda: SB.Bridge(schedule=0.3), "schedule"),
    (lambda: SB.I2SBSchedule(beta_min=-1.0), "beta_min"),
    (lambda: SB.GaussianPair(BR, M0, -A, M1, B), "cov0"),
    (lambda: SB.GaussianPair(BR, M0, A, [0.0], B), "mean1"),
    (lambda: SB.GaussianPair(BR, M0, A, M1, B, coupling="ot"), "coupling"),
    (lambda: SB.GaussianPair(BR, M0, A, M1, B, coupling=10 * np.eye(2)), "coupling"),
    (lambda: SB.exact_output_moments(SB.EulerMaruyama(BR), PAIR, 4, predictor="oracle"), "predictor"),
    (lambda: SB.exact_output_moments(SB.EulerMaruyama(BR), PAIR, 0), "n_steps"),
    (lambda: SB.sample("EM", None, np.zeros((2, 2)), 4), "sampler"),
    (lambda: SB.entropic_ot_cross_covariance(A, B, 0.0), "eps"),
    (lambda: SB.empirical_w2(np.zeros((3, 2)), np.zeros((4, 2))), "b"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        call()


def test_sdekit_bridges_is_a_lazy_submodule_without_torch():
    done = subprocess.run([sys.executable, "-c",
                           "import sys, sdekit; a = 'sdekit.bridges' in sys.modules; m = sdekit.bridges; "
                           "print(a, m is sys.modules['sdekit.bridges'], 'bridges' in dir(sdekit), "
                           "'torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True", "False"]
