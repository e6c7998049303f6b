"""simulate/ensemble on the numpy reference backend: invariant measures against exact
values (error bars from independent paths, compared at 4.5 standard errors), seeds,
resume, validation and divergence."""
import importlib
import json

import numpy as np
import pytest

import sdekit
from sdekit import DivergenceError
from sdekit.systems import DoubleWell, Gaussian, Harmonic

from conftest import assert_within

B = "numpy"


def final_moment(values):
    """Mean over independent paths and its standard error."""
    values = np.asarray(values, dtype=float)
    return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])


# ------------------------------------------------------------------ invariant measures

@pytest.mark.statistical
def test_harmonic_baoab_exact_configurations_at_large_step():
    """BAOAB, h omega = 1.2: <q^2> = kT/omega^2 exactly, on-step <p^2> = kT(1 - h^2 omega^2/4),
    and p right after O has <p^2> = kT exactly."""
    omega, h, kT = 2.0, 0.6, 0.8
    e = sdekit.ensemble("BAOAB", Harmonic(omega), h=h, n_steps=150, n_paths=200_000, gamma=1.5,
                        kT=kT, seed=11, backend=B)
    assert_within(*final_moment(e.q[:, 0] ** 2), kT / omega ** 2, what="BAOAB <q^2>")
    assert_within(*final_moment(e.p[:, 0] ** 2), kT * (1 - (h * omega) ** 2 / 4), what="BAOAB <p^2> on-step")
    assert_within(e.mean["p2_O"][-1], e.stderr("p2_O")[-1], kT, what="BAOAB <p^2> after O")


@pytest.mark.statistical
def test_harmonic_obabo_exact_momenta_at_large_step():
    """OBABO, h omega = 1.2: <p^2> = kT exactly, <q^2> = kT / (omega^2 (1 - h^2 omega^2/4))."""
    omega, h, kT = 1.0, 1.2, 1.0
    e = sdekit.ensemble("OBABO", Harmonic(omega), h=h, n_steps=150, n_paths=200_000, gamma=1.0,
                        kT=kT, seed=12, backend=B)
    assert_within(*final_moment(e.p[:, 0] ** 2), kT, what="OBABO <p^2>")
    assert_within(*final_moment(e.q[:, 0] ** 2), kT / (omega ** 2 * (1 - (h * omega) ** 2 / 4)),
                  what="OBABO <q^2>")


@pytest.mark.statistical
def test_double_well_baoab_approaches_quadrature_as_h_shrinks():
    """Configurational <q^2> of BAOAB on U = (q^2-1)^2, kT = 1: the bias is resolved at
    h = 0.3 (about -0.008) and gone, within 4.5 standard errors, at h = 0.1.
    Paths start in both wells; rare escapes at h = 0.3 are counted, not hidden."""
    sys, kT, n = DoubleWell(), 1.0, 300_000
    exact = sys.exact("q2", kT)[0]
    q0 = np.random.default_rng(0).choice([-1.0, 1.0], size=(n, 1))
    bias = {}
    for h in (0.3, 0.1):
        e = sdekit.ensemble("BAOAB", sys, h=h, n_steps=int(40 / h), n_paths=n, q0=q0, kT=kT,
                            seed=13, backend=B, on_divergence="mask", max_abs=10.0)
        alive = np.setdiff1d(np.arange(n), e.diverged)
        assert len(e.diverged) < 1e-3 * n  # about one in 10^4 here; reported, not hidden
        bias[h] = final_moment(e.q[alive, 0] ** 2 - exact)
    assert_within(*bias[0.1], 0.0, what="BAOAB bias at h = 0.1")
    est, se = bias[0.3]
    assert abs(est) > 4.5 * se, f"bias at h = 0.3 not resolved: {est} +- {se}"
    assert abs(bias[0.1][0]) < abs(est)


def test_double_well_quadrature_against_a_fine_grid():
    x = np.linspace(-4, 4, 400_001)
    w = np.exp(-(x * x - 1) ** 2 / 0.5)
    q2 = np.trapezoid(x * x * w, x) / np.trapezoid(w, x)
    assert DoubleWell(2).exact("q2", 0.5) == pytest.approx([q2, q2], rel=1e-10)


