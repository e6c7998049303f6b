"""Error bars of time averages (sdekit.diagnostics) against exact autocorrelation times.

* AR(1), x' = a x + sqrt(1 - a^2) e: tau_int = (1 + a)/(1 - a) exactly.
* BAOAB on a harmonic oscillator: the exact autocorrelation of the recorded q at lag k is
  (T^(r k) Sigma)_00 / Sigma_00 (sdekit.linear: one-step map T, stationary covariance Sigma,
  a record every r steps), so tau_int = 1 + 2 sum_k rho_k exactly.

Estimates are compared with the exact values at 4 of the estimator's own standard errors,
Sokal's var(tau)/tau^2 ~ 2 (2M + 1)/N (fixed seeds). The xarray/ArviZ tests skip cleanly
where the optional extra (sdekit[arviz]) is absent.
"""
import numpy as np
import pytest
from scipy.signal import lfilter

import sdekit
from sdekit import diagnostics as dg
from sdekit import linear
from sdekit.systems import Harmonic

Z = 4.0


def ar1(a, n, seed, n_series=None):
    """A stationary AR(1) path (or n_series independent ones as columns)."""
    shape = (n,) if n_series is None else (n, n_series)
    e = np.random.default_rng(seed).standard_normal(shape)
    x0 = e[:1]                                  # stationary start: N(0, 1)
    x = lfilter([np.sqrt(1 - a * a)], [1.0, -a], e[1:], axis=0, zi=a * x0)[0]
    return np.concatenate([x0, x])


def exact_tau_baoab(h, gamma, record_every, omega=1.0):
    """1 + 2 sum_k rho_k of q recorded every ``record_every`` steps, summed to convergence."""
    T, _ = linear.one_step("BAOAB", [[omega ** 2]], h, gamma=gamma)
    sigma = linear.stationary_covariance("BAOAB", [[omega ** 2]], h, gamma=gamma)
    Tr = np.linalg.matrix_power(T, record_every)
    total, C = 0.0, sigma.copy()
    for _ in range(100_000):
        C = Tr @ C
        total += C[0, 0] / sigma[0, 0]
        if np.abs(C).max() < 1e-16 * sigma[0, 0]:
            return 1.0 + 2.0 * total, sigma[0, 0]
    raise AssertionError("the autocorrelation sum did not converge")


# ----------------------------------------------------------------------------- AR(1): exact tau

@pytest.mark.statistical
@pytest.mark.parametrize("a, method", [(a, m) for a in (0.5, 0.9, -0.5) for m in ("sokal_abs", "sokal", "geyer")
                                       if (a, m) != (-0.5, "sokal")])   # see the next test
def test_ar1_tau_is_exact_within_its_error_bar(a, method):
    exact = (1 + a) / (1 - a)
    est = dg.integrated_autocorrelation_time(ar1(a, 1_000_000, seed=1), method=method, full=True)
    assert abs(est.tau - exact) < Z * est.stderr, (est, exact)
    # Sokal's formula for the estimator's spread, with its own window M
    assert est.stderr == pytest.approx(est.tau * np.sqrt(2 * (2 * est.window + 1) / 1_000_000))


def test_sokal_s_signed_rule_is_for_positive_correlations():
    """On an anticorrelated chain tau(1) = 1 + 2 rho_1 ~ 0 already meets M >= c tau(M)/2."""
    est = dg.integrated_autocorrelation_time(ar1(-0.5, 100_000, seed=1), method="sokal", full=True)
    assert est.window == 1 and abs(est.tau) < 0.05
    assert dg.integrated_autocorrelation_time(ar1(-0.5, 100_000, seed=1)) == pytest.approx(1 / 3, rel=0.05)


def test_autocorrelation_of_ar1_is_a_to_the_k():
    rho = dg.autocorrelation(ar1(0.8, 400_000, seed=2))
    k = np.arange(8)
    assert rho[0] == 1.0
    np.testing.assert_allclose(rho[:8], 0.8 ** k, atol=5 * np.sqrt(9 / 400_000))


def test_the_error_bar_is_honest_over_independent_chains():
    """z = mean / stderr over 400 independent AR(1) chains (a = 0.9, tau = 19) has unit
    variance; the naive sqrt(var / n) would give var(z) = tau = 19."""
    x = ar1(0.9, 10_000, seed=3, n_series=400)
    avg = dg.time_average(x)
    z = avg.mean / avg.stderr
    assert avg.mean.shape == avg.stderr.shape == avg.tau.shape == (400,)
    assert 0.8 < np.var(z) < 1.2, np.var(z)       # sd of var(z) ~ sqrt(2/400) = 0.07
    np.testing.assert_allclose(avg.ess, 10_000 / avg.tau)
    naive = avg.mean / np.sqrt(x.var(axis=0) / 10_000)
    assert np.var(naive) > 10


