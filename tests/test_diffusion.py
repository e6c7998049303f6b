"""Diffusion-model samplers through the splitting core (sdekit.diffusion).

Exactness harness on Gaussian data: every sampler's output law is computed exactly by
moment recursions (probing the sampler's own step), its error against the exact
marginal p_eps converges at the theoretical rate, sampling agrees with the recursion,
and a statistical test against the exact marginal fails with a broken O letter.
"""
import numpy as np
import pytest
from scipy import stats

from conftest import assert_within

import sdekit.operators as ops
from sdekit import diffusion as D
from sdekit import letters
from sdekit import linear

MU = np.array([0.5, -1.0])
SIGMA = np.array([[2.0, 0.6], [0.6, 0.5]])
VP, CLD = D.VPSDE(), D.CLD()


# ----------------------------------------------------------------------------- forward laws

def test_vp_marginal_closed_form():
    t = 0.37
    b = 0.1 * t + 0.5 * (20.0 - 0.1) * t * t
    a = np.exp(-b / 2)
    m, C = D.marginal(VP, t, MU, SIGMA)
    np.testing.assert_allclose(m, a * MU, rtol=1e-14)
    np.testing.assert_allclose(C, a * a * SIGMA + (1 - a * a) * np.eye(2), rtol=1e-13)
    # the prior is reached at T = 1 to within alpha_1^2 ~ 4e-5
    m1, C1 = D.marginal(VP, 1.0, MU, SIGMA)
    assert np.abs(C1 - np.eye(2)).max() < 1e-4 and np.abs(m1).max() < 1e-2