@pytest.mark.statistical
def test_adaptive_langevin_thermostat_law():
    """BADODAB, gamma = 0, sigma_A > 0, 10-dim harmonic: <p.p>/N = kT and
    xi ~ N(sigma_A^2 / (2 kT), eps kT) (Leimkuhler & Shang 2016)."""
    kT, sigma_A, eps, N = 1.0, 1.0, 1.0, 10
    e = sdekit.ensemble("BADODAB", Harmonic(1.0, dim=N), h=0.05, n_steps=1500, n_paths=20_000,
                        gamma=0.0, kT=kT, sigma_A=sigma_A, eps=eps, seed=14, backend=B)
    assert_within(*final_moment((e.p ** 2).sum(axis=1) / N), kT, what="<p.p>/N")
    mean_xi = sigma_A ** 2 / (2 * kT)
    assert_within(*final_moment(e.xi), mean_xi, what="<xi>")
    assert_within(*final_moment((e.xi - mean_xi) ** 2), eps * kT, what="Var xi")


@pytest.mark.statistical
@pytest.mark.parametrize("scheme, exact_var", [
    ("EM", lambda h, w2, kT: kT / (w2 * (1 - h * w2 / 2))),
    ("LM", lambda h, w2, kT: kT / w2),
])
def test_overdamped_exact_discrete_variances(scheme, exact_var):
    """Harmonic U = w^2 q^2/2. EM: q' = (1 - h w^2) q + sqrt(2 h kT) R has stationary
    variance 2 h kT / (1 - (1 - h w^2)^2) = kT / (w^2 (1 - h w^2/2)). LM: with
    u_n = q_n - b R_n, b = sqrt(h kT/2), u' = a u + b (1 + a) R so Var q = b^2 (1+a)/(1-a) + b^2
    = kT / w^2 exactly (a = 1 - h w^2)."""
    omega, h, kT = 1.5, 0.4, 0.7
    e = sdekit.ensemble(scheme, Harmonic(omega), h=h, n_steps=200, n_paths=200_000, kT=kT, seed=15, backend=B)
    assert e.p is None
    assert_within(*final_moment(e.q[:, 0] ** 2), exact_var(h, omega ** 2, kT), what=f"{scheme} <q^2>")


@pytest.mark.statistical
def test_small_step_schemes_agree_with_the_exact_transient():
    """h -> 0: every consistent scheme gives the exact law at a fixed time. Damped harmonic
    oscillator from (q, p) = (1, 0): mean and <q^2> at T = 2 against the exact linear SDE."""
    import scipy.linalg

    omega, gamma, kT, T, h = 1.0, 0.5, 0.5, 2.0, 0.01
    L = np.array([[0.0, 1.0], [-omega ** 2, -gamma]])
    D = np.array([[0.0, 0.0], [0.0, 2 * gamma * kT]])
    # Van Loan: covariance of the exact OU transition over T
    M = scipy.linalg.expm(T * np.block([[-L, D], [np.zeros((2, 2)), L.T]]))
    Phi = M[2:, 2:].T
    mean = Phi @ [1.0, 0.0]
    cov = Phi @ M[:2, 2:]
    for scheme in ("BAOAB", "ABOBA", "OBABO", "OABAO", "BABO", "ABO"):
        e = sdekit.ensemble(scheme, Harmonic(omega), h=h, n_steps=int(T / h), n_paths=40_000, q0=[1.0],
                            gamma=gamma, kT=kT, seed=16, backend=B)
        assert_within(e.mean["q"][-1], e.stderr("q")[-1], mean[0], what=f"{scheme} E q(T)")
        assert_within(e.mean["q2"][-1], e.stderr("q2")[-1], cov[0, 0] + mean[0] ** 2, what=f"{scheme} E q(T)^2")


# ------------------------------------------------------------------ recording, seeds, resume

