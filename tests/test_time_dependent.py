"""Time-dependent letters: the clock rides with A (issue 10, core part).

The reference for a driven, time-dependent harmonic oscillator

    dq = p/m dt,  dp = (-w2 q + a cos(nu t) - gamma(t) p) dt + sqrt(2 gamma(t) kT(t) m) dW

is an exact affine recursion of the scheme's mean and covariance (each letter an
affine map at its clock time, written here independently of sdekit.operators so that
a broken letter shows), and, for the weak order, the exact moment ODEs.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.integrate import solve_ivp

import sdekit
from sdekit import schedules, systems
from sdekit.schemes import Scheme
from sdekit.simulate import TIME_DEPENDENT_BACKENDS, make_spec

from conftest import assert_within

W2, A, NU = 1.3, 0.8, 1.7  # stiffness, drive amplitude and frequency


def gamma_t(t):
    return 1.0 + 0.5 * math.sin(t)


def kT_t(t):
    return 0.6 + 0.3 * math.cos(0.9 * t)


def drive(t):
    return A * math.cos(NU * t)


def _grad_driven(q, t, out):
    out[0] = 1.3 * q[0] - 0.8 * math.cos(1.7 * t)


def _grad_plain(q, out):
    out[0] = 1.3 * q[0]


def _grad_ignoring_t(q, t, out):
    out[0] = 1.3 * q[0]


DRIVEN = systems.custom(_grad_driven, 1, name="driven", time_dependent=True)


# ----------------------------------------------------------------------------- exact recursion

def letter_affine(letter, delta, t, gamma, kT, mass):
    """(T, b, Q) of one letter at clock time t on x = (q, p): x' = T x + b + N(0, Q)."""
    if letter == "A":
        return np.array([[1.0, delta / mass], [0.0, 1.0]]), np.zeros(2), np.zeros((2, 2))
    if letter == "B":
        return np.array([[1.0, 0.0], [-delta * W2, 1.0]]), np.array([0.0, delta * drive(t)]), np.zeros((2, 2))
    g = gamma(t)
    c = math.exp(-g * delta)
    return np.diag([1.0, c]), np.zeros(2), np.diag([0.0, kT(t) * (1.0 - c * c) * mass])


def moments_recursion(word, h, n_steps, gamma, kT, mass=1.0, t0=0.0, x0=(1.0, 0.0), clock=None):
    """Exact means and covariances of the scheme's chain after 0..n_steps steps.

    ``clock`` (default ``Scheme.substep_times``) is the letters' time fractions; EM on q
    alone uses force and kT at t_n."""
    s = Scheme(word)
    if s.overdamped == "EM":
        m, v, out = x0[0], 0.0, [(np.array([x0[0]]), np.zeros((1, 1)))]
        for n in range(n_steps):
            t = t0 + n * h
            m, v = (1 - h * W2) * m + h * drive(t), (1 - h * W2) ** 2 * v + 2 * h * kT(t)
            out.append((np.array([m]), np.array([[v]])))
        return out
    taus = s.substep_times if clock is None else clock
    m, C = np.array(x0, dtype=float), np.zeros((2, 2))
    out = [(m, C)]
    for n in range(n_steps):
        tn = t0 + n * h
        for (letter, f), tau in zip(s.steps, taus):
            T, b, Q = letter_affine(letter, f * h, tn + h * tau, gamma, kT, mass)
            m, C = T @ m + b, T @ C @ T.T + Q
        out.append((m, C))
    return out


def exact_moments(T_end, gamma, kT, mass=1.0, x0=(1.0, 0.0), overdamped=False):
    """Mean and covariance of the SDE at T_end from the moment ODEs (DOP853, rtol 1e-13)."""
    def rhs(t, y):
        if overdamped:
            m, v = y
            return [-W2 * m + drive(t), -2 * W2 * v + 2 * kT(t)]
        m, C = y[:2], y[2:].reshape(2, 2)
        L = np.array([[0.0, 1.0 / mass], [-W2, -gamma(t)]])
        dC = L @ C + C @ L.T + np.diag([0.0, 2 * gamma(t) * kT(t) * mass])
        return np.concatenate([L @ m + [0.0, drive(t)], dC.ravel()])

    y0 = [x0[0], 0.0] if overdamped else np.concatenate([x0, np.zeros(4)])
    y = solve_ivp(rhs, (0.0, T_end), y0, method="DOP853", rtol=1e-13, atol=1e-15).y[:, -1]
    return (y[:1], y[1:].reshape(1, 1)) if overdamped else (y[:2], y[2:].reshape(2, 2))


