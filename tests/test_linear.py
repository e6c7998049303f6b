"""Exact discrete-chain statistics (sdekit.linear): closed forms, the integrator's own
arithmetic, and an independent long simulation."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sdekit
from sdekit import linear, reference
from sdekit.simulate import make_spec

RTOL = 1e-11  # the Lyapunov solve loses digits like 1/(1 - rho(T)); 1e-12 except near rho = 1

omegas = st.floats(0.2, 5.0)
stable_hw = st.floats(0.02, 1.98)      # h * omega, Langevin words: stable for h omega < 2
frictions = st.floats(0.05, 50.0)
temperatures = st.floats(0.1, 5.0)


@settings(max_examples=150, deadline=None)
@given(w=omegas, hw=stable_hw, gamma=frictions, kT=temperatures)
def test_baoab_harmonic_closed_form(w, hw, gamma, kT):
    h = hw / w
    S = linear.stationary_covariance("BAOAB", w * w, h, gamma, kT)
    np.testing.assert_allclose(S[0, 0], kT / w**2, rtol=RTOL)
    np.testing.assert_allclose(S[1, 1], kT * (1 - h * h * w * w / 4), rtol=RTOL)


@settings(max_examples=150, deadline=None)
@given(w=omegas, hw=stable_hw, gamma=frictions, kT=temperatures)
def test_obabo_harmonic_closed_form(w, hw, gamma, kT):
    h = hw / w
    S = linear.stationary_covariance("OBABO", w * w, h, gamma, kT)
    np.testing.assert_allclose(S[1, 1], kT, rtol=RTOL)
    np.testing.assert_allclose(S[0, 0], kT / (w * w * (1 - h * h * w * w / 4)), rtol=RTOL)


@settings(max_examples=150, deadline=None)
@given(w=omegas, hw2=st.floats(0.01, 1.98), kT=temperatures)
def test_overdamped_harmonic_closed_forms(w, hw2, kT):
    h = hw2 / w**2                       # EM and LM are stable for h omega^2 < 2
    em = linear.stationary_covariance("EM", w * w, h, kT=kT)
    lm = linear.stationary_covariance("LM", w * w, h, kT=kT)
    assert em.shape == lm.shape == (1, 1)
    np.testing.assert_allclose(em[0, 0], kT / (w * w * (1 - h * w * w / 2)), rtol=RTOL)
    np.testing.assert_allclose(lm[0, 0], kT / w**2, rtol=RTOL)


def test_closed_forms_tight_at_ordinary_parameters():
    for h in (0.1, 0.5, 1.0, 1.5, 1.9):
        S = linear.stationary_covariance("BAOAB", 1.0, h, 1.0, 1.0)
        assert abs(S[0, 0] - 1.0) < 1e-12 and abs(S[1, 1] - (1 - h * h / 4)) < 1e-12
        S = linear.stationary_covariance("OBABO", 1.0, h, 1.0, 1.0)
        assert abs(S[1, 1] - 1.0) < 1e-12 and abs(S[0, 0] - 1 / (1 - h * h / 4)) < 1e-12


def test_mass_rescales_the_frequency():
    # U = w^2 q^2 / 2 with mass m: physical frequency w / sqrt(m); <p^2> = kT m (1 - h^2 w^2 / (4 m))
    w, m, h, kT = 2.0, 3.0, 0.7, 0.6
    S = linear.stationary_covariance("BAOAB", w * w, h, 2.0, kT, mass=m)
    np.testing.assert_allclose(S[0, 0], kT / w**2, rtol=1e-12)
    np.testing.assert_allclose(S[1, 1], kT * m * (1 - h * h * w * w / (4 * m)), rtol=1e-12)


def test_baoab_configurational_exact_on_any_gaussian():
    K = np.array([[4.0, 1.0], [1.0, 1.0]])
    S = linear.stationary_covariance("BAOAB", K, 0.6, 0.7, 1.3)
    np.testing.assert_allclose(S[:2, :2], 1.3 * np.linalg.inv(K), rtol=1e-12, atol=1e-13)


def test_partitioned_friction_and_temperature_per_coordinate():
    w2 = np.array([1.0, 9.0])
    gamma, kT = np.array([0.3, 5.0]), np.array([1.0, 0.25])
    S = linear.stationary_covariance("BAOAB", w2, 0.4, gamma, kT)
    for i in range(2):
        one = linear.stationary_covariance("BAOAB", w2[i], 0.4, gamma[i], kT[i])
        np.testing.assert_allclose(S[[i, i + 2]][:, [i, i + 2]], one, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(S[:2, :2], np.diag(kT / w2), rtol=1e-12, atol=1e-15)


def test_explicit_fractions_match_words():
    K = np.array([[2.0, 0.5], [0.5, 1.0]])
    spelled = [("O", 0.5), ("B", 0.5), ("A", 1.0), ("B", 0.5), ("O", 0.5)]
    np.testing.assert_allclose(linear.stationary_covariance(spelled, K, 0.5),
                               linear.stationary_covariance("OBABO", K, 0.5), rtol=1e-13)


def test_lyapunov_solution_is_the_series_sum():
    # Sigma = sum_k T^k Q T^kT, summed directly for a word with negative weights
    scheme = [("B", 0.6), ("A", 1.3), ("O", 0.5), ("B", 0.4), ("A", -0.3), ("O", 0.5)]
    K = np.array([[3.0, -0.4], [-0.4, 0.8]])
    T, Q = linear.one_step(scheme, K, 0.3, 1.5, 0.9)
    total, term = np.zeros_like(Q), Q.copy()
    for _ in range(20000):
        total += term
        term = T @ term @ T.T
        if np.abs(term).max() < 1e-18:
            break
    np.testing.assert_allclose(linear.stationary_covariance(scheme, K, 0.3, 1.5, 0.9), total,
                               rtol=1e-11, atol=1e-14)


class ReplayRNG:
    """Stands in for numpy's Generator: hands out preset noise arrays in order."""

    def __init__(self, draws):
        self.draws = list(draws)

    def standard_normal(self, shape, dtype=np.float64):
        return np.asarray(self.draws.pop(0), dtype=dtype).reshape(shape)


