"""Stationary bias, weak error and order fits (sdekit.analysis). Statistical tests compare
estimates with exact values at 4.5 standard errors computed from the data."""
import csv
import json

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

import sdekit
from sdekit import analysis, linear

Z = 4.5


# ----------------------------------------------------------------------------- fit_order

def synthetic(rng, p, hs, rel):
    exact = 0.7 * hs ** p
    se = rel * exact
    return exact + se * rng.standard_normal(hs.size), se


def test_fit_order_recovers_a_known_order():
    rng = np.random.default_rng(1)
    hs = np.geomspace(0.01, 0.2, 7)
    err, se = synthetic(rng, 2.0, hs, 0.05)
    fit = analysis.fit_order(hs, err, se)
    assert fit.ci[0] < 2.0 < fit.ci[1]
    assert fit.ci[1] - fit.ci[0] < 0.2
    assert not fit.sign_change and fit.used.all()
    assert fit.prefactor == pytest.approx(0.7, rel=0.2)
    err, se = synthetic(rng, 1.0, hs, 0.05)
    assert not analysis.fit_order(hs, err, se).ci[0] < 2.0 < analysis.fit_order(hs, err, se).ci[1]


def test_fit_order_interval_has_its_coverage():
    """Over 1000 synthetic data sets the 95 % interval holds the true order in 95 % of
    them, within 4.5 binomial standard errors."""
    rng = np.random.default_rng(2)
    hs = np.geomspace(0.02, 0.3, 6)
    hits = 0
    n = 1000
    for _ in range(n):
        err, se = synthetic(rng, 1.5, hs, 0.03)
        fit = analysis.fit_order(hs, err, se)
        hits += fit.ci[0] < 1.5 < fit.ci[1]
    assert abs(hits / n - 0.95) < Z * np.sqrt(0.95 * 0.05 / n)


def test_fit_order_uses_only_resolved_errors_and_refuses_too_few():
    hs = np.array([0.05, 0.1, 0.2, 0.4])
    fit = analysis.fit_order(hs, [1e-4, 4e-3, 1.6e-2, 6.4e-2], [1e-3] * 4)
    assert fit.used.tolist() == [False, True, True, True]
    assert fit.order == pytest.approx(2.0, abs=1e-9)
    with pytest.raises(ValueError, match="errors: only 2 of 4"):
        analysis.fit_order(hs, [1e-4, 1e-4, 1.6e-2, 6.4e-2], [1e-3] * 4)
    with pytest.raises(ValueError, match="stderr: must be positive"):
        analysis.fit_order(hs, [1, 2, 3, 4], [1, 0, 1, 1])
    with pytest.raises(ValueError, match="errors: hs, errors and stderr must have equal lengths"):
        analysis.fit_order(hs, [1, 2, 3], [1, 1, 1])


def test_batch_means_standard_error_of_an_ar1_series():
    """AR(1) with phi = 0.9: the batch-means SE matches the exact asymptotic value
    sqrt(var (1 + phi)/(1 - phi) / n) within the batch estimator's own precision."""
    rng = np.random.default_rng(3)
    phi, n = 0.9, 400_000
    noise = rng.standard_normal(n) * np.sqrt(1 - phi**2)
    x = np.empty(n)
    x[0] = rng.standard_normal()
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    mean, se, lag1 = analysis.batch_means(x, 40)
    exact_se = np.sqrt((1 + phi) / (1 - phi) / n)
    assert abs(se / exact_se - 1) < Z * np.sqrt(1 / (2 * 39))   # relative SE of an SE with 39 dof
    assert abs(mean) < Z * exact_se


# ----------------------------------------------------------------------------- stationary bias

def _z(curve, expected):
    return (curve.values - expected) / curve.stderr


