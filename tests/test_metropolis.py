"""Metropolis-adjusted words: the grammar of { }, GHMC and MALA, their exact stationary laws,
acceptance rates against independent estimates, and what they refuse.

The statistical tests fail under ``--break-letter=M`` (the Metropolis test on 0.8 dH: too
many proposals accepted) and the exact-law tests of the unadjusted words are the contrast:
the same steps without the test are far off.
"""
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy import integrate

import sdekit
from sdekit import linear, systems
from sdekit.schemes import Scheme
from sdekit.systems import DoubleWell, Harmonic

from conftest import assert_within
from test_kernels import run_child

def rng(seed):
    """Each test's own generator (xdist runs tests in any order: no shared state)."""
    return np.random.default_rng([20261201, seed])


# ----------------------------------------------------------------------------- the grammar

def test_brace_words_parse_with_one_force_evaluation_and_one_uniform():
    s = Scheme("O{BAB}O")
    assert s == Scheme("GHMC") == Scheme("O { V R V } O")
    assert s.evaluations == (False, False, False, False, True, False, False) and s.force_evaluations == 1
    assert s.tests == 1 and s.draws(3) == 2 * 3 + 1
    assert Scheme("MALA").tests == 1 and Scheme("MALA").draws(2) == 3
    assert "1 Metropolis test" in s.describe() and "accept" in s.describe()
    assert Scheme(s.to_json()) == s and Scheme("BAOAB").tests == 0


@pytest.mark.parametrize("word, match", [
    ("O{AB}O", "not symmetric"), ("O{BOB}O", "cannot be inside"), ("{BAB", "without its '}'"),
    ("BAB}O", "without its '{'"), ("O{}O", "empty"), ("O{B{A}B}O", "do not nest"), ("O{BDB}AO", "cannot be inside"),
])
def test_bad_brace_words_are_refused(word, match):
    with pytest.raises(ValueError, match=match):
        Scheme(word)


@given(st.lists(st.sampled_from("AB"), min_size=1, max_size=4))
def test_every_palindromic_sub_word_is_a_time_reversible_proposal(half):
    """A symmetric word of A and B, followed by p -> -p, is its own inverse (to rounding):
    the property that makes the test at } exact."""
    inner = "".join(half + half[::-1])
    s = Scheme("O{" + inner + "}O")
    steps = [(l, f) for (l, f), e in zip(s.steps, s.entries) if l in "AB"]
    rng = np.random.default_rng(len(inner))
    q, p = rng.standard_normal(2)
    grad = lambda x: 4 * x * (x * x - 1)
    h = 0.1

    def run(q, p):
        for letter, f in steps:
            if letter == "A":
                q = q + f * h * p
            else:
                p = p - f * h * grad(q)
        return q, p

    q1, p1 = run(q, p)
    q2, p2 = run(q1, -p1)
    np.testing.assert_allclose([q2, -p2], [q, p], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- exact stationary laws

def _stationary_dw(n, rng):
    """Exact samples of exp(-(q^2 - 1)^2) (kT = 1) by the inverse CDF on a fine grid."""
    x = np.linspace(-3.5, 3.5, 200001)
    w = np.exp(-(x * x - 1.0) ** 2)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(x))])
    return np.interp(rng.random(n), cdf / cdf[-1], x)[:, None]


@pytest.mark.statistical
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_ghmc_is_exact_on_the_harmonic_oscillator_at_h_omega_1_5(backend):
    """h omega = 1.5: OBABO (the same steps, no test) has <q^2> = 1 / (1 - h^2/4) = 2.29; GHMC is exact."""
    n = 20000 if backend == "cpu" else 5000
    kw = dict(h=1.5, n_steps=60, n_paths=n, record_every=60, seed=11, backend=backend,
              q0=rng(1).standard_normal((n, 1)), p0=rng(2).standard_normal((n, 1)))
    g = sdekit.ensemble("O{BAB}O", Harmonic(1.0), **kw)
    for name in ("q2", "p2"):
        assert_within(g.mean[name][-1], g.stderr(name)[-1], 1.0, what=f"GHMC {name}")
    u = sdekit.ensemble("OBABO", Harmonic(1.0), **kw)
    assert u.mean["q2"][-1, 0] > 1.0 + 20 * u.stderr("q2")[-1, 0]


