"""Force groups and multiple time stepping: split systems, the kicks B0, B1, ..., the repetition
notation, their lazy forces, exact linear statistics and the r-RESPA resonance.

The statistical tests compare simulations with the exact law of the linear chain and fail under
``--break-letter=B`` with ``--break-only=numpy`` or ``--break-only=kernels`` (the group kicks
share B's flow).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sdekit
from sdekit import analysis, linear, systems
from sdekit.schemes import Scheme, lazy_evaluations
from sdekit.systems import DoubleWell, Harmonic, split

from conftest import assert_within

RESPA = "B1 (B0 A O A B0)^4 B1"
FAST, SLOW = 10.0, 1.0


# ----------------------------------------------------------------------------- the grammar

def test_repetition_expands_and_each_letter_runs_for_h_over_its_count():
    s = Scheme(RESPA)
    assert len(s.steps) == 2 + 4 * 5
    assert s.steps[0] == ("B1", 0.5) and s.steps[1] == ("B0", 1 / 8) and s.steps[3] == ("O", 1 / 4)
    assert s.force_groups == (0, 1) and s.group_evaluations == {0: 4, 1: 1} and s.force_evaluations == 5
    assert Scheme(s.to_json()) == s == Scheme("B1 (B0 (A)^1 O A B0)^2 (B0 A O A B0)^2 B1")
    assert Scheme("V1 (V0 R O R V0)^4 V1") == s   # openmmtools' V0, V1
    assert "group 0: 4, group 1: 1" in s.describe() and "F_1(q)" in s.describe()


@given(st.lists(st.sampled_from(["A", "B0", "B1", "O"]), min_size=1, max_size=8), st.integers(1, 4))
@settings(max_examples=60)
def test_a_repeated_group_is_the_word_written_out(letters, n):
    word = "".join(letters)
    if "B0" not in letters or "B1" not in letters:
        letters = letters + ["B0", "B1"]
        word = "".join(letters)
    assert Scheme(f"({word})^{n}").steps == Scheme(word * n).steps
    flags = lazy_evaluations(f"({word})^{n}")
    # a group's force is evaluated at most once between two letters that move q
    names = [l for l, _ in Scheme(word * n).steps]
    for g in ("B0", "B1"):
        since = True
        for name, new in zip(names * 2, flags * 2):
            if name == "A":
                since = True
            elif name == g:
                assert not (new and not since)
                since = since and not new


@pytest.mark.parametrize("word, match", [
    ("BAB0", "one or the other"), ("B2 A B2", "0, 1, ..."), ("(B0 A B0", "unbalanced"), ("B0 A B0)^2", "unbalanced"),
    ("(B0 A B0)^0 B1", "n >= 1"), ("(B0 A B0) B1", "n >= 1"), ("O3 A B0", "takes no force-group number"),
])
def test_bad_group_words_are_refused(word, match):
    with pytest.raises(ValueError, match=match):
        Scheme(word)


def test_split_systems_and_their_refusals():
    s = split(Harmonic(FAST), Harmonic(SLOW))
    q = np.array([[0.3], [-1.0]])
    np.testing.assert_allclose(s.grad(q), (FAST ** 2 + SLOW ** 2) * q)
    np.testing.assert_allclose(s.group_force(q, 1), -SLOW ** 2 * q)
    assert s.exact("q2", 2.0)[0] == pytest.approx(2.0 / (FAST ** 2 + SLOW ** 2), rel=1e-14)
    assert split(Harmonic(1.0), DoubleWell()).escape_bound == 5.0
    with pytest.raises(ValueError, match="at least two"):
        split(Harmonic(1.0))
    with pytest.raises(ValueError, match="same dimension"):
        split(Harmonic(1.0), DoubleWell(2))
    with pytest.raises(ValueError, match="split"):
        sdekit.ensemble(RESPA, Harmonic(1.0), h=0.1, n_steps=2, n_paths=2)
    with pytest.raises(ValueError, match="one Hessian per group"):
        linear.stationary_covariance(RESPA, FAST ** 2, 0.1)


# ----------------------------------------------------------------------------- exact linear statistics

@given(st.floats(0.05, 0.95), st.floats(0.05, 0.5))
def test_two_halves_of_one_force_kicked_together_are_the_plain_word(share, h):
    """B1 B0 A O A B0 B1 with K0 + K1 = K is BAOAB on K: the same exact law, to rounding."""
    K = np.array([[4.0, 1.0], [1.0, 3.0]])
    groups = [share * K, (1 - share) * K]
    a = linear.stationary_covariance("B1 B0 A O A B0 B1", groups, h)
    b = linear.stationary_covariance("BAOAB", K, h)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_the_respa_resonance_is_where_the_linear_chain_says():
    """Without friction the r-RESPA chain is symplectic: spectral radius 1 where it is stable, > 1 in
    the resonance just below half the fast period (outer step h ~ pi / omega_fast)."""
    groups = [FAST ** 2, SLOW ** 2]
    half_period = np.pi / FAST
    rho = lambda h: linear.spectral_radius(linear.one_step("B1 (B0 A B0)^4 B1", groups, h, gamma=0.0)[0])
    assert abs(rho(0.5 * half_period) - 1.0) < 1e-9
    assert rho(0.969 * half_period) > 1.01
    assert abs(rho(1.1 * half_period) - 1.0) < 1e-9
    with pytest.raises(ValueError, match="unstable"):
        linear.stationary_covariance("B1 (B0 A O A B0)^4 B1", groups, 0.969 * half_period, gamma=1e-3)


@pytest.mark.statistical
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_respa_moments_match_the_exact_linear_chain(backend):
    """Time averages of the across-path means (batch means over 20 batches) against the exact chain:
    a 2% change of a kick's force is 5-20 standard errors."""
    system = split(Harmonic(FAST), Harmonic(SLOW))
    n, h, steps = (4000, 0.25, 2000) if backend == "cpu" else (1000, 0.25, 1600)
    C = linear.stationary_covariance(RESPA, system.hessians(), h)
    q0 = np.sqrt(C[0, 0]) * np.random.default_rng(1).standard_normal((n, 1))
    e = sdekit.ensemble(RESPA, system, h=h, n_steps=steps, n_paths=n, record_every=2, seed=3, backend=backend, q0=q0)
    for name, exact in (("q2", C[0, 0]), ("p2", C[1, 1])):
        mean, se, _ = analysis.batch_means(e.mean[name][50:, 0], 20)
        assert_within(mean, se, exact, what=f"{backend} {name}")
    # the plain word at the same step is far off: its chain is unstable past h omega = 2
    with pytest.raises(ValueError, match="unstable"):
        linear.stationary_covariance("BAOAB", system.hessian(), h)