def _reference_step(scheme, system, h, gamma, kT, mass, q, p, pending, draws):
    spec = make_spec(scheme, system, h, gamma, kT, 1.0, None, mass, "float64", None)
    w = reference.Walker(q[None].copy(), None if p is None else p[None].copy(), np.zeros(1),
                         spec.force(q[None]), None if pending is None else pending[None].copy())
    reference.step(spec, w, ReplayRNG(draws))
    return w.q[0], (None if w.p is None else w.p[0])


@pytest.mark.parametrize("scheme", ["BAOAB", "OBABO", "ABOBA", "BABO", "OABAO", "ABO",
                                    "OBAOBAOB", "EM", "LM"])
def test_one_step_is_the_integrators_arithmetic(scheme):
    """T and Q read off the numpy reference backend itself: T from a step without noise,
    Q from steps that inject one unit noise vector at a time."""
    K = np.array([[2.0, 0.3], [0.3, 0.5]])
    system = sdekit.systems.Gaussian(K)
    s = sdekit.Scheme(scheme)
    h, gamma, kT = 0.37, 0.8, 1.7
    mass = None if s.overdamped else np.array([1.5, 0.6])
    T, Q = linear.one_step(s, K, h, gamma, kT, mass)
    d, n = 2, T.shape[0]
    n_draws = 1 if s.overdamped else s.word.count("O")
    zero = [np.zeros(d)] * n_draws

    def apply(x, draws):
        q = x[:d]
        p = None if s.overdamped else x[d:]
        pending = x[d:] if s.overdamped == "LM" else None
        q1, p1 = _reference_step(s, system, h, gamma, kT, mass, q, None if s.overdamped else p,
                                 pending, draws)
        if s.overdamped == "LM":
            return np.concatenate([q1, draws[0]])
        return q1 if s.overdamped else np.concatenate([q1, p1])

    columns = [apply(e, zero) for e in np.eye(n)]
    np.testing.assert_allclose(np.column_stack(columns), T, rtol=1e-13, atol=1e-15)
    Q_ref = np.zeros((n, n))
    for k in range(n_draws):
        G = np.column_stack([apply(np.zeros(n), [np.eye(d)[j] if i == k else np.zeros(d)
                                                 for i in range(n_draws)]) for j in range(d)])
        Q_ref += G @ G.T
    np.testing.assert_allclose(Q_ref, Q, rtol=1e-13, atol=1e-15)