# ----------------------------------------------------------------------------- clock

@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ABODVR ", min_size=1, max_size=12).filter(str.strip))
def test_substep_times_are_cumulative_A_fractions(spelled):
    s = Scheme(spelled)  # any word parses (openmmtools V = B, R = A; spaces dropped)
    word = spelled.replace(" ", "").replace("V", "B").replace("R", "A")
    assert s.word == word
    taus = s.substep_times
    n_A = word.count("A")
    assert len(taus) == len(s.steps)
    assert all(0.0 <= x <= 1.0 for x in taus)
    assert all(a <= b for a, b in zip(taus, taus[1:]))
    assert taus == tuple(math.fsum([1.0 / max(n_A, 1)] * word[:k].count("A")) for k in range(len(word)))


def test_substep_times_examples():
    assert Scheme("BAOAB").substep_times == (0.0, 0.0, 0.5, 0.5, 1.0)
    assert Scheme("OBABO").substep_times == (0.0, 0.0, 0.0, 1.0, 1.0)
    assert Scheme([("A", 0.25), ("B", 1.0), ("A", 0.75)]).substep_times == (0.0, 0.25, 0.25)
    assert Scheme("EM").substep_times == ()


def test_coefficient_tables_shapes_and_values():
    spec = make_spec("BADODAB", systems.Harmonic(), 0.2, gamma_t, kT_t, 1.0, None, None, "float64", None, t0=0.5)
    tab = schedules.coefficient_tables(spec, 3, 4)
    tn = 0.5 + np.arange(3, 7) * 0.2
    np.testing.assert_array_equal(tab.t, tn[:, None] + 0.2 * np.array([0, 0, .5, .5, .5, .5, 1.0]))
    assert tab.gamma.shape == tab.sigma.shape == tab.c.shape == tab.s.shape == (4, 1)
    assert tab.kT.shape == (4, 2)
    t_O = tn + 0.1
    np.testing.assert_allclose(tab.gamma[:, 0], [gamma_t(t) for t in t_O], rtol=1e-15)
    np.testing.assert_allclose(tab.sigma[:, 0], [math.sqrt(2 * gamma_t(t) * kT_t(t)) for t in t_O], rtol=1e-15)
    np.testing.assert_allclose(tab.c[:, 0], [math.exp(-0.2 * gamma_t(t)) for t in t_O], rtol=1e-15)
    np.testing.assert_allclose(tab.s[:, 0] ** 2, [kT_t(t) * (1 - math.exp(-0.4 * gamma_t(t))) for t in t_O],
                               rtol=1e-13)
    np.testing.assert_allclose(tab.kT, [[kT_t(t + 0.1)] * 2 for t in tn], rtol=1e-15)
    em = schedules.coefficient_tables(make_spec("EM", systems.Harmonic(), 0.2, 1.0, kT_t, 1.0, None, None,
                                                "float64", None), 0, 3)
    assert em.t.shape == em.kT.shape == (3, 1) and em.c.shape == (3, 0)
    np.testing.assert_array_equal(em.kT[:, 0], [kT_t(0.2 * n) for n in range(3)])


# ----------------------------------------------------------------------------- exact: noise-free paths

@pytest.mark.parametrize("word", ["BAOAB", "OBABO", "ABOBA", "BABO"])
def test_noise_free_path_follows_exact_recursion(word):
    h, n, t0, mass = 0.15, 40, 0.7, 1.5
    zero = lambda t: 0.0
    run = sdekit.simulate(word, DRIVEN, h, n, gamma=gamma_t, kT=zero, mass=mass, q0=[1.0], p0=[0.0],
                          seed=0, t0=t0, backend="numpy")
    exact = moments_recursion(word, h, n, gamma_t, zero, mass, t0)
    np.testing.assert_allclose(run.t, t0 + h * np.arange(n + 1), rtol=0, atol=1e-14)
    np.testing.assert_allclose(run.q[:, 0], [m[0] for m, _ in exact], rtol=0, atol=1e-12)
    np.testing.assert_allclose(run.p[:, 0], [m[1] for m, _ in exact], rtol=0, atol=1e-12)


def test_noise_free_em_follows_exact_recursion():
    h, n, t0 = 0.1, 50, 0.3
    run = sdekit.simulate("EM", DRIVEN, h, n, kT=lambda t: 0.0, q0=[1.0], seed=0, t0=t0, backend="numpy")
    exact = moments_recursion("EM", h, n, None, lambda t: 0.0, t0=t0)
    np.testing.assert_allclose(run.q[:, 0], [m[0] for m, _ in exact], rtol=0, atol=1e-12)