def test_the_slow_force_is_evaluated_once_per_step(monkeypatch):
    system = split(Harmonic(FAST), DoubleWell())
    calls = {0: 0, 1: 0}
    original = type(system).group_force

    def counting(self, q, group):
        calls[group] += 1
        return original(self, q, group)

    monkeypatch.setattr(type(system), "group_force", counting)
    sdekit.ensemble(RESPA, system, h=0.2, n_steps=10, n_paths=4, seed=1, backend="numpy")
    assert calls == {0: 1 + 10 * 4, 1: 1 + 10 * 1}   # one evaluation of each at the start


def test_cpu_and_numpy_group_kicks_are_the_same_arithmetic():
    """Without noise (gamma = 0; kT tiny, so that the test accepts exactly the moves with dH < 0)
    the two backends run the same steps: equal to rounding."""
    system = split(Harmonic(6.0), DoubleWell())
    kw = dict(h=0.1, n_steps=50, n_paths=3, gamma=0.0, kT=1e-300, q0=[[0.5], [1.0], [-0.7]], p0=[[0.3], [-1.0], [0.8]])
    a = sdekit.ensemble("O{B1 (B0 A B0)^3 B1}O", system, backend="numpy", **kw)
    b = sdekit.ensemble("O{B1 (B0 A B0)^3 B1}O", system, backend="cpu", **kw)
    np.testing.assert_allclose(a.q, b.q, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.p, b.p, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(a.state.accepted, b.state.accepted)


def test_group_resume_is_bitwise():
    system, word = split(Harmonic(6.0), DoubleWell()), "B1 (B0 A O A B0)^2 B1"   # the golden case's kernel
    kw = dict(h=0.2, seed=2, backend="cpu", record_every=10, n_paths=200)
    full = sdekit.ensemble(word, system, n_steps=40, **kw)
    half = sdekit.ensemble(word, system, n_steps=20, **kw)
    assert half.state.force.shape == (200, 2)   # the groups' forces side by side
    rest = sdekit.ensemble(word, system, n_steps=20, resume=half.state, **kw)
    np.testing.assert_array_equal(rest.q, full.q)
    np.testing.assert_array_equal(rest.p, full.p)
    np.testing.assert_array_equal(rest.mean["q2"][-1], full.mean["q2"][-1])
