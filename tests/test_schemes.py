"""Scheme: parsing, fractions, lazy force, catalogue, properties (hypothesis)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sdekit
from sdekit import Scheme
from sdekit.schemes import CATALOGUE

words = st.text(alphabet="ABOD", min_size=1, max_size=12)


@given(words)
def test_any_word_parses_and_round_trips(word):
    s = Scheme(word)
    assert s.word == word
    assert Scheme(s.word) == s
    assert Scheme(s.to_json()) == s
    assert hash(Scheme(word)) == hash(s)
    assert len(s.steps) == len(word)


@given(words)
def test_fractions_of_each_letter_sum_to_one(word):
    s = Scheme(word)
    for letter in set(word):
        assert math.isclose(s.fraction(letter), 1.0, rel_tol=0, abs_tol=1e-15)
        assert all(f == 1.0 / word.count(letter) for l, f in s.steps if l == letter)


def brute_force_count(word, n_steps=3, seed=0):
    """Evaluations per step by running the arithmetic: a B needs a new force iff q
    differs (bitwise) from the q of the last evaluation."""
    rng = np.random.default_rng(seed)
    q, p = rng.standard_normal(3), rng.standard_normal(3)
    last, counts = None, []
    for _ in range(n_steps):
        count = 0
        for letter in word:
            if letter == "A":
                q = q + 0.1 * p
            elif letter == "B":
                if last is None or not np.array_equal(q, last):
                    count, last = count + 1, q.copy()
                p = p - 0.1 * q
        counts.append(count)
    return counts[-1]  # steady state: the first step may need the initial force


@given(words)
def test_force_evaluations_match_brute_count(word):
    assert Scheme(word).force_evaluations == brute_force_count(word)


class CountingHarmonic(sdekit.systems.Harmonic):
    def __init__(self):
        super().__init__(1.0)
        self.calls = 0

    def grad(self, q):
        self.calls += 1
        return super().grad(q)


@settings(max_examples=25, deadline=None)
@given(words, st.integers(1, 20))
def test_reference_backend_calls_force_as_counted(word, n):
    sys = CountingHarmonic()
    sdekit.simulate(word, sys, h=0.1, n_steps=n, seed=0, backend="numpy")
    s = Scheme(word)
    assert sys.calls == int(s.uses_force) + n * s.force_evaluations


def test_lazy_force_examples():
    assert Scheme("BAOAB").force_evaluations == 1
    assert Scheme("ABOBA").force_evaluations == 1
    assert Scheme("OBABO").force_evaluations == 1
    assert Scheme("BADODAB").force_evaluations == 1
    assert Scheme("ABAB").force_evaluations == 2
    assert Scheme("BOB").force_evaluations == 0
    assert Scheme("BAOAB").evaluations == (False, False, False, False, True)


def test_explicit_fractions_and_equality():
    s = Scheme([("B", 0.5), ("A", 1), ("O", 1), ("B", 0.5)])
    assert s.word == "BAOB" and s == Scheme("BAOB")
    assert Scheme([("B", .5), ("A", .5), ("O", 1), ("A", .5), ("B", .5)]) == Scheme("BAOAB")
    # negative fractions, e.g. a Yoshida-style composition
    w = 1 / (2 - 2 ** (1 / 3))
    y = Scheme([("A", w / 2), ("B", w), ("A", (1 - w) / 2), ("B", 1 - 2 * w),
                ("A", (1 - w) / 2), ("B", w), ("A", w / 2)])
    assert y.fraction("B") == pytest.approx(1, abs=1e-15) and min(f for _, f in y.steps) < 0
    assert Scheme("BAOAB") != Scheme("ABOBA")
    assert len({Scheme("BAOAB"), Scheme("V R O R V"), Scheme("baoab")}) == 1


def test_catalogue_and_aliases():
    for name in ("BAOAB", "ABOBA", "OBABO", "OABAO", "BABO", "BADODAB", "EM", "LM"):
        assert name in CATALOGUE
        s = Scheme(name)
        assert s.word == name and s.describe().startswith(name)
    assert Scheme("V R O R V") == Scheme("BAOAB")
    assert Scheme("Euler-Maruyama") == Scheme("EM") and Scheme("leimkuhler_matthews").overdamped == "LM"
    assert Scheme("EM").force_evaluations == 1 and Scheme("EM").steps == ()


def test_describe_reads_like_the_scheme():
    text = Scheme("BAOAB").describe()
    assert "1 force evaluation per step" in text
    assert "q += h/2 M^-1 p" in text.replace("(h/2)", "h/2")
    assert text.count("[new force") == 1


@pytest.mark.parametrize("bad, fragment", [
    ("", "empty word"), ("BAXAB", "unknown letter"), ("   ", "empty word"),
    ([], "empty list"), ([("B", 0.5), ("A", 1)], "sum to 0.5"), ([("Q", 1.0)], "unknown letter"),
    ([("A", float("nan"))], "finite"), ([("A", 0.0), ("A", 1.0)], "non-zero"), ([("A",)], "pair"),
    (42, "expected a word"),
])
def test_bad_schemes_are_value_errors_naming_the_argument(bad, fragment):
    with pytest.raises(ValueError, match="scheme") as err:
        Scheme(bad)
    assert fragment in str(err.value)