def test_thermostat_uses_kT_at_its_clock_time():
    """DAD on a free particle: xi_{n+1} = xi_n + (h/2) eps (p^2/m - kT(t_n)) + (h/2) eps (p^2/m - kT(t_n + h))."""
    h, n, eps, p0, mass = 0.2, 10, 0.7, 1.1, 2.0
    run = sdekit.simulate("DAD", systems.Harmonic(), h, n, kT=kT_t, eps=eps, mass=mass, p0=[p0], seed=0,
                          backend="numpy")
    xi = [0.0]
    for k in range(n):
        t = k * h
        xi.append(xi[-1] + 0.5 * h * eps * (p0 * p0 / mass - kT_t(t)) + 0.5 * h * eps * (p0 * p0 / mass - kT_t(t + h)))
    np.testing.assert_allclose(run.xi, xi, rtol=0, atol=1e-13)


# ----------------------------------------------------------------------------- weak order

def _errors(word, Ns, T_end, overdamped=False):
    m_ex, C_ex = exact_moments(T_end, gamma_t, kT_t, overdamped=overdamped)
    err_m, err_C = [], []
    for N in Ns:
        m, C = moments_recursion(word, T_end / N, N, gamma_t, kT_t)[-1]
        err_m.append(np.max(np.abs(m - m_ex)))
        err_C.append(np.max(np.abs(C - C_ex)))
    return np.array(err_m), np.array(err_C)


def _slope(hs, errors):
    return np.polyfit(np.log(hs), np.log(errors), 1)[0]


def test_weak_order_two_for_baoab_one_for_em():
    """No sampling noise: the exact recursion's moments at T = 2 against the moment ODEs."""
    T_end, Ns = 2.0, np.array([20, 40, 80, 160])
    hs = T_end / Ns
    err_m, err_C = _errors("BAOAB", Ns, T_end)
    assert abs(_slope(hs, err_m) - 2.0) < 0.05 and abs(_slope(hs, err_C) - 2.0) < 0.05, (err_m, err_C)
    err_m, err_C = _errors("EM", Ns, T_end, overdamped=True)
    assert abs(_slope(hs, err_m) - 1.0) < 0.05 and abs(_slope(hs, err_C) - 1.0) < 0.05, (err_m, err_C)


def test_weak_order_needs_the_clock_riding_with_A():
    """The test above can fail: freezing every letter's clock at t_n costs BAOAB an order."""
    T_end, Ns = 2.0, np.array([20, 40, 80, 160])
    m_ex, C_ex = exact_moments(T_end, gamma_t, kT_t)
    err = [np.max(np.abs(moments_recursion("BAOAB", T_end / N, N, gamma_t, kT_t, clock=(0,) * 5)[-1][0] - m_ex))
           for N in Ns]
    assert abs(_slope(T_end / Ns, err) - 1.0) < 0.1, err


# ----------------------------------------------------------------------------- statistical

def _moments_of(exact, name):
    m, C = exact
    if name in ("q", "p"):
        i = "qp".index(name)
        return m[i]
    i = "qp".index(name[0])
    return C[i, i] + m[i] ** 2


@pytest.mark.statistical
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("word", ["BAOAB", "EM"])
def test_ensemble_matches_exact_recursion(word, backend):
    """With noise (sigma(t) = sqrt(2 gamma(t) kT(t))): each backend's moments against the
    scheme's exact mean/covariance recursion, within 4.5 standard errors."""
    h, n, every, t0 = 0.2, 40, 8, 0.4
    mass = None if word == "EM" else 1.5
    ens = sdekit.ensemble(word, DRIVEN, h, n, 20_000, gamma=gamma_t, kT=kT_t, mass=mass, q0=[1.0],
                          seed=11, record_every=every, t0=t0, backend=backend)
    exact = moments_recursion(word, h, n, gamma_t, kT_t, 1.0 if mass is None else mass, t0)[every::every]
    for name in ("q", "q2") if word == "EM" else ("q", "p", "q2", "p2"):
        want = [_moments_of(e, name) for e in exact]
        assert_within(ens.mean[name][1:, 0], ens.stderr(name)[1:, 0], want, 4.5, f"{backend} {word} <{name}>")


