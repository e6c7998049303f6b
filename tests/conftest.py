"""Shared test setup.

``pytest --break-letter=O`` replaces the exact O step by the Euler one
(c = 1 - G delta, with the exact noise amplitude); ``--break-letter=B`` scales the
force by 1.02 in B and in the overdamped steps; ``--break-letter=R`` scales every
random kick (O's and the overdamped steps') by 1.05; ``--break-letter=M`` makes the
Metropolis test of ``{ }`` and MALA accept on 0.8 dH (too often); ``--break-letter=G`` scales the
Girsanov log-weight increment of a change of drift (O's and EM's bookkeeping,
:func:`sdekit.letters.ou.increment`) by 1.1 (tests/test_girsanov.py fails under it);
``--break-letter=W`` breaks the shadow-work bookkeeping (:func:`sdekit.shadow.heat`: each O
letter's heat counted 1.1 times, so the work W = Delta H - Q is wrong; tests/test_shadow.py).
``--break-only=numpy`` (or
kernels, torch, linear, diffusion) breaks the letter in that implementation alone,
for the tests that compare one implementation with another. Each test marked ``statistical``
fails under at least one of them: that is how we showed, once, that the
statistical tests can fail (README, "Testing").
"""
import importlib
import sys
import types

import numpy as np
import pytest
from hypothesis import settings

import sdekit.operators as ops

# the same examples on every run and every machine (CI must be deterministic); no example database
settings.register_profile("sdekit", derandomize=True, database=None)
settings.load_profile("sdekit")


def pytest_addoption(parser):
    parser.addoption("--break-letter", choices=["O", "B", "R", "M", "G", "W"], default=None,
                     help="deliberately break a letter: O (Euler damping c = 1 - G delta), "
                          "B (force scaled by 1.02), R (noise scaled by 1.05), M (the Metropolis "
                          "test on 0.8 dH), G (the Girsanov weight increment of O and EM scaled by 1.1) "
                          "or W (the shadow-work bookkeeping: O's heat counted 1.1 times)")
    parser.addoption("--break-only", choices=["numpy", "kernels", "torch", "linear", "diffusion"], default=None,
                     help="break the letter only where this consumer uses it (to test one implementation "
                          "against another); default: everywhere")


def _broken_ou(broken, ou_coefficients):
    """The O coefficients with the chosen break applied (None: no break of O)."""
    if broken == "O":
        return lambda friction, delta, sigma: (1.0 - friction * delta, ou_coefficients(friction, delta, sigma)[1])
    if broken == "R":
        return lambda friction, delta, sigma: ou_coefficients(friction, delta, 1.05 * sigma)
    return None


def broken_operators(broken, ops):
    """``{name: function}``: the operators of namespace ``ops`` that ``broken`` replaces.

    Written with explicit arguments so that numba compiles them too."""
    em, lm, kick, metropolis = ops.euler_maruyama, ops.leimkuhler_matthews, ops.kick, ops.metropolis
    out = {}
    if broken == "M":
        out["metropolis"] = lambda u, dH, kT: metropolis(u, 0.8 * dH, kT)
    ou = _broken_ou(broken, ops.ou_coefficients)
    if ou is not None:
        out["ou_coefficients"] = ou
    if broken == "B":
        out["kick"] = lambda p, force, delta: kick(p, 1.02 * force, delta)
        out["euler_maruyama"] = lambda q, force, h, kT, noise: em(q, 1.02 * force, h, kT, noise)
        out["leimkuhler_matthews"] = lambda q, force, h, kT, noise, next_noise: lm(
            q, 1.02 * force, h, kT, noise, next_noise)
    if broken == "R":
        out["euler_maruyama"] = lambda q, force, h, kT, noise: em(q, force, h, kT, 1.05 * noise)
        out["leimkuhler_matthews"] = lambda q, force, h, kT, noise, next_noise: lm(
            q, force, h, kT, 1.05 * noise, 1.05 * next_noise)
    return out


def _broken_copy(broken, namespace):
    """A copy of an operators namespace (and of its ``scalar`` copies) with the break applied."""
    copy = types.SimpleNamespace(**{k: v for k, v in vars(namespace).items() if not k.startswith("__")})
    for name, f in broken_operators(broken, namespace).items():
        setattr(copy, name, f)
    if hasattr(namespace, "scalar"):
        copy.scalar = _broken_copy(broken, namespace.scalar)
    return copy


# Where each consumer keeps the operators: (module, attribute).
CONSUMERS = {"numpy": [("sdekit.reference", "ops")], "kernels": [("sdekit.kernels.runtime", "operators")],
             "torch": [("sdekit.torch", "ops"), ("sdekit.torch", "_tops")], "linear": [("sdekit.linear", "ops")],
             "diffusion": [("sdekit.forward_sdes", "ops")]}


@pytest.fixture(autouse=True)
def _broken_letter(request, monkeypatch):
    broken = request.config.getoption("--break-letter")
    only = request.config.getoption("--break-only")
    if broken is None:
        yield
        return
    if broken == "W":   # the bookkeeping, not an operator: every backend's heat goes through it
        import sdekit.shadow
        heat = sdekit.shadow.heat
        monkeypatch.setattr(sdekit.shadow, "heat", lambda before, after: 1.1 * heat(before, after))
        yield
        return
    places = CONSUMERS[only] if only else [(None, None)]
    if not only and "sdekit.torch" in sys.modules:  # tensor copies bound at import
        places.append(("sdekit.torch", "_tops"))
    if broken == "G":   # the weight's bookkeeping: the numpy backend's and the kernels' (by fingerprint)
        import sdekit.letters.ou as ou
        import sdekit.reference as reference
        increment = ou.increment

        def broken_increment(u, z, s, sqrt_mass, b):
            return 1.1 * increment(u, z, s, sqrt_mass, b)

        if only in (None, "numpy"):
            monkeypatch.setattr(reference, "increment", broken_increment)
        if only in (None, "kernels"):
            monkeypatch.setattr(ou, "increment", broken_increment)
        yield
        return
    for module_name, attr in places:
        if module_name is None:  # everywhere: the operators module itself, and its scalar copies
            for target in (ops, ops.scalar):
                for name, f in broken_operators(broken, target).items():
                    monkeypatch.setattr(target, name, f)
            continue
        module = importlib.import_module(module_name)
        monkeypatch.setattr(module, attr, _broken_copy(broken, getattr(module, attr)))
    yield


def assert_within(estimate, stderr, exact, n_se=4.5, what=""):
    """|estimate - exact| <= n_se standard errors, elementwise, with a readable message."""
    estimate, stderr, exact = (np.asarray(x, dtype=float) for x in (estimate, stderr, exact))
    z = np.abs(estimate - exact) / stderr
    assert np.all(z <= n_se), (f"{what}: estimate {estimate} +- {stderr} vs exact {exact}: "
                               f"{np.max(z):.1f} standard errors")
    return z


def assert_same_ensemble(a, b):
    """Two ensembles are bit for bit the same run: final q, p, xi and every recorded mean and
    mean square."""
    for k in ("q", "p", "xi"):
        if getattr(b, k) is not None:
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert sorted(a.mean) == sorted(b.mean)
    for k in b.mean:
        np.testing.assert_array_equal(a.mean[k], b.mean[k], err_msg=k)
        np.testing.assert_array_equal(a.meansq[k], b.meansq[k], err_msg=k)