def test_transient_moments_converge_to_stationary_and_match_exact_flow_as_h_shrinks():
    K = np.array([[2.0, 0.3], [0.3, 0.5]])
    S = linear.stationary_covariance("BAOAB", K, 0.2, 1.0, 1.0)
    m = linear.transient_moments("BAOAB", K, 0.2, 2000, 1.0, 1.0, mean0=[1, 0, 0, 0], cov0=0.0)
    np.testing.assert_allclose(m.cov, S, atol=1e-12)
    assert np.abs(m.mean).max() < 1e-12
    exact = linear.exact_moments(K, 1.0, 1.0, 1.0, mean0=[1, -1, 0.5, 0])
    errs = [np.abs(linear.transient_moments("BAOAB", K, 1.0 / n, n, 1.0, 1.0, mean0=[1, -1, 0.5, 0]).cov
                   - exact.cov).max() for n in (20, 40, 80)]
    assert errs[0] / errs[1] == pytest.approx(4, rel=0.1) and errs[1] / errs[2] == pytest.approx(4, rel=0.05)


def test_exact_moments_of_the_overdamped_ou_process():
    m = linear.exact_moments(3.0, 0.4, kT=0.5, mean0=[2.0], overdamped=True)
    np.testing.assert_allclose(m.mean, [2 * np.exp(-1.2)], rtol=1e-13)
    np.testing.assert_allclose(m.cov, [[0.5 / 3 * (1 - np.exp(-2.4))]], rtol=1e-12)


def test_refusals_name_the_argument():
    with pytest.raises(ValueError, match=r"h: .*unstable at h=1\.2: spectral radius .* >= 1; stable for h < 1"):
        linear.stationary_covariance("BAOAB", 4.0, 1.2)   # omega = 2: stable for h omega < 2
    assert linear.stability_limit("BAOAB", 4.0, 1.2) == pytest.approx(1.0, rel=2e-6)
    assert linear.stability_limit("EM", 4.0, 1.2) == pytest.approx(0.5, rel=2e-6)
    with pytest.raises(ValueError, match="scheme: .*D letter"):
        linear.stationary_covariance("BADODAB", 1.0, 0.1)
    with pytest.raises(ValueError, match="hessian: must be positive definite"):
        linear.stationary_covariance("BAOAB", [[1.0, 0.0], [0.0, -1.0]], 0.1)
    with pytest.raises(ValueError, match="gamma: must be a scalar or have length 2"):
        linear.stationary_covariance("BAOAB", [1.0, 2.0], 0.1, gamma=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="gamma: BAOAB with zero friction"):
        linear.stationary_covariance("BAOAB", 1.0, 0.1, gamma=0.0)
    with pytest.raises(ValueError, match="mean0: must have length 4"):
        linear.transient_moments("BAOAB", [1.0, 2.0], 0.1, 3, mean0=[1.0, 2.0])


@pytest.mark.statistical
def test_random_word_against_long_simulation():
    """A random word on an anisotropic 2-D Gaussian: second moments of 200 000 independent
    paths after 40 time units (from q = p = 0) against the exact stationary covariance, each
    entry at 4.5 standard errors computed from the paths."""
    rng = np.random.default_rng(20261123)
    word = "".join(rng.choice(list("ABO"), size=7))
    word = word if set("ABO") <= set(word) else word + "ABO"
    K = np.array([[4.0, 1.0], [1.0, 1.0]])
    h, gamma, kT = 0.25, 1.0, 0.8
    S = linear.stationary_covariance(word, K, h, gamma, kT)
    n = int(40 / h)
    transient = linear.transient_moments(word, K, h, n, gamma, kT, mean0=np.zeros(4), cov0=0.0)
    assert np.abs(transient.cov - S).max() < 1e-6  # the runs are long enough to be stationary
    ens = sdekit.ensemble(word, sdekit.systems.Gaussian(K), h, n, 200_000, gamma=gamma, kT=kT,
                          seed=5, backend="numpy")
    x = np.hstack([ens.q, ens.p])
    products = x[:, :, None] * x[:, None, :]
    est = products.mean(axis=0)
    se = products.std(axis=0, ddof=1) / np.sqrt(x.shape[0])
    z = (est - S) / se
    assert np.abs(z).max() < 4.5, f"word {word}: z-scores\n{z}"