@pytest.mark.statistical
def test_ou_with_driving_noise_schedule():
    """O alone with gamma(t), sigma_A(t): Var p' = c^2 Var p + sigma_A(t)^2 (1 - c^2) / (2 gamma(t))."""
    h, n, sigma_A = 0.3, 12, lambda t: 0.5 + 0.4 * math.sin(2 * t)
    ens = sdekit.ensemble("O", systems.Harmonic(), h, n, 20_000, gamma=gamma_t, sigma_A=sigma_A, p0=[2.0],
                          seed=5, record_every=1, backend="numpy")
    mean, var, want = 2.0, 0.0, []
    for k in range(n):
        t = k * h
        c = math.exp(-gamma_t(t) * h)
        mean, var = c * mean, c * c * var + sigma_A(t) ** 2 * (1 - c * c) / (2 * gamma_t(t))
        want.append(var + mean * mean)
    assert_within(ens.mean["p2"][1:, 0], ens.stderr("p2")[1:, 0], want, 4.5, "<p^2>")


# ----------------------------------------------------------------------------- bitwise reduction

def _same(a, b):
    for name in ("q", "p", "xi"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or np.array_equal(x, y), name
    for name in a.mean:
        assert np.array_equal(a.mean[name], b.mean[name], equal_nan=True), name


@pytest.mark.parametrize("word, dtype", [("BAOAB", "float64"), ("BADODAB", "float64"), ("OBABO", "float32"),
                                         ("EM", "float64"), ("LM", "float32")])
def test_constant_callables_reduce_bitwise(word, dtype):
    common = dict(n_paths=50, seed=3, record_every=5, q0=[0.5, -0.2], dtype=dtype, backend="numpy")
    sA = 0.9 if word == "BADODAB" else None
    plain = sdekit.ensemble(word, systems.Harmonic([1.0, 2.0]), 0.1, 20, gamma=1.3, kT=0.7, sigma_A=sA, **common)
    timed = sdekit.ensemble(word, systems.Harmonic([1.0, 2.0]), 0.1, 20, gamma=lambda t: 1.3,
                            kT=lambda t: 0.7, sigma_A=None if sA is None else (lambda t: 0.9), **common)
    assert timed.spec.time_dependent and not plain.spec.time_dependent
    _same(plain, timed)


@pytest.mark.parametrize("word", ["BAOAB", "LM"])
def test_force_ignoring_t_reduces_bitwise(word):
    plain = systems.custom(_grad_plain, 1)
    timed = systems.custom(_grad_ignoring_t, 1, time_dependent=True)
    common = dict(n_paths=40, seed=4, record_every=10, q0=[0.3], gamma=0.8, kT=1.1, backend="numpy")
    _same(sdekit.ensemble(word, plain, 0.2, 30, **common), sdekit.ensemble(word, timed, 0.2, 30, t0=5.0, **common))


def test_default_backend_runs_time_dependent_specs():
    run = sdekit.simulate("BAOAB", DRIVEN, 0.1, 3, seed=0)
    assert run.state.backend in TIME_DEPENDENT_BACKENDS


def test_t0_only_shifts_the_clock_of_a_time_independent_run():
    a = sdekit.simulate("BAOAB", systems.Harmonic(), 0.1, 10, seed=1, backend="numpy")
    b = sdekit.simulate("BAOAB", systems.Harmonic(), 0.1, 10, seed=1, t0=2.5, backend="numpy")
    assert np.array_equal(a.q, b.q) and np.array_equal(a.p, b.p)
    np.testing.assert_array_equal(b.t, 2.5 + a.t)


def test_chunks_and_resume_keep_the_clock(tmp_path):
    args = ("BAOAB", DRIVEN, 0.1, 30)
    kw = dict(gamma=gamma_t, kT=kT_t, q0=[1.0], seed=9, t0=0.4, backend="numpy")
    whole = sdekit.simulate(*args, **kw)
    chunked = sdekit.simulate(*args, checkpoint=tmp_path / "c.npz", checkpoint_every=7, **kw)
    assert np.array_equal(whole.q, chunked.q) and np.array_equal(whole.p, chunked.p)
    np.testing.assert_array_equal(whole.t, chunked.t)
    half = sdekit.simulate("BAOAB", DRIVEN, 0.1, 12, **kw)
    rest = sdekit.simulate("BAOAB", DRIVEN, 0.1, 18, resume=half.state, **kw)
    assert np.array_equal(rest.q, whole.q[13:]) and np.array_equal(rest.t, whole.t[13:])
    with pytest.raises(ValueError, match="t0"):
        sdekit.simulate("BAOAB", DRIVEN, 0.1, 18, resume=half.state, **{**kw, "t0": 0.0})


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("name, bad, value", [("gamma", lambda t: -1.0, "-1.0"), ("kT", lambda t: math.nan, "nan"),
                                              ("sigma_A", lambda t: -0.5, "-0.5")])
def test_bad_schedule_values_name_argument_value_and_time(name, bad, value):
    # BAOAB's O, the first letter to need them, acts at t0 + h/2
    with pytest.raises(ValueError, match=rf"{name}: {name}\(t\) must be .* got {value} at t=0.05"):
        sdekit.simulate("BAOAB", systems.Harmonic(), 0.1, 5, **{name: bad}, backend="numpy")


def test_bad_schedule_value_later_in_the_run_names_the_time():
    with pytest.raises(ValueError, match=r"gamma: gamma\(t\) must be .* got -0\.05.* at t=1\.05"):
        sdekit.simulate("BAOAB", systems.Harmonic(), 0.1, 20, gamma=lambda t: 1.0 - t, backend="numpy")


def test_bad_schedule_return_type():
    with pytest.raises(ValueError, match=r"kT: kT\(t\) must be a finite real number >= 0, got 'hot'"):
        sdekit.simulate("EM", systems.Harmonic(), 0.1, 5, kT=lambda t: "hot", backend="numpy")


def test_bad_time_dependent_inputs():
    with pytest.raises(ValueError, match="gamma: must be a real number, got 'fast'"):
        sdekit.simulate("BAOAB", systems.Harmonic(), 0.1, 5, gamma="fast")
    with pytest.raises(ValueError, match="t0: must be finite, got inf"):
        sdekit.simulate("BAOAB", systems.Harmonic(), 0.1, 5, t0=math.inf)
    with pytest.raises(ValueError, match="time_dependent: must be True or False, got 1"):
        systems.custom(_grad_driven, 1, time_dependent=1)
    with pytest.raises(ValueError, match="scheme: BOB has a B but no A"):
        sdekit.simulate("BOB", DRIVEN, 0.1, 5, backend="numpy")
    with pytest.raises(ValueError, match="t: the time-dependent system driven needs the time t"):
        DRIVEN.force(np.zeros(1))
    with pytest.raises(ValueError, match="t: custom does not depend on time, got t=1.0"):
        systems.custom(_grad_plain, 1).grad(np.zeros(1), 1.0)
    for backend in sorted({"cpu", "cuda"} - set(TIME_DEPENDENT_BACKENDS)):
        with pytest.raises(ValueError, match=f"backend: .* got backend='{backend}'"):
            sdekit.simulate("BAOAB", DRIVEN, 0.1, 5, backend=backend)


# ----------------------------------------------------------------------------- diffusion models

def test_core_em_with_schedules_is_diffusion_em_reverse_vp_sampler():
    """Overdamped EM in the reverse time tau = T - t with F(q, tau) = beta/2 q + beta score and
    kT(tau) = beta/2 is Song et al.'s Euler-Maruyama VP sampler: same normals, same paths."""
    from sdekit import diffusion

    b_min, b_max, mu0, var0, T, eps, N, n = 0.1, 20.0, 1.5, 0.3, 1.0, 1e-3, 60, 500
    sde = diffusion.VPSDE(b_min, b_max, T)

    def grad(q, tau, out):  # -(beta/2 q + beta score) at t = T - tau, exact score of N(mu0, var0) data
        t = T - tau
        beta = b_min + t * (b_max - b_min)
        alpha2 = math.exp(-(b_min * t + 0.5 * (b_max - b_min) * t * t))
        score = -(q[0] - math.sqrt(alpha2) * mu0) / (alpha2 * var0 + 1.0 - alpha2)
        out[0] = -(0.5 * beta * q[0] + beta * score)

    reverse_vp = systems.custom(grad, 1, name="reverse VP", time_dependent=True)
    kT = lambda tau: 0.5 * sde.schedule.beta(T - tau)
    ref = diffusion.sample(diffusion.EulerMaruyama(sde), diffusion.GaussianScore(sde, [mu0], [[var0]]),
                           n, N, 1, seed=7, eps=eps)
    rng = np.random.default_rng(7)
    u0 = rng.standard_normal((n, 1))  # diffusion.sample's prior draw, then one block of normals per step
    ens = sdekit.ensemble("EM", reverse_vp, (T - eps) / N, N, n, kT=kT, q0=u0, seed=rng, backend="numpy")
    np.testing.assert_allclose(ens.q, ref.x, rtol=0, atol=1e-9)