def test_mean_with_error_and_ess():
    x = ar1(0.5, 200_000, seed=4)
    mean, se = dg.mean_with_error(x)
    tau = dg.integrated_autocorrelation_time(x)
    assert mean == pytest.approx(x.mean())
    assert se == pytest.approx(np.sqrt(x.var() * tau / x.size))
    assert dg.effective_sample_size(x) == pytest.approx(x.size / tau)
    # burn_in drops leading records
    assert dg.mean_with_error(x, burn_in=1000)[0] == pytest.approx(x[1000:].mean())


# ----------------------------------------------------------------------------- BAOAB: exact linear chain

CASES = [  # (h, gamma, record_every): overdamped-ish, underdamped oscillating, records every step
    (0.5, 4.0, 2),
    (0.5, 1.0, 2),
    (0.7, 0.5, 1),
]


@pytest.fixture(scope="module")
def baoab_runs():
    runs = {}
    for h, gamma, r in CASES:
        runs[h, gamma, r] = sdekit.simulate("BAOAB", Harmonic(omega=1.0), h=h, gamma=gamma,
                                            n_steps=r * 1_000_000, record_every=r, seed=11, backend="cpu")
    return runs


@pytest.mark.statistical
@pytest.mark.parametrize("case", CASES)
def test_baoab_harmonic_tau_matches_the_exact_linear_chain(baoab_runs, case):
    exact, var_q = exact_tau_baoab(*case)
    run = baoab_runs[case]
    est = dg.integrated_autocorrelation_time(run.q[1000:, 0], full=True)
    assert abs(est.tau - exact) < Z * est.stderr, (case, est, exact)
    # and the time average of q^2 hits BAOAB's exact <q^2> = kT / omega^2 within its error bar
    avg = run.time_average("q2", burn_in=1000)
    assert var_q == pytest.approx(1.0)
    assert abs(avg.mean[0] - var_q) < Z * avg.stderr[0], avg


def test_sokal_s_signed_window_stops_too_early_on_oscillating_correlations(baoab_runs):
    """Why the default is "sokal_abs": underdamped q (h = 0.7, gamma = 0.5) has an
    oscillating autocorrelation; Sokal's rule on the signed sum stops at M = 5, where the
    estimate is ~5 % off (many standard errors)."""
    case = (0.7, 0.5, 1)
    exact, _ = exact_tau_baoab(*case)
    est = dg.integrated_autocorrelation_time(baoab_runs[case].q[1000:, 0], method="sokal", full=True)
    assert abs(est.tau - exact) > Z * est.stderr, (est, exact)


def test_trajectory_time_average_and_series(baoab_runs):
    run = baoab_runs[(0.5, 1.0, 2)]
    avg = run.time_average("q", burn_in=10)
    ref = dg.time_average(run.q, burn_in=10)
    assert avg == ref and isinstance(avg, dg.TimeAverage)
    np.testing.assert_array_equal(run.series("p2"), run.p ** 2)
    with pytest.raises(ValueError, match="name: must be one of"):
        run.series("energy")
    with pytest.raises(ValueError, match="burn_in"):
        run.time_average("q", burn_in=len(run.t))


# ----------------------------------------------------------------------------- inputs