@pytest.mark.statistical
def test_stationary_bias_of_baoab_and_obabo_on_the_harmonic_oscillator():
    """BAOAB: <q^2> exact and <p^2> = kT(1 - h^2 w^2/4) on-step, <p^2> = kT right after O;
    OBABO: <p^2> exact and <q^2> = kT/(w^2 (1 - h^2 w^2/4))."""
    w, kT = 1.5, 0.8
    system = sdekit.systems.Harmonic(w)
    hs = np.array([0.4, 0.8, 1.2])
    common = dict(gamma=1.0, kT=kT, n_paths=4000, n_steps=[int(200 / h) for h in hs],
                  burn_in=[int(10 / h) for h in hs], seed=11, backend="numpy")
    baoab = analysis.stationary_bias("BAOAB", system, ["q2", "p2", "p2_O"], hs, **common)
    assert np.all(np.abs(_z(baoab.curve(observable="q2"), kT / w**2)) < Z)
    assert np.all(np.abs(_z(baoab.curve(observable="p2"), kT * (1 - hs**2 * w**2 / 4))) < Z)
    assert np.all(np.abs(_z(baoab.curve(observable="p2_O"), kT)) < Z)
    # and the biases are resolved: the on-step kinetic bias is many standard errors
    assert np.all(np.abs(baoab.curve(observable="p2").errors / baoab.curve(observable="p2").stderr) > 10)
    obabo = analysis.stationary_bias("OBABO", system, ["q2", "p2"], hs, **common)
    assert np.all(np.abs(_z(obabo.curve(observable="p2"), kT)) < Z)
    assert np.all(np.abs(_z(obabo.curve(observable="q2"), kT / (w**2 * (1 - hs**2 * w**2 / 4)))) < Z)


@pytest.mark.statistical
def test_stationary_bias_matches_the_exact_chain_on_a_gaussian():
    """ABOBA on an anisotropic 2-D Gaussian, coordinate 1: estimates against the exact
    stationary covariance of the chain (sdekit.linear)."""
    K = np.array([[4.0, 1.0], [1.0, 1.0]])
    system = sdekit.systems.Gaussian(K)
    hs = np.array([0.3, 0.6])
    res = analysis.stationary_bias("ABOBA", system, ["q2", "p2"], hs, gamma=1.0, kT=1.0, n_paths=4000,
                                   n_steps=[int(200 / h) for h in hs], burn_in=[int(15 / h) for h in hs],
                                   seed=12, backend="numpy", coordinate=1)
    exact = np.array([np.diag(linear.stationary_covariance("ABOBA", K, h)) for h in hs])
    assert np.all(np.abs(_z(res.curve(observable="q2"), exact[:, 1])) < Z)
    assert np.all(np.abs(_z(res.curve(observable="p2"), exact[:, 3])) < Z)