def test_cld_transition_matches_van_loan_and_linear_module():
    """CLD is sdekit's underdamped Langevin (K = 1, mass M, friction Gamma/M, kT = 1)
    in intrinsic time: the closed-form 2x2 transition equals Van Loan's block exponential
    and sdekit.linear.exact_moments."""
    for b in (1e-3, 0.05, 0.7, 2.0):
        P, Q = D._van_loan(CLD.F, CLD.GG, b)
        P2, Q2 = D._van_loan_expm(CLD.F, CLD.GG, b)
        np.testing.assert_allclose(P, P2, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(Q, Q2, rtol=1e-9, atol=1e-15)
    t = 0.3
    m, C = D.marginal(CLD, t, MU, SIGMA)
    m0 = np.concatenate([MU, np.zeros(2)])
    C0 = np.block([[SIGMA, np.zeros((2, 2))], [np.zeros((2, 2)), 0.04 * 0.25 * np.eye(2)]])
    ref = linear.exact_moments(np.eye(2), 4.0 * t, gamma=CLD.Gamma / CLD.mass, kT=1.0,
                               mean0=m0, cov0=C0, mass=CLD.mass)
    np.testing.assert_allclose(m, ref.mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(C, ref.cov, rtol=1e-11, atol=1e-14)


def test_gaussian_score_is_the_gradient_of_log_density():
    rng = np.random.default_rng(0)
    for sde in (VP, CLD):
        t = 0.2
        m, C = D.marginal(sde, t, MU, SIGMA)
        u = m + rng.standard_normal((3, len(m)))
        s = D.GaussianScore(sde, MU, SIGMA)(u, t)
        h = 1e-6
        grad = np.stack([(stats.multivariate_normal(m, C).logpdf(u + h * e)
                          - stats.multivariate_normal(m, C).logpdf(u - h * e)) / (2 * h)
                         for e in np.eye(len(m))], axis=1)
        np.testing.assert_allclose(s, grad[:, -2:], rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- orders

VP_STEPS = [64, 128, 256, 512, 1024]
CASES = [
    ("VP EM", lambda: D.EulerMaruyama(VP), 1, VP_STEPS),
    ("VP BOB", lambda: D.Splitting(VP, "BOB"), 1, VP_STEPS),
    ("VP OBO", lambda: D.Splitting(VP, "OBO"), 1, VP_STEPS),
    ("VP BOB drift", lambda: D.Splitting(VP, "BOB", split="drift"), 1, VP_STEPS),
    ("VP OBO heun-kick", lambda: D.Splitting(VP, "OBO", kick="heun"), 2, VP_STEPS),
    ("VP ODE euler", lambda: D.ProbabilityFlow(VP, "euler"), 1, VP_STEPS),
    ("VP ODE heun", lambda: D.ProbabilityFlow(VP, "heun"), 2, VP_STEPS),
    ("CLD EM", lambda: D.EulerMaruyama(CLD), 1, VP_STEPS),
    ("CLD SSCS", lambda: D.SSCS(CLD), 1, VP_STEPS),
    ("CLD SSCS heun-kick", lambda: D.Splitting(CLD, "OBO", kick="heun"), 2, VP_STEPS),
    ("CLD ODE heun", lambda: D.ProbabilityFlow(CLD, "heun"), 2, VP_STEPS),
]


@pytest.mark.parametrize("name,make,theory,steps", CASES, ids=[c[0] for c in CASES])
def test_exact_covariance_error_converges_at_theoretical_rate(name, make, theory, steps):
    """Discretization error ||C_N - C_eps||_F (exact start p_T, exact recursion): the
    fitted order (log e = a + p log h + c h) has a 95% CI containing the theory. (Exact
    errors have no noise: when the model fits to 1e-5 the CI can be narrower than the
    remaining h^2 terms, so |p - theory| < 0.01 is accepted as well.)

    The symmetric splittings with the Euler kick are FIRST order: the kick
    x += delta F(x) solves a piece whose force depends on the kicked variable with an
    O(delta^2) local error. Heun's rule on the kick restores order 2."""
    r = D.convergence_study(make(), MU, SIGMA, steps, with_data=False)
    assert np.all(np.diff(r["cov_err"]) < 0), r["cov_err"]
    lo, hi = r["ci_corr"]
    assert lo <= theory <= hi or abs(r["order_corr"] - theory) < 0.01, f"{name}: order {r['order_corr']:.3f} CI [{lo:.3f}, {hi:.3f}] vs {theory}"


def test_probability_flow_maps_prior_to_data_law():
    """Heun on the probability-flow ODE from the prior N(0, I): the output law's KL to
    p_eps shrinks like h^4 (covariance error ~ h^2), down to the prior mismatch at T."""
    sm = D.ProbabilityFlow(VP, "heun")
    tg = D.target_moments(VP, MU, SIGMA)
    kls = [D.gaussian_kl(D.exact_output_moments(sm, MU, SIGMA, n, start="exact"), tg) for n in (32, 64, 128, 256)]
    slopes = -np.diff(np.log(kls)) / np.log(2)
    assert np.all(np.abs(slopes - 4) < 0.3), slopes
    prior = D.exact_output_moments(sm, MU, SIGMA, 256, start="prior")
    assert D.gaussian_kl(prior, tg) < 1e-4
    assert D.gaussian_w2(prior, D.Moments(MU, SIGMA)) < 2e-2


def test_splitting_is_exact_for_standard_normal_data():
    """VP with N(0, I) data: the residual score s + x vanishes, the prior-split O letter is
    the exact reverse flow, and the splitting is exact for any N (to rounding)."""
    mu, C = np.zeros(2), np.eye(2)
    for n in (3, 17):
        m = D.exact_output_moments(D.Splitting(VP, "BOB"), mu, C, n, start="exact")
        tg = D.target_moments(VP, mu, C)
        np.testing.assert_allclose(m.cov, tg.cov, atol=1e-13)


def test_predictor_corrector_converges_slower_than_em():
    """The Langevin corrector's step (2 alpha (snr sigma_t)^2) does not shrink with h: the
    corrector adds an error that grows with snr and decays slower than h (observed
    local order ~0.6 between N = 1024 and 4096, against 1.0 for EM = snr 0)."""
    tg = D.target_moments(VP, MU, SIGMA)

    def err(snr, n):
        m = D.exact_output_moments(D.PredictorCorrector(VP, snr=snr), MU, SIGMA, n, start="exact")
        return np.linalg.norm(m.cov - tg.cov)

    e = {snr: (err(snr, 1024), err(snr, 4096)) for snr in (0.0, 0.08, 0.16)}
    slope = {snr: np.log(a / b) / np.log(4) for snr, (a, b) in e.items()}
    assert abs(slope[0.0] - 1) < 0.02 and slope[0.16] < 0.8, slope
    assert e[0.0][1] < e[0.08][1] < e[0.16][1], e


# ----------------------------------------------------------------------------- sampling

def _moment_z(x, moments):
    """z-scores of the sample mean and covariance entries against exact moments."""
    n = len(x)
    xc = x - x.mean(axis=0)
    prod = xc[:, :, None] * xc[:, None, :]
    cov = prod.mean(axis=0)
    z_m = np.abs(x.mean(axis=0) - moments.mean) / (x.std(axis=0, ddof=1) / np.sqrt(n))
    z_c = np.abs(cov - moments.cov) / (prod.std(axis=0, ddof=1) / np.sqrt(n))
    return z_m, z_c


SIM = [
    ("VP EM", lambda: D.EulerMaruyama(VP)),
    ("VP BOB", lambda: D.Splitting(VP, "BOB")),
    ("VP PC", lambda: D.PredictorCorrector(VP, n_corrector=2)),
    ("VP ODE", lambda: D.ProbabilityFlow(VP, "heun")),
    ("CLD SSCS", lambda: D.SSCS(CLD)),
    ("CLD EM", lambda: D.EulerMaruyama(CLD)),
]


@pytest.mark.parametrize("name,make", SIM, ids=[c[0] for c in SIM])
def test_sampling_agrees_with_exact_recursion(name, make):
    """Consistency of the harness: samples of the sampler (coarse N, large bias) agree with
    its exact output law within 4.5 standard errors computed from the samples. (Not
    marked statistical: the recursion runs the same letters, so a broken letter
    breaks both alike -- see the next test for that.)"""
    sm, n_steps = make(), 12 if isinstance(make().sde, D.CLD) else 24
    score = D.GaussianScore(sm.sde, MU, SIGMA)
    res = D.sample(sm, score, 20_000, n_steps, 2, seed=1)
    ex = D.exact_output_moments(sm, MU, SIGMA, n_steps)
    z_m, z_c = _moment_z(res.u, ex)
    assert np.all(z_m < 4.5) and np.all(z_c < 4.5), (z_m, z_c)
    assert res.evaluations == n_steps * sm.evals_per_step


def _statistical_check(n_paths=200_000, n_steps=32, seed=3):
    """OBO with Heun kicks, N = 32 steps, against the EXACT marginal p_eps (independent of
    the letters): returns the z-scores, the sampler's exact output law and p_eps."""
    sm = D.Splitting(VP, "OBO", kick="heun")
    res = D.sample(sm, D.GaussianScore(VP, MU, SIGMA), n_paths, n_steps, 2, seed=seed)
    tg = D.target_moments(VP, MU, SIGMA)
    z_m, z_c = _moment_z(res.x, tg)
    ex = D.exact_output_moments(sm, MU, SIGMA, n_steps)
    return z_m, z_c, ex, tg


@pytest.mark.statistical
def test_sampled_law_matches_exact_data_marginal():
    """200 000 samples of OBO-heun (N = 32) match p_eps within 4.5 SE; the exact
    discretization bias at N = 32 is below 0.3 SE, so the test can see a broken letter."""
    z_m, z_c, ex, tg = _statistical_check()
    se_var = np.sqrt(2.0 / 200_000) * np.diag(tg.cov)
    assert np.all(np.abs(np.diag(ex.cov - tg.cov)) < 0.3 * se_var)
    assert_within(z_c.max(), 1.0, 0.0, what="max z of the covariance entries")
    assert_within(z_m.max(), 1.0, 0.0, what="max z of the mean")


def test_statistical_test_fails_with_broken_O_letter(monkeypatch):
    """Euler damping in the O letter (c = 1 - G delta, exact noise): the same check fails."""
    exact = ops.ou_coefficients
    monkeypatch.setattr(ops, "ou_coefficients", lambda G, delta, sigma: (1.0 - G * delta, exact(G, delta, sigma)[1]))
    z_m, z_c, ex, tg = _statistical_check()
    assert max(z_c.max(), z_m.max()) > 4.5, (z_m, z_c)
    print(f"broken O: max z cov {z_c.max():.1f}, mean {z_m.max():.1f}; exact bias of var(x1) "
          f"{ex.cov[0, 0] - tg.cov[0, 0]:.4f}")


# ----------------------------------------------------------------------------- time-dependent letters

@pytest.mark.parametrize("split", ["prior", "drift"])
@pytest.mark.parametrize("word", ["BOB", "OBO"])
def test_constant_schedule_is_bitwise_the_time_independent_letters(split, word):
    """With beta constant, the time-dependent O letter (step-averaged beta) and the kicks are
    bitwise the letters of sdekit.operators with friction -+beta/2, sigma = sqrt(beta)."""
    beta, n_steps, n = 3.0, 7, 5
    sde = D.VPSDE(beta_min=beta, beta_max=beta)
    score = D.GaussianScore(sde, MU, SIGMA)
    got = D.sample(D.Splitting(sde, word, split=split), score, n, n_steps, 2, seed=11).x
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, 2))
    ts = D.time_grid(n_steps)
    lam = 1.0 if split == "prior" else 0.0
    friction = beta / 2 if split == "prior" else -beta / 2
    force = (lambda x, t: beta * (score(x, t) + x)) if lam else (lambda x, t: beta * score(x, t))
    for k in range(n_steps):
        t, h = ts[k], ts[k] - ts[k + 1]
        if word == "BOB":
            z = rng.standard_normal((n, 2))
            x = ops.kick(x, force(x, t), h / 2)
            c, s = ops.ou_coefficients(friction, h, np.sqrt(beta))
            x = ops.ou(x, c, s, 1.0, z)
            x = ops.kick(x, force(x, t - h), h / 2)
        else:
            z = rng.standard_normal((n, 4))
            c, s = ops.ou_coefficients(friction, h / 2, np.sqrt(beta))
            x = ops.ou(x, c, s, 1.0, z[:, :2])
            x = ops.kick(x, force(x, t - h / 2), h)
            x = ops.ou(x, c, s, 1.0, z[:, 2:])
    assert np.array_equal(got, x)


def test_substep_times_follow_the_O_clock():
    sm = D.Splitting(VP, [("O", 0.25), ("B", 0.5), ("O", 0.75), ("B", 0.5)])
    times = sm.substep_times(1.0, 0.1)
    assert [(l, round(a, 12), round(b, 12)) for l, f, a, b in times] == [
        ("O", 1.0, 0.975), ("B", 0.975, 0.975), ("O", 0.975, 0.9), ("B", 0.9, 0.9)]


def test_linear_schedule_mean_is_exact():
    s = D.LinearSchedule(0.1, 20.0)
    t0, t1 = 0.2, 0.7
    B = lambda t: 0.1 * t + 0.5 * 19.9 * t * t
    assert s.integral(t0, t1) == pytest.approx(B(t1) - B(t0), rel=1e-14)


# ----------------------------------------------------------------------------- adapters and validation

def test_torch_score_gives_the_same_samples():
    torch = pytest.importorskip("torch")
    score = D.GaussianScore(VP, MU, SIGMA)

    class Exact(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

        def forward(self, u, t):
            return torch.as_tensor(score(u.numpy(), float(t[0, 0])))

    ts = D.TorchScore(Exact(), batch_size=7)
    a = D.sample(D.Splitting(VP, "OBO"), score, 20, 5, 2, seed=0).x
    b = D.sample(D.Splitting(VP, "OBO"), ts, 20, 5, 2, seed=0).x
    np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)
    assert ts.evaluations == 5


@pytest.mark.parametrize("call,arg", [
    (lambda: D.Splitting(VP, "BAOAB"), "scheme"),
    (lambda: D.Splitting(VP, "BB"), "scheme"),
    (lambda: D.Splitting(VP, "BOB", split="half"), "split"),
    (lambda: D.Splitting(VP, "BOB", kick="rk4"), "kick"),
    (lambda: D.ProbabilityFlow(VP, "rk4"), "method"),
    (lambda: D.PredictorCorrector(CLD), "sde"),
    (lambda: D.EulerMaruyama("vp"), "sde"),
    (lambda: D.time_grid(0), "n_steps"),
    (lambda: D.time_grid(4, eps=2.0), "eps"),
    (lambda: D.VPSDE(beta_min=-1), "beta_min"),
    (lambda: D.CLD(mass=0), "mass"),
    (lambda: D.exact_output_moments(D.EulerMaruyama(VP), MU, -SIGMA, 4), "data_cov"),
    (lambda: D.exact_output_moments(D.EulerMaruyama(VP), MU, SIGMA, 4, start="data"), "start"),
    (lambda: D.exact_output_moments(D.PredictorCorrector(VP, step_size="snr"), MU, SIGMA, 4), "sampler"),
    (lambda: D.exact_output_moments(D.PredictorCorrector(VP), MU, SIGMA, 8), "n_steps"),
    (lambda: D.sample(D.EulerMaruyama(VP), None, 0, 4, 2), "n_samples"),
    (lambda: D.fit_exact_order([1, 2], [1, 2]), "errors"),
])
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


# ----------------------------------------------------------------------------- letters: the diffusion hooks

class _Identity(letters.Letter):
    """I: a frozen-time piece that leaves u alone (a user's letter with a diffusion hook)."""

    name, title, update = "I", "identity", "u unchanged"

    def diffusion(self, x, u, delta, t0, t1):
        return u


class _Wait(letters.Letter):
    """J: a letter with no diffusion hook."""

    name, title, moves = "J", "no diffusion hook", ("p",)


@pytest.fixture
def user_letters():
    added = [letters.register(_Identity()), letters.register(_Wait())]
    yield
    for letter in added:
        letters.unregister(letter.name)


@pytest.mark.parametrize("word,name", [("BAOAB", "A"), ("OBDBO", "D"), ("EM", "EM"), ("OJO", "J")])
def test_splitting_refuses_a_letter_without_a_diffusion_hook(user_letters, word, name):
    with pytest.raises(ValueError, match=rf"scheme: letter '{name}' .*cannot run in the diffusion sampler"):
        D.Splitting(VP, word)


def test_a_user_letter_with_a_diffusion_hook_runs_in_the_splitting(user_letters):
    """OBIO (I: identity, frozen time) is OBO bit for bit: I takes no noise and keeps the clock."""
    a, b = D.Splitting(CLD, "OBO"), D.Splitting(CLD, "OBIO")
    assert a.n_noise(2) == b.n_noise(2) and a.evals_per_step == b.evals_per_step == 1
    assert [(l, t0, t1) for l, _, t0, t1 in b.substep_times(1.0, 0.1) if l != "I"] == \
        [(l, t0, t1) for l, _, t0, t1 in a.substep_times(1.0, 0.1)]
    ua, ub = (D.sample(s, D.GaussianScore(CLD, MU, SIGMA), 20, 8, 2, seed=1).u for s in (a, b))
    assert np.array_equal(ua, ub)
    with pytest.raises(ValueError, match="at least one O"):
        D.Splitting(VP, "BIB")