def test_trajectory_records_and_times():
    r = sdekit.simulate("BAOAB", DoubleWell(2), h=0.1, n_steps=100, seed=0, record_every=10, backend=B,
                        observables={"U": lambda q, p: DoubleWell(2).potential(q)})
    assert r.q.shape == (11, 2) and r.p.shape == (11, 2) and r.p_O.shape == (11, 2) and r.xi.shape == (11,)
    assert np.allclose(r.t, np.arange(11) * 1.0) and r.state.step == 100
    assert np.isnan(r.p_O[0]).all() and np.isfinite(r.p_O[1:]).all()
    assert np.allclose(r.observables["U"], DoubleWell(2).potential(r.q))
    assert np.array_equal(r.q[-1], r.state.q[0])


@pytest.mark.parametrize("seed", [5, np.random.SeedSequence(5)])
def test_same_seed_same_numbers(seed):
    a = sdekit.ensemble("BAOAB", DoubleWell(), h=0.1, n_steps=50, n_paths=100, seed=seed, backend=B)
    b = sdekit.ensemble("BAOAB", DoubleWell(), h=0.1, n_steps=50, n_paths=100, seed=5, backend=B)
    assert np.array_equal(a.q, b.q) and np.array_equal(a.p, b.p)
    c = sdekit.ensemble("BAOAB", DoubleWell(), h=0.1, n_steps=50, n_paths=100, seed=6, backend=B)
    assert not np.array_equal(a.q, c.q)
    g = sdekit.ensemble("BAOAB", DoubleWell(), h=0.1, n_steps=50, n_paths=100,
                        seed=np.random.default_rng(5), backend=B)
    assert np.array_equal(a.q, g.q)


@pytest.mark.parametrize("scheme", ["BAOAB", "BADODAB", "LM", "EM"])
def test_resume_is_bitwise(scheme):
    kw = dict(h=0.05, gamma=0.5, kT=1.0, sigma_A=0.5 if scheme == "BADODAB" else None, backend=B)
    whole = sdekit.simulate(scheme, DoubleWell(2), n_steps=100, seed=3, **kw)
    half = sdekit.simulate(scheme, DoubleWell(2), n_steps=50, seed=3, **kw)
    json.dumps(half.state.rng)  # the stream position is JSON-able
    rest = sdekit.simulate(scheme, DoubleWell(2), n_steps=50, resume=half.state, **kw)
    assert np.array_equal(whole.state.q, rest.state.q) and rest.state.step == 100
    assert np.array_equal(whole.q[51:], rest.q) and np.array_equal(rest.t, whole.t[51:])  # no repeated record 50
    e1 = sdekit.ensemble(scheme, DoubleWell(), n_steps=40, n_paths=30, seed=4, **kw)
    e2 = sdekit.ensemble(scheme, DoubleWell(), n_steps=20, n_paths=30, seed=4, **kw)
    e2 = sdekit.ensemble(scheme, DoubleWell(), n_steps=20, n_paths=30, resume=e2.state, **kw)
    assert np.array_equal(e1.q, e2.q) and np.array_equal(e1.xi, e2.xi)


def test_resume_with_other_settings_is_refused():
    r = sdekit.simulate("BAOAB", DoubleWell(), h=0.1, n_steps=10, seed=0, backend=B)
    with pytest.raises(ValueError, match=r"resume: .*h: state has 0.1, call has 0.2"):
        sdekit.simulate("BAOAB", DoubleWell(), h=0.2, n_steps=10, resume=r.state, backend=B)
    with pytest.raises(ValueError, match="resume: .*scheme"):
        sdekit.simulate("ABOBA", DoubleWell(), h=0.1, n_steps=10, resume=r.state, backend=B)


def test_custom_system_runs_and_matches_builtin():
    def grad(q, out):
        for i in range(q.shape[0]):
            out[i] = 4.0 * q[i] * (q[i] * q[i] - 1.0)

    mine = sdekit.systems.custom(grad, dim=2)
    a = sdekit.ensemble("BAOAB", mine, h=0.1, n_steps=30, n_paths=50, seed=1, backend=B)
    b = sdekit.ensemble("BAOAB", DoubleWell(2), h=0.1, n_steps=30, n_paths=50, seed=1, backend=B)
    assert np.allclose(a.q, b.q, rtol=1e-13, atol=1e-13)