def test_bad_inputs_are_named():
    x = ar1(0.5, 1000, seed=5)
    with pytest.raises(ValueError, match="method"):
        dg.integrated_autocorrelation_time(x, method="batch")
    with pytest.raises(ValueError, match="c:"):
        dg.integrated_autocorrelation_time(x, c=-1.0)
    with pytest.raises(ValueError, match="x:"):
        dg.integrated_autocorrelation_time(np.array([1.0, np.nan, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="x:"):
        dg.integrated_autocorrelation_time(3.0)
    with pytest.raises(ValueError, match="burn_in"):
        dg.time_average(x, burn_in=-1)


def test_too_short_a_series_gives_nan_with_a_warning():
    x = ar1(0.99, 40, seed=6)
    with pytest.warns(RuntimeWarning, match="too few"):
        avg = dg.time_average(x)
    assert np.isnan(avg.tau) and np.isnan(avg.stderr)


def test_constant_series_has_zero_error():
    avg = dg.time_average(np.full(100, 2.5))
    assert avg.mean == 2.5 and avg.stderr == 0.0 and avg.tau == 1.0


def test_split_rhat_is_one_for_mixed_chains_and_large_for_stuck_ones():
    chains = ar1(0.5, 5000, seed=7, n_series=4).T
    assert abs(dg.split_rhat(chains) - 1.0) < 0.01
    assert dg.split_rhat(chains + np.arange(4)[:, None]) > 1.5


# ----------------------------------------------------------------------------- xarray / ArviZ

def test_to_xarray_of_a_trajectory_and_an_ensemble():
    pytest.importorskip("xarray")
    run = sdekit.simulate("BAOAB", Harmonic(omega=1.0), h=0.5, n_steps=100, record_every=10, seed=0,
                          backend="numpy", observables={"e": lambda q, p: 0.5 * (q ** 2 + p ** 2).sum(axis=1)})
    ds = run.to_xarray()
    assert ds["q"].dims == ("time", "dim") and ds["xi"].dims == ("time",) and ds["e"].dims == ("time",)
    np.testing.assert_array_equal(ds["time"], run.t)
    np.testing.assert_array_equal(ds["p"].values, run.p)
    assert ds.attrs["scheme"] == "BAOAB" and ds.attrs["step"] == 100
    ens = sdekit.ensemble("BAOAB", Harmonic(omega=1.0), h=0.5, n_steps=100, n_paths=50, record_every=10,
                          seed=0, backend="numpy")
    eds = ens.to_xarray()
    assert eds["q"].dims == ("path", "dim") and eds["mean_q2"].dims == ("time", "dim")
    np.testing.assert_array_equal(eds["stderr_q2"].values, ens.stderr("q2"))


def test_arviz_ess_and_rhat_agree_with_ours():
    arviz = pytest.importorskip("arviz")
    x = ar1(0.9, 200_000, seed=8)
    ours = dg.effective_sample_size(x, method="geyer")
    theirs = float(arviz.ess(x[None, :], method="mean"))   # Geyer's sequence on split chains
    assert ours == pytest.approx(theirs, rel=0.05)
    est = dg.integrated_autocorrelation_time(x, full=True)  # the default, against the same
    assert abs(x.size / theirs - est.tau) < Z * est.stderr
    chains = ar1(0.5, 2001, seed=9, n_series=4).T
    assert dg.split_rhat(chains) == pytest.approx(float(arviz.rhat(chains, method="split")), rel=1e-12)


def test_to_inference_data_chains_are_runs():
    """Euler-Maruyama on U = q^2/2 is exactly AR(1), a = 1 - h (reversible): tau = (2 - h)/h
    = 19 at h = 0.1, so ArviZ's ESS (Geyer on split chains), ours and the exact N/tau agree."""
    arviz = pytest.importorskip("arviz")
    runs = [sdekit.simulate("EM", Harmonic(omega=1.0), h=0.1, n_steps=100_000, q0=[0.0], seed=s, backend="cpu")
            for s in range(4)]
    idata = dg.to_inference_data(runs, burn_in=100)
    post = idata.posterior
    assert dict(post.sizes) == {"chain": 4, "draw": 99_901, "dim": 1}
    assert set(post.data_vars) == {"q", "xi"}                       # overdamped: no p
    np.testing.assert_array_equal(post["q"].values[2], runs[2].q[100:])
    assert post.attrs["scheme"] == "EM"
    exact = 4 * 99_901 / 19.0
    ours = [dg.integrated_autocorrelation_time(r.q[100:, 0], full=True) for r in runs]
    ess = sum(99_901 / e.tau for e in ours)
    rel_sd = np.sqrt(sum((99_901 / e.tau * e.stderr / e.tau) ** 2 for e in ours)) / ess
    assert abs(ess - exact) < Z * rel_sd * ess, (ess, exact)
    theirs = arviz.ess(idata, var_names=["q"], method="mean")["q"].values.item()
    assert theirs == pytest.approx(ess, rel=Z * rel_sd)
    assert theirs == pytest.approx(exact, rel=Z * rel_sd)
    rhat = arviz.rhat(idata, var_names=["q"], method="split")["q"].values.item()
    assert rhat == pytest.approx(dg.split_rhat(post["q"].values[..., 0]), rel=1e-12)
    ens = sdekit.ensemble("BAOAB", Harmonic(omega=1.0), h=0.5, n_steps=50, n_paths=20, seed=0, backend="cpu")
    e = dg.to_inference_data(ens).posterior
    assert dict(e.sizes) == {"chain": 20, "draw": 1, "dim": 1}
    with pytest.raises(ValueError, match="runs"):
        dg.to_inference_data(runs + [runs[0].__class__(**{**runs[0].__dict__, "t": runs[0].t[:5]})])
    with pytest.raises(TypeError, match="runs"):
        dg.to_inference_data([1, 2])