@pytest.mark.statistical
def test_ghmc_is_exact_on_the_double_well_at_h_0_3():
    """h = 0.3 on the double well: OBABO's <p^2> is off by about 5% (7 standard errors); GHMC gives the
    exact law."""
    dw, n = DoubleWell(), 40000
    kw = dict(h=0.3, n_steps=200, n_paths=n, record_every=200, seed=5, backend="cpu",
              q0=_stationary_dw(n, rng(3)), p0=rng(4).standard_normal((n, 1)), on_divergence="mask")
    g = sdekit.ensemble("O{BAB}O", dw, **kw)
    assert g.diverged.size == 0
    assert_within(g.mean["q2"][-1], g.stderr("q2")[-1], dw.exact("q2", 1.0), what="GHMC q2")
    q4 = g.q ** 4   # the final states: independent paths
    assert_within(q4.mean(axis=0), q4.std(axis=0) / np.sqrt(n), dw.exact("q4", 1.0), what="GHMC q4")
    assert_within(g.mean["p2"][-1], g.stderr("p2")[-1], 1.0, what="GHMC p2")
    u = sdekit.ensemble("OBABO", dw, **kw)
    assert abs(u.mean["p2"][-1, 0] - 1.0) > 5 * u.stderr("p2")[-1, 0]


@pytest.mark.statistical
@pytest.mark.parametrize("system, h", [(Harmonic(1.0), 0.5), (DoubleWell(), 0.25)])
def test_mala_is_exact_where_euler_maruyama_is_not(system, h):
    n = 30000
    q0 = rng(5).standard_normal((n, 1)) if isinstance(system, Harmonic) else _stationary_dw(n, rng(6))
    kw = dict(h=h, n_steps=100, n_paths=n, record_every=100, seed=7, backend="cpu", q0=q0, on_divergence="mask")
    m = sdekit.ensemble("MALA", system, **kw)
    assert_within(m.mean["q2"][-1], m.stderr("q2")[-1], system.exact("q2", 1.0), what="MALA q2")
    e = sdekit.ensemble("EM", system, **kw)   # unadjusted: biased, and on the double well paths escape
    off = abs(e.mean["q2"][-1, 0] - system.exact("q2", 1.0)[0]) > 5 * e.stderr("q2")[-1, 0]
    assert off or e.diverged.size > 0


# ----------------------------------------------------------------------------- acceptance rates

def _verlet_acceptance_harmonic(h):
    r"""E[min(1, e^{-dH})] of one velocity-Verlet step of length h on U = q^2/2 from (q, p) ~ N(0, I):
    dH = x^T (Phi^T Phi - I) x / 2 is a quadratic form, integrated by 2-D quadrature."""
    Phi = np.array([[1 - h * h / 2, h], [-h * (1 - h * h / 4), 1 - h * h / 2]])
    A = 0.5 * (Phi.T @ Phi - np.eye(2))
    f = lambda y, x: np.exp(-0.5 * (x * x + y * y)) / (2 * np.pi) * min(1.0, np.exp(-(np.array([x, y]) @ A @ [x, y])))
    return integrate.dblquad(f, -9, 9, -9, 9, epsabs=1e-10)[0]


def _rate_and_error(ens):
    """Acceptance rate over the run and its standard error across the independent paths."""
    return ens.acceptance_rate, ens.stderr("accepted")[-1] / ens.proposed[-1]


@pytest.mark.statistical
def test_ghmc_acceptance_rate_on_the_harmonic_oscillator_is_the_quadrature():
    """Started from the exact law, every step's acceptance probability is E_pi[min(1, e^{-dH})]."""
    n = 20000
    g = sdekit.ensemble("O{BAB}O", Harmonic(1.0), h=1.5, n_steps=50, n_paths=n, record_every=10, seed=2,
                        backend="cpu", q0=rng(7).standard_normal((n, 1)), p0=rng(8).standard_normal((n, 1)))
    rate, se = _rate_and_error(g)
    exact = _verlet_acceptance_harmonic(1.5)
    assert 0.6 < exact < 0.9
    assert_within(rate, se, exact, what="GHMC acceptance")
    assert g.acceptance_rates().shape == (5,) and np.all(np.abs(g.acceptance_rates() - exact) < 0.03)


@pytest.mark.statistical
def test_ghmc_and_mala_acceptance_on_the_double_well_match_an_independent_estimate():
    """The independent estimate: i.i.d. draws from the exact law, one proposal each, written here
    from the formulas (velocity Verlet; the Euler-Maruyama proposal and its density)."""
    gen, m = np.random.default_rng(3), 1_000_000
    U = lambda x: (x * x - 1.0) ** 2
    F = lambda x: -4.0 * x * (x * x - 1.0)
    q, p = _stationary_dw(m, gen)[:, 0], gen.standard_normal(m)
    h = 0.3
    p1 = p + 0.5 * h * F(q)
    q1 = q + h * p1
    p1 = p1 + 0.5 * h * F(q1)
    ghmc = np.minimum(1.0, np.exp(-(U(q1) + 0.5 * p1 ** 2 - U(q) - 0.5 * p ** 2)))
    hm = 0.2
    y = q + hm * F(q) + np.sqrt(2 * hm) * gen.standard_normal(m)
    log_ratio = -(U(y) - U(q)) - ((q - y - hm * F(y)) ** 2 - (y - q - hm * F(q)) ** 2) / (4 * hm)
    mala = np.minimum(1.0, np.exp(log_ratio))
    n = 20000
    for word, step, independent in (("O{BAB}O", h, ghmc), ("MALA", hm, mala)):
        p0 = None if word == "MALA" else rng(9).standard_normal((n, 1))
        e = sdekit.ensemble(word, DoubleWell(), h=step, n_steps=40, n_paths=n, record_every=40, seed=4,
                            backend="cpu", q0=_stationary_dw(n, rng(10)), p0=p0)
        rate, se = _rate_and_error(e)
        assert_within(rate, np.hypot(se, independent.std() / np.sqrt(m)), independent.mean(), what=word)