def test_gaussian_system_exact_covariance():
    K = np.array([[2.0, 0.5], [0.5, 1.0]])
    g = Gaussian(K)
    assert np.allclose(g.covariance(0.5) @ K, 0.5 * np.eye(2))
    out = np.empty(2)
    g.gradient(np.array([1.0, -2.0]), out)
    assert np.allclose(out, K @ [1.0, -2.0]) and np.allclose(g.grad(np.array([1.0, -2.0])), out)


# ------------------------------------------------------------------ bad input and divergence

GOOD = dict(scheme="BAOAB", system=Harmonic(1.0, dim=2), h=0.1, n_steps=5)


@pytest.mark.parametrize("arg, value", [
    ("h", 0.0), ("h", -0.1), ("h", float("nan")), ("h", float("inf")), ("h", "0.1"), ("h", None),
    ("gamma", -1.0), ("gamma", float("nan")), ("kT", -0.5), ("kT", float("inf")),
    ("n_steps", -1), ("n_steps", 2.5), ("n_steps", True), ("record_every", 0),
    ("q0", [0.0, float("nan")]), ("q0", [0.0, 0.0, 0.0]), ("q0", "zero"), ("q0", []),
    ("p0", [[1.0, 2.0]]), ("mass", [1.0, -1.0]), ("mass", [1.0, 1.0, 1.0]), ("mass", 0.0),
    ("eps", -1.0), ("sigma_A", -0.1), ("xi0", float("nan")), ("seed", -3), ("seed", "abc"),
    ("dtype", "float16"), ("backend", "gpu"), ("max_abs", 0.0), ("observables", {"f": 3}),
    ("scheme", "BAXAB"), ("scheme", ""), ("system", "double well"),
])
def test_bad_input_is_a_value_error_naming_the_argument(arg, value):
    with pytest.raises(ValueError) as err:
        sdekit.simulate(**{**GOOD, "backend": B, arg: value})
    assert str(err.value).startswith(arg), str(err.value)


@pytest.mark.parametrize("arg, value", [("n_paths", 0), ("n_paths", 1.5), ("on_divergence", "ignore"),
                                        ("q0", np.zeros((3, 2))), ("xi0", np.zeros(3))])
def test_bad_ensemble_input(arg, value):
    kwargs = dict(GOOD, n_paths=4, backend=B)
    kwargs[arg] = value
    with pytest.raises(ValueError, match=f"^{arg}"):
        sdekit.ensemble(**kwargs)


def test_overdamped_refuses_momentum_and_mass():
    with pytest.raises(ValueError, match="^p0"):
        sdekit.simulate("EM", Harmonic(), h=0.1, n_steps=2, p0=[1.0], backend=B)
    with pytest.raises(ValueError, match="^mass"):
        sdekit.simulate("LM", Harmonic(), h=0.1, n_steps=2, mass=2.0, backend=B)


def test_unstable_run_stops_with_an_error_naming_the_step():
    """h omega = 2.5 > 2: Verlet is unstable; |q| grows like 4^n and overflows."""
    with pytest.raises(DivergenceError, match=r"divergence at step \d+") as err:
        sdekit.simulate("BAOAB", Harmonic(1.0), h=2.5, n_steps=10_000, q0=[1.0], gamma=0.0, seed=0, backend=B)
    assert 100 < err.value.step < 10_000 and err.value.path is None


def test_ensemble_divergence_names_the_path_or_masks_it():
    q0 = np.zeros((5, 1))
    q0[3] = 3.0  # on the double well at h = 0.3, |q| > 2 is unstable
    kw = dict(h=0.3, n_steps=200, n_paths=5, q0=q0, gamma=1.0, kT=0.0, seed=0, backend=B)
    with pytest.raises(DivergenceError, match=r"\(path 3\)") as err:
        sdekit.ensemble("BAOAB", DoubleWell(), **kw)
    assert err.value.path == 3
    e = sdekit.ensemble("BAOAB", DoubleWell(), on_divergence="mask", **kw)
    assert e.diverged.tolist() == [3] and e.n_alive[-1] == 4 and np.isfinite(e.mean["q2"][-1]).all()


