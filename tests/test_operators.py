"""The letters' exact flows: O preserves N(0, kT M); h -> 0 consistency of every word."""
import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings, strategies as st

import sdekit
from sdekit import operators as ops, reference
from sdekit.simulate import make_spec

from conftest import assert_within

frictions = st.floats(0.0, 50.0)
deltas = st.floats(1e-4, 5.0)


@given(frictions, deltas, st.floats(0.01, 10.0))
def test_O_preserves_gaussian_variance_exactly(gamma, delta, kT):
    """Var after O = c^2 kT m + s^2 m = kT m, to rounding, for sigma^2 = 2 gamma kT."""
    c, s = ops.ou_coefficients(gamma, delta, math.sqrt(2 * gamma * kT))
    assert c * c * kT + s * s == pytest.approx(kT, rel=1e-13, abs=1e-300)


@given(st.floats(-5.0, 5.0), deltas, st.floats(0.0, 3.0))
def test_O_coefficients_match_the_closed_form(G, delta, sigma):
    """Against the naive closed form where it is accurate, and its Taylor series
    s^2 = sigma^2 delta (1 - x/2 + x^2/6 - x^3/24), x = 2 G delta, where it is not."""
    c, s = ops.ou_coefficients(G, delta, sigma)
    assert c == pytest.approx(math.exp(-G * delta), rel=1e-14)
    x = 2 * G * delta
    if abs(x) < 1e-3:
        expected = sigma * math.sqrt(delta * (1 - x / 2 + x * x / 6 - x ** 3 / 24))
        assert s == pytest.approx(expected, rel=1e-13, abs=1e-300)
    else:
        assert s == pytest.approx(sigma * math.sqrt((1 - c * c) / (2 * G)), rel=1e-10, abs=1e-300)


def test_O_at_zero_friction_is_brownian_and_continuous():
    c0, s0 = ops.ou_coefficients(0.0, 0.3, 2.0)
    c1, s1 = ops.ou_coefficients(1e-12, 0.3, 2.0)
    assert (c0, s0) == (1.0, 2.0 * math.sqrt(0.3))
    assert s1 == pytest.approx(s0, rel=1e-11)
    arr = ops.ou_coefficients(np.array([0.0, 1e-12, 1.0]), 0.3, 2.0)[1]
    assert arr[0] == s0 and arr[1] == pytest.approx(s0, rel=1e-11)


@pytest.mark.statistical
def test_O_step_preserves_gaussian_law_from_a_sample():
    """p ~ N(0, kT M) stays N(0, kT M) after O: mean, variance and 4th moment of a
    large sample, each within 4.5 standard errors computed from the sample."""
    rng = np.random.default_rng(1)
    kT, mass, n = 0.7, np.array([0.5, 1.0, 4.0]), 400_000
    p = rng.standard_normal((n, 3)) * np.sqrt(kT * mass)
    c, s = ops.ou_coefficients(2.0, 0.9, math.sqrt(2 * 2.0 * kT))
    p = ops.ou(p, c, s, np.sqrt(mass), rng.standard_normal((n, 3)))
    x = p / np.sqrt(kT * mass)  # should be standard normal
    se = lambda v: v.std(axis=0) / np.sqrt(n)
    assert_within(x.mean(0), se(x), 0.0, what="mean")
    assert_within((x ** 2).mean(0), se(x ** 2), 1.0, what="variance")
    assert_within((x ** 4).mean(0), se(x ** 4), 3.0, what="4th moment")


def test_bind_gives_the_same_arithmetic_with_math():
    for G in (0.0, 0.3, -0.2):
        assert ops.scalar.ou_coefficients(G, 0.5, 1.3) == pytest.approx(ops.ou_coefficients(G, 0.5, 1.3), rel=1e-15)
    assert ops.scalar.drift(1.0, 2.0, 0.5, 0.25) == ops.drift(1.0, 2.0, 0.5, 0.25)


def one_step_map(scheme, h, omega=1.3, gamma=0.7):
    """The deterministic (kT = 0) one-step map of (q, p) on a harmonic oscillator,
    by running the reference integrator on the two unit vectors."""
    spec = make_spec(scheme, sdekit.systems.Harmonic(omega), h, gamma, 0.0, 1.0, None, None, "float64", None)
    q, p = np.array([[1.0], [0.0]]), np.array([[0.0], [1.0]])
    w = reference.Walker(q, p, np.zeros(2), reference.initial_force(spec, q), None)
    reference.step(spec, w, np.random.default_rng(0))
    return np.array([[w.q[0, 0], w.q[1, 0]], [w.p[0, 0], w.p[1, 0]]])


def exact_map(h, omega=1.3, gamma=0.7):
    return scipy.linalg.expm(h * np.array([[0.0, 1.0], [-omega ** 2, -gamma]]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("ABO"), min_size=3, max_size=9).filter(lambda w: set(w) == set("ABO")),
       st.floats(0.2, 0.8))
def test_every_word_is_consistent_as_h_goes_to_zero(letters, split):
    """Local error of any splitting of A, B, O (here with a random split of the first
    letter's fraction) is O(h^2): halving h divides it by >= 4 asymptotically."""
    word = "".join(letters)
    first = word[0]
    n_first = word.count(first)
    steps, seen = [], 0
    for letter in word:  # weights: the first letter's occurrences get uneven shares
        if letter == first and n_first > 1:
            seen += 1
            f = split if seen == 1 else (1 - split) / (n_first - 1)
        else:
            f = 1.0 / word.count(letter)
        steps.append((letter, f))
    scheme = sdekit.Scheme(steps)
    err = lambda h: np.abs(one_step_map(scheme, h) - exact_map(h)).max()
    h = 2e-3
    assert err(2 * h) / err(h) > 3.5, (word, err(2 * h), err(h))


def test_an_inconsistent_step_is_caught_by_the_consistency_check(monkeypatch):
    """The check above can fail: scaling the drift by 1.01 gives local error O(h)."""
    orig = ops.drift
    monkeypatch.setattr(ops, "drift", lambda q, p, delta, inv_mass: orig(q, p, 1.01 * delta, inv_mass))
    err = lambda h: np.abs(one_step_map("BAOAB", h) - exact_map(h)).max()
    assert err(4e-3) / err(2e-3) < 2.5


def test_overdamped_flows():
    q, F, R, R2 = 1.0, -2.0, 0.5, -0.25
    assert ops.euler_maruyama(q, F, 0.1, 2.0, R) == pytest.approx(1 - 0.2 + math.sqrt(0.4) * 0.5)
    assert ops.leimkuhler_matthews(q, F, 0.1, 2.0, R, R2) == pytest.approx(1 - 0.2 + math.sqrt(0.1) * 0.25)
    assert ops.thermostat(0.1, 5.0, 3, 1.0, 0.5, 0.2) == pytest.approx(0.1 + 0.2 * 0.5 * 2.0)