def test_trajectory_counts_acceptances_and_numpy_agrees_with_cpu_in_law():
    t = sdekit.simulate("O{BAB}O", Harmonic(1.0), h=1.5, n_steps=200, record_every=20, seed=1, backend="cpu")
    assert t.accepted.shape == t.proposed.shape == (11,) and t.accepted[0] == 0
    assert np.all(np.diff(t.accepted) >= 0) and np.all(np.diff(t.accepted) <= 20)
    assert t.acceptance_rate == t.accepted[-1] / 200
    with pytest.raises(ValueError, match="no Metropolis test"):
        sdekit.simulate("BAOAB", Harmonic(1.0), h=0.5, n_steps=10, seed=1).acceptance_rate


# ----------------------------------------------------------------------------- reproducible

THREADS_CHILD = """
import json, numpy as np, numba, sdekit
from sdekit.systems import DoubleWell, Harmonic, split
out = {"threads": numba.get_num_threads()}
# one kernel with both: a Metropolis test around force-group kicks (test_force_groups uses it too)
e = sdekit.ensemble("O{B1 (B0 A B0)^3 B1}O", split(Harmonic(6.0), DoubleWell()), h=0.3, n_steps=60, n_paths=700,
                    seed=4, backend="cpu", record_every=20, q0=[0.5])
out["q"], out["accepted"] = e.q.tobytes().hex(), e.state.accepted.tobytes().hex()
out["mean"] = {k: v.tobytes().hex() for k, v in e.mean.items()}
print(json.dumps(out))
"""


def test_metropolis_kernels_are_bitwise_for_one_and_two_threads():
    one = json.loads(run_child(THREADS_CHILD, NUMBA_NUM_THREADS=1))
    two = json.loads(run_child(THREADS_CHILD, NUMBA_NUM_THREADS=2))
    assert (one.pop("threads"), two.pop("threads")) == (1, 2)
    assert one == two and len(one["mean"]) == 8   # q, p, q2, p2, p_O, p2_O, accepted, xi


@pytest.mark.parametrize("word", ["O{BAB}O", "MALA"])
def test_metropolis_resume_is_bitwise(word):
    kw = dict(h=0.3 if word != "MALA" else 0.1, seed=9, backend="cpu", record_every=25, n_paths=300)
    full = sdekit.ensemble(word, DoubleWell(), n_steps=100, **kw)
    half = sdekit.ensemble(word, DoubleWell(), n_steps=50, **kw)
    rest = sdekit.ensemble(word, DoubleWell(), n_steps=50, resume=half.state, **kw)
    np.testing.assert_array_equal(rest.q, full.q)
    assert rest.state.rng == full.state.rng
    # the counts go on from the state: the same as the full run's, per path and on average
    np.testing.assert_array_equal(rest.state.accepted, full.state.accepted)
    assert rest.mean["accepted"][-1] == full.mean["accepted"][-1] and rest.proposed[-1] == full.proposed[-1]
    assert rest.acceptance_rate == full.acceptance_rate
    one = sdekit.simulate(word, DoubleWell(), n_steps=100, **{k: v for k, v in kw.items() if k != "n_paths"})
    a = sdekit.simulate(word, DoubleWell(), n_steps=50, **{k: v for k, v in kw.items() if k != "n_paths"})
    b = sdekit.simulate(word, DoubleWell(), n_steps=50, resume=a.state,
                        **{k: v for k, v in kw.items() if k != "n_paths"})
    np.testing.assert_array_equal(b.state.q, one.state.q)
    np.testing.assert_array_equal(np.concatenate([a.accepted, b.accepted]), one.accepted)
    np.testing.assert_array_equal(np.concatenate([a.proposed, b.proposed]), one.proposed)