def test_escapes_are_reported_not_dropped(tmp_path):
    res = analysis.stationary_bias("ABOBA", sdekit.systems.DoubleWell(), "q2", [0.2, 0.4], n_paths=500,
                                   n_steps=400, burn_in=50, seed=3, backend="numpy", max_abs=5.0)
    c = res.curve()
    assert c.diverged[0] == 0 and c.diverged[1] > 0
    assert "diverged" in res.table() and f"{c.diverged[1]} path(s) diverged" in res.summary()
    res.to_csv(tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [int(r["diverged"]) for r in rows] == c.diverged.tolist()


def test_results_table_csv_json_plot(tmp_path):
    hs = [0.1, 0.2, 0.3]
    res = analysis.stationary_bias("BAOAB", sdekit.systems.DoubleWell(), ["q2", "p2"], hs, n_paths=300,
                                   n_steps=[600, 300, 200], burn_in=[100, 50, 34], seed=0,
                                   backend="numpy", max_abs=5.0)
    text = res.table()
    assert "batch means" in text and "q2" in text and "p2" in text
    res.to_csv(tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == 6 and {"h", "estimate", "stderr", "error", "diverged"} <= set(rows[0])
    res.to_json(tmp_path / "r.json")
    data = json.load(open(tmp_path / "r.json"))
    assert len(data["curves"]) == 2 and data["curves"][0]["hs"] == hs
    res.plot(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 10_000
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    res.plot(ax)
    assert ax.get_xlabel() == "step size h" and ax.get_xscale() == "log"
    plt.close(fig)


def test_arguments_are_checked():
    system = sdekit.systems.Harmonic()
    with pytest.raises(ValueError, match="observable: must be one of"):
        analysis.stationary_bias("BAOAB", system, "q3", [0.1])
    with pytest.raises(ValueError, match="hs: must be a non-empty list of positive"):
        analysis.stationary_bias("BAOAB", system, "q2", [0.1, -0.2])
    with pytest.raises(ValueError, match="n_steps: must be an integer or one per step size"):
        analysis.stationary_bias("BAOAB", system, "q2", [0.1, 0.2], n_steps=[10])
    with pytest.raises(ValueError, match="hs: T/h must be a positive integer"):
        analysis.weak_error("EM", system, "q2", 1.0, [0.3])
    with pytest.raises(ValueError, match="coordinate: the system has 2 coordinates"):
        analysis.weak_error("EM", sdekit.systems.Harmonic([1.0, 2.0]), "q2", 1.0, [0.5])


# ----------------------------------------------------------------------------- weak error

@pytest.mark.statistical
def test_weak_order_one_for_euler_maruyama_on_ornstein_uhlenbeck():
    """EM on dq = -q dt + sqrt(2) dW from q = 0, f = q^2 at T = 1: exact reference by the
    matrix exponential. The fitted order's interval contains 1, and each simulated error
    agrees with the exact error of the discrete chain (sdekit.linear) at 4.5 SE."""
    res = analysis.weak_error("EM", sdekit.systems.Harmonic(1.0), "q2", 1.0, [0.02, 0.04, 0.05, 0.1],
                              n_paths=400_000, q0=0.0, seed=4, backend="numpy")
    c = res.curve()
    assert c.fit.ci[0] < 1.0 < c.fit.ci[1]
    assert c.fit.ci[0] > 0.5 and c.fit.ci[1] < 1.5
    assert np.all(np.abs((c.errors - c.extra["exact_chain_error"]) / c.stderr) < Z)
    assert c.exact == pytest.approx(1 - np.exp(-2.0), rel=1e-12)


def test_weak_error_with_a_fine_step_reference():
    res = analysis.weak_error("BAOAB", sdekit.systems.DoubleWell(), "q2", 1.0, [0.1, 0.25], n_paths=20_000,
                              q0=0.5, seed=5, backend="numpy", h_ref=0.025)
    c = res.curve()
    assert "reference: same scheme at h=0.025" in c.method
    assert np.all(c.stderr > 0) and c.exact is not None
    assert abs(c.errors[0]) < abs(c.errors[1]) + Z * c.stderr[1]


@pytest.mark.slow
@pytest.mark.statistical
def test_baoab_configurational_bias_is_second_order_on_the_double_well():
    hs = np.array([0.1, 0.15, 0.2, 0.25, 0.3])
    res = analysis.stationary_bias("BAOAB", sdekit.systems.DoubleWell(), "q2", hs, gamma=1.0, kT=1.0,
                                   n_paths=40_000, n_steps=[int(200 / h) for h in hs],
                                   burn_in=[int(20 / h) for h in hs], seed=21, max_abs=5.0)
    fit = res.fit
    assert fit is not None and fit.ci[0] < 2.0 < fit.ci[1], str(fit)
    assert fit.ci[0] > 1.0, str(fit)


def test_escaping_paths_are_masked_not_averaged_by_default():
    """Double well at h = 0.3: paths started at |q| = 3 escape and grow huge but stay
    finite for a few steps. With the system's escape_bound (the default max_abs) they
    are masked and counted; the estimate stays near the exact value."""
    from sdekit.systems import DoubleWell

    q0 = np.zeros((500, 1))
    q0[:7] = 3.0
    res = analysis.stationary_bias("BAOAB", DoubleWell(), "q2", hs=[0.3], n_paths=500, n_steps=400,
                                   burn_in=0, q0=q0, seed=1, backend="numpy", progress=False)
    curve = res.curve()
    assert curve.diverged[0] >= 7
    assert abs(curve.errors[0]) < 0.05, res.table()


# ----------------------------------------------------------------------------- issue 16: asymptotic orders

HS16 = np.array([0.05, 0.1, 0.15, 0.2, 0.25, 0.3])


def test_an_exact_power_law_is_asymptotic():
    for p in (1.0, 2.0, 4.0):
        err = 0.3 * HS16 ** p
        fit = analysis.fit_order(HS16, err, 0.02 * err)
        assert fit.asymptotic and fit.caveat == "" and fit.order == pytest.approx(p, abs=1e-9)
        assert fit.to_dict()["asymptotic"] is True and "not asymptotic" not in str(fit)
        neg = analysis.fit_order(HS16, -err, 0.02 * err)
        assert neg.asymptotic


def test_a_noisy_power_law_is_rarely_flagged():
    """Noise consistent with the standard errors: flagged in under 2 % of 500 sets."""
    rng = np.random.default_rng(16)
    flagged = 0
    for _ in range(500):
        err, se = synthetic(rng, 2.0, HS16, 0.05)
        flagged += not analysis.fit_order(HS16, err, se).asymptotic
    assert flagged < 10


def test_a_curve_that_bends_is_flagged():
    err = HS16 ** 2 * (1 + (HS16 / 0.15) ** 4)
    fit = analysis.fit_order(HS16, err, 0.02 * err)
    assert not fit.asymptotic and "bends" in fit.caveat and "not asymptotic" in str(fit)
    # the same bend buried in noise is not resolved, so not flagged
    loose = analysis.fit_order(HS16, err, 0.45 * err)
    assert loose.asymptotic


def test_a_slope_over_a_narrow_range_is_flagged():
    """Below the noise until just before the largest steps: only those are fitted."""
    err = 0.5 * HS16 ** 8
    se = np.full(HS16.size, 1e-7)
    fit = analysis.fit_order(HS16, err, se)
    assert fit.used.tolist() == [False, False, False, True, True, True]
    assert not fit.asymptotic and "only h in [0.2, 0.3]" in fit.caveat


def test_a_sign_change_is_flagged():
    err = 0.3 * HS16 ** 2 * np.where(HS16 < 0.2, 1, -1)
    assert analysis.fit_order(HS16, err, 0.02 * np.abs(err)).caveat == "sign change"


def _study(kinetic):
    curves = []
    for obs, err in (("q2", 0.1 * HS16 ** 2), ("p2", kinetic)):
        c = analysis.Curve(kind="stationary bias", scheme="BAOAB", system="S", observable=obs, hs=HS16,
                           values=1 + err, stderr=0.02 * np.abs(err), exact=1.0, errors=err,
                           diverged=np.zeros(6, int), n_paths=10, method="synthetic")
        curves.append(c.fit_errors())
    return analysis.ErrorStudy(curves)


def test_plot_legend_is_neutral_outside_and_skips_non_asymptotic_fits():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    res = _study(-HS16 ** 2 * (1 + (HS16 / 0.15) ** 4))       # p2: bends, and negative
    fig = res.plot()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        scheme = [h for h in legend.legend_handles if h.get_label().startswith("BAOAB")]
        assert len(scheme) == 1 and isinstance(scheme[0], Patch)      # a colour, not a filled marker
        box = legend.get_window_extent(renderer)
        assert box.y1 <= ax.get_window_extent(renderer).y0            # below the axes, off the data
    dashed = {ax.get_ylabel(): [l for l in ax.get_lines() if l.get_linestyle() == "--"] for ax in fig.axes}
    q_ax, p_ax = fig.axes
    assert len(dashed[q_ax.get_ylabel()]) == 1 and dashed[p_ax.get_ylabel()] == []
    labels = [t.get_text() for t in p_ax.get_legend().get_texts()]
    assert any("not asymptotic" in t for t in labels)
    plt.close(fig)


# ----------------------------------------------------------------------------- issue 16: exact chain bias

def test_stationary_bias_carries_the_exact_chain_error_of_a_linear_system():
    w, kT = 2.0, 0.7
    hs = np.array([0.2, 0.5])
    res = analysis.stationary_bias("BAOAB", sdekit.systems.Harmonic(w), ["q2", "p2", "p2_O", "q"], hs,
                                   kT=kT, n_paths=20, n_steps=60, burn_in=10, seed=0, backend="numpy")
    chain = {c.observable: c.extra["exact_chain_error"] for c in res.curves}
    assert chain["q2"] == pytest.approx([0, 0], abs=1e-12)
    assert chain["p2"] == pytest.approx(-kT * hs ** 2 * w ** 2 / 4, rel=1e-12)
    assert chain["p2_O"] == pytest.approx([0, 0], abs=1e-12)           # kT exactly after O
    assert chain["q"].tolist() == [0.0, 0.0]
    assert "exact_chain_error" in res.table()
    # OBABO on a 2-D Gaussian, coordinate 1: the Lyapunov solution of sdekit.linear
    K = np.array([[4.0, 1.0], [1.0, 1.0]])
    res = analysis.stationary_bias("OBABO", sdekit.systems.Gaussian(K), "q2", hs, n_paths=20, n_steps=60,
                                   burn_in=10, seed=0, backend="numpy", coordinate=1)
    exact = [linear.stationary_covariance("OBABO", K, h)[1, 1] for h in hs]
    c = res.curve()
    assert c.extra["exact_chain_error"] == pytest.approx(np.array(exact) - c.exact, rel=1e-12)
    # unstable step: no stationary law, NaN; a nonlinear system: no column
    res = analysis.stationary_bias("EM", sdekit.systems.Harmonic(1.0), "q2", [0.2, 2.5], n_paths=20,
                                   n_steps=40, burn_in=10, seed=0, backend="numpy")
    col = res.curve().extra["exact_chain_error"]
    assert col[0] == pytest.approx(1 / (1 - 0.1) - 1, rel=1e-12) and np.isnan(col[1])
    res = analysis.stationary_bias("BAOAB", sdekit.systems.DoubleWell(), "q2", [0.2], n_paths=20,
                                   n_steps=40, burn_in=10, seed=0, backend="numpy")
    assert "exact_chain_error" not in res.curve().extra
