"""Shared test setup.

``pytest --break-letter=O`` replaces the exact O step by the Euler one
(c = 1 - G delta, with the exact noise amplitude); ``--break-letter=B`` scales the
force by 1.02 in B and in the overdamped steps; ``--break-letter=R`` scales every
random kick (O's and the overdamped steps') by 1.05. Each test marked ``statistical``
fails under at least one of them: that is how we showed, once, that the
statistical tests can fail (README, "Testing").
"""
import numpy as np
import pytest

import sdekit.operators as ops


def pytest_addoption(parser):
    parser.addoption("--break-letter", choices=["O", "B", "R"], default=None,
                     help="deliberately break a letter: O (Euler damping c = 1 - G delta), "
                          "B (force scaled by 1.02) or R (noise scaled by 1.05)")


@pytest.fixture(autouse=True)
def _broken_letter(request, monkeypatch):
    broken = request.config.getoption("--break-letter")
    if broken == "O":
        exact = ops.ou_coefficients
        monkeypatch.setattr(ops, "ou_coefficients",
                            lambda friction, delta, sigma: (1.0 - friction * delta, exact(friction, delta, sigma)[1]))
    elif broken == "B":
        kick, em, lm = ops.kick, ops.euler_maruyama, ops.leimkuhler_matthews
        monkeypatch.setattr(ops, "kick", lambda p, force, delta: kick(p, 1.02 * force, delta))
        monkeypatch.setattr(ops, "euler_maruyama", lambda q, force, *a: em(q, 1.02 * force, *a))
        monkeypatch.setattr(ops, "leimkuhler_matthews", lambda q, force, *a: lm(q, 1.02 * force, *a))
    elif broken == "R":
        ou, em, lm = ops.ou_coefficients, ops.euler_maruyama, ops.leimkuhler_matthews
        monkeypatch.setattr(ops, "ou_coefficients", lambda G, delta, sigma: ou(G, delta, 1.05 * sigma))
        monkeypatch.setattr(ops, "euler_maruyama", lambda q, F, h, kT, R: em(q, F, h, kT, 1.05 * R))
        monkeypatch.setattr(ops, "leimkuhler_matthews",
                            lambda q, F, h, kT, R, R2: lm(q, F, h, kT, 1.05 * R, 1.05 * R2))
    yield


def assert_within(estimate, stderr, exact, n_se=4.5, what=""):
    """|estimate - exact| <= n_se standard errors, elementwise, with a readable message."""
    estimate, stderr, exact = (np.asarray(x, dtype=float) for x in (estimate, stderr, exact))
    z = np.abs(estimate - exact) / stderr
    assert np.all(z <= n_se), (f"{what}: estimate {estimate} +- {stderr} vs exact {exact}: "
                               f"{np.max(z):.1f} standard errors")
    return z