CUDASIM_CHILD = """
import json, numpy as np, sdekit
from sdekit.systems import DoubleWell, Harmonic, split
out = {}
for word, system in [("O{BAB}O", DoubleWell()), ("MALA", DoubleWell()), ("B1 (B0 A O A B0)^2 B1", split(Harmonic(6.0), DoubleWell()))]:
    g = sdekit.ensemble(word, system, backend="cuda", h=0.2, n_steps=8, n_paths=40, seed=3, record_every=4, q0=[0.5])
    out[word] = {"q": g.q.tolist(), "mean": {k: v.tolist() for k, v in g.mean.items()}}
print(json.dumps(out))
"""


@pytest.mark.cuda
def test_metropolis_and_force_group_kernels_under_the_cuda_simulator():
    """The cuda text of { }, MALA and the group kicks: the numbers of the cpu kernels to rounding."""
    out = json.loads(run_child(CUDASIM_CHILD, NUMBA_ENABLE_CUDASIM=1))
    for word, system in [("O{BAB}O", DoubleWell()), ("MALA", DoubleWell()),
                         ("B1 (B0 A O A B0)^2 B1", systems.split(Harmonic(6.0), DoubleWell()))]:
        c = sdekit.ensemble(word, system, backend="cpu", h=0.2, n_steps=8, n_paths=40, seed=3, record_every=4,
                            q0=[0.5])
        np.testing.assert_allclose(out[word]["q"], c.q, rtol=1e-12, atol=1e-14)
        for k in c.mean:
            np.testing.assert_allclose(out[word]["mean"][k], c.mean[k], rtol=1e-12, atol=1e-14, err_msg=k)


# ----------------------------------------------------------------------------- refusals

def test_what_metropolis_words_refuse():
    def grad(q, out):
        out[0] = q[0]

    no_potential = systems.custom(grad, 1)
    with pytest.raises(ValueError, match="potential"):
        sdekit.ensemble("O{BAB}O", no_potential, h=0.1, n_steps=2, n_paths=2)
    with pytest.raises(ValueError, match="nonlinear"):
        linear.stationary_covariance("O{BAB}O", 1.0, 0.5)
    with pytest.raises(ValueError, match="nonlinear"):
        linear.one_step("MALA", 1.0, 0.5)
    with pytest.raises(ValueError, match="kT"):
        sdekit.ensemble("O{BAB}O", Harmonic(1.0), h=0.1, n_steps=2, n_paths=2, kT=lambda t: 1.0 + t)
    with pytest.raises(ValueError, match="sigma_A"):
        sdekit.ensemble("MALA", Harmonic(1.0), h=0.1, n_steps=2, n_paths=2, sigma_A=1.0)

    def energy(q):
        return 0.5 * q[0] * q[0]

    with_potential = systems.custom(grad, 1, potential=energy)
    e = sdekit.ensemble("O{BAB}O", with_potential, h=0.5, n_steps=20, n_paths=50, seed=1, backend="cpu")
    f = sdekit.ensemble("O{BAB}O", Harmonic(1.0), h=0.5, n_steps=20, n_paths=50, seed=1, backend="cpu")
    np.testing.assert_array_equal(e.q, f.q)   # the same kernel arithmetic: U = q^2 / 2 either way


def test_the_torch_optimizer_refuses_metropolis_words():
    torch = pytest.importorskip("torch")
    import sdekit.torch as st_

    w = torch.nn.Parameter(torch.zeros(3))
    opt = st_.SDEOptimizer([w], scheme="O{BAB}O", lr=0.1)
    w.grad = torch.ones(3)
    with pytest.raises(ValueError, match="Metropolis"):
        opt.step(lambda: (w ** 2).sum())


def test_bias_table_gives_a_brace_word_the_exact_chain_of_the_target():
    # the chain of O{BAB}O keeps exp(-H/kT) exactly, so `sdekit bias` reports its exact chain
    # error as 0 (it was NaN: sdekit.linear has no map for the nonlinear test)
    from sdekit import analysis

    values = analysis._exact_chain_values(Scheme("O{BAB}O"), Harmonic(2.0), ["q2", "p2", "p2_O"], [0.5, 1.5],
                                          1.0, 0.7, [3.0], None)
    np.testing.assert_allclose(values["q2"], [0.7 / 4.0] * 2, rtol=1e-14)
    np.testing.assert_allclose(values["p2"], [0.7 * 3.0] * 2, rtol=1e-14)
    np.testing.assert_allclose(values["p2_O"], [0.7 * 3.0] * 2, rtol=1e-14)
    mala = analysis._exact_chain_values(Scheme("MALA"), Harmonic(2.0), ["q2", "p2"], [0.5], 1.0, 0.7, None, None)
    assert list(mala) == ["q2"] and mala["q2"][0] == pytest.approx(0.7 / 4.0, rel=1e-14)   # overdamped: no p