@pytest.mark.parametrize("scheme", ["EM", "LM", "BAOAB", "BADODAB"])
def test_float32_stays_float32(scheme):
    e = sdekit.ensemble(scheme, DoubleWell(), h=0.05, n_steps=5, n_paths=4, seed=0, dtype="float32", backend=B)
    assert e.q.dtype == np.float32 and (e.p is None or e.p.dtype == np.float32)


def test_mask_with_every_path_lost_is_an_error_not_nan():
    with pytest.raises(DivergenceError, match="all 3 paths had diverged by step"):
        sdekit.ensemble("BAOAB", Harmonic(1.0), h=2.5, n_steps=2000, n_paths=3, q0=[1.0], gamma=0.0, seed=0,
                        backend=B, on_divergence="mask")


# ------------------------------------------------------------------ issue 16

def test_mask_defaults_to_the_escape_bound():
    """OBABO on the double well at h = 0.35: paths past escape_bound (5) but not yet overflowing
    used to be averaged in (<q^2> ~ 1e44). Under "mask" max_abs defaults to system.escape_bound."""
    e = sdekit.ensemble("OBABO", DoubleWell(), h=0.35, n_steps=400, n_paths=20_000, seed=1, backend=B,
                        on_divergence="mask")
    assert len(e.diverged) > 0
    assert e.mean["q2"][-1, 0] < 25.0
    assert np.all(np.abs(np.delete(e.q, e.diverged, axis=0)) <= DoubleWell.escape_bound)
    loose = sdekit.ensemble("OBABO", DoubleWell(), h=0.35, n_steps=400, n_paths=20_000, seed=1, backend=B,
                            on_divergence="mask", max_abs=1e60)  # an explicit bound wins
    assert loose.mean["q2"][-1, 0] > 1e6


@pytest.mark.parametrize("driver", ["simulate", "ensemble"])
def test_misspelt_keyword_names_the_public_function(driver):
    fn = getattr(sdekit, driver)
    args = ("BAOAB", DoubleWell()) + ((0.1, 5) if driver == "simulate" else (0.1, 5, 3))
    with pytest.raises(TypeError, match=rf"^{driver}\(\) got an unexpected keyword argument 'gama'.*'gamma'"):
        fn(*args, gama=1.0, backend=B)
    with pytest.raises(TypeError, match=rf"^{driver}\(\) got an unexpected keyword argument 'hh'"):
        fn("BAOAB", DoubleWell(), hh=0.1, n_steps=5, backend=B)
    assert fn.__name__ == driver


def test_huge_n_paths_is_refused_before_allocating(monkeypatch):
    sim = importlib.import_module("sdekit.simulate")  # the module (sdekit.simulate is the driver)
    with pytest.raises(ValueError, match=r"^n_paths: .*1000000000000.* bytes.*available") as info:
        sdekit.ensemble("BAOAB", DoubleWell(), 0.1, 5, 10 ** 12, backend=B)  # was a MemoryError
    assert "np." not in str(info.value)
    monkeypatch.setattr(sim, "available_memory", lambda: 10_000)
    with pytest.raises(ValueError, match=r"^n_paths: "):
        sdekit.ensemble("BAOAB", DoubleWell(), 0.1, 5, 1000, backend=B)
    monkeypatch.setattr(sim, "available_memory", lambda: None)  # unknown: no check
    sdekit.ensemble("BAOAB", DoubleWell(), 0.1, 5, 1000, backend=B)


@pytest.mark.parametrize("dtype", [np.float32, np.dtype("float32"), "float32", "f4"])
def test_dtype_accepts_numpy_dtypes(dtype):
    want = sdekit.ensemble("BAOAB", DoubleWell(), 0.1, 5, 3, seed=0, backend=B, dtype="float32")
    e = sdekit.ensemble("BAOAB", DoubleWell(), 0.1, 5, 3, seed=0, backend=B, dtype=dtype)
    assert e.q.dtype == np.float32 and np.array_equal(e.q, want.q)
    assert e.state.spec == want.state.spec
    t = sdekit.simulate("BAOAB", DoubleWell(), 0.1, 5, seed=0, backend=B, dtype=dtype)
    assert t.q.dtype == np.float32


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_resumed_run_drops_its_first_record(backend):
    """A resumed run does not repeat the previous run's last record: concatenating the two
    gives the records of one long run."""
    kw = dict(h=0.05, gamma=0.5, kT=1.0, backend=backend, record_every=5)
    whole = sdekit.simulate("BAOAB", DoubleWell(), n_steps=100, seed=3, **kw)
    half = sdekit.simulate("BAOAB", DoubleWell(), n_steps=50, seed=3, **kw)
    rest = sdekit.simulate("BAOAB", DoubleWell(), n_steps=50, resume=half.state, **kw)
    for name in ("t", "q", "p", "p_O", "xi"):
        np.testing.assert_array_equal(np.concatenate([getattr(half, name), getattr(rest, name)]),
                                      getattr(whole, name))
    e1 = sdekit.ensemble("BAOAB", DoubleWell(), n_steps=60, n_paths=40, seed=4, **kw)
    a = sdekit.ensemble("BAOAB", DoubleWell(), n_steps=30, n_paths=40, seed=4, **kw)
    b = sdekit.ensemble("BAOAB", DoubleWell(), n_steps=30, n_paths=40, resume=a.state, **kw)
    np.testing.assert_array_equal(np.concatenate([a.t, b.t]), e1.t)
    np.testing.assert_array_equal(np.concatenate([a.n_alive, b.n_alive]), e1.n_alive)
    for k in e1.mean:
        np.testing.assert_array_equal(np.concatenate([a.mean[k], b.mean[k]]), e1.mean[k])
        np.testing.assert_array_equal(np.concatenate([a.meansq[k], b.meansq[k]]), e1.meansq[k])
    empty = sdekit.simulate("BAOAB", DoubleWell(), n_steps=0, resume=half.state, **kw)
    assert empty.q.shape == (0, 1) and empty.t.shape == (0,)


def test_progress_shows_in_a_notebook(monkeypatch):
    from sdekit import records
    assert records.progress_bar(None, 10, 1e9, "x").disable  # tests: not a terminal, no kernel
    monkeypatch.setattr(records, "in_notebook", lambda: True)
    bar = records.progress_bar(None, 10, 1e9, "x")
    assert not bar.disable
    bar.close()
    assert records.progress_bar(None, 10, 10, "x").disable  # short runs stay quiet
    assert records.progress_bar(False, 10, 1e9, "x").disable


def test_resume_keeps_the_states_bound():
    """Without max_abs a resumed run takes the state's: a "mask" state (max_abs = escape_bound)
    continues under "raise", and a state made without a bound (under "raise", or before the
    escape-bound default) continues under "mask" as it was made."""
    kw = dict(h=0.1, n_paths=20, seed=2, backend=B)
    masked = sdekit.ensemble("BAOAB", DoubleWell(), n_steps=10, on_divergence="mask", **kw)
    assert masked.state.spec["max_abs"] == DoubleWell.escape_bound
    on = sdekit.ensemble("BAOAB", DoubleWell(), n_steps=10, resume=masked.state, **kw)
    assert on.spec.max_abs == DoubleWell.escape_bound
    loose = sdekit.ensemble("BAOAB", DoubleWell(), n_steps=10, **kw)
    on = sdekit.ensemble("BAOAB", DoubleWell(), n_steps=10, resume=loose.state, on_divergence="mask", **kw)
    assert on.spec.max_abs is None


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_resume_off_the_record_grid_keeps_its_first_record(backend):
    """10 steps recorded every 4, then 10 more: the resume step (10) is off the grid, so the
    previous run never recorded that state and the resumed run keeps it as record 0."""
    kw = dict(h=0.1, gamma=0.5, kT=1.0, backend=backend, record_every=4)
    first = sdekit.simulate("BAOAB", DoubleWell(), n_steps=10, seed=3, **kw)
    rest = sdekit.simulate("BAOAB", DoubleWell(), n_steps=10, resume=first.state, **kw)
    np.testing.assert_allclose(first.t, [0.0, 0.4, 0.8])
    np.testing.assert_allclose(rest.t, [1.0, 1.4, 1.8], rtol=1e-15)
    np.testing.assert_array_equal(rest.q[0], first.state.q[0])
