"""The letter registry and letters a user adds (numpy backend and sdekit.linear).

The user letters here (tests/user_letters.py):

* ``H``: the exact flow of the harmonic piece dq = p dt, dp = -q dt (a rotation of
  (q, p) by delta). It preserves N(0, I) exactly, and so does O: the word "HOH"
  samples the Gibbs law of U = q^2/2 exactly at every step size.
* ``E``: the Euler step of the OU piece, p += -gamma delta p + sigma sqrt(delta) M^1/2 R
  (what ``--break-letter=O`` puts in place of O): linear, with a known map.
"""
import numpy as np
import pytest

import sdekit
from sdekit import letters, linear
from sdekit.letters import CoordinateLetter, Letter
from sdekit.schemes import Scheme
from sdekit.systems import Harmonic

from user_letters import EulerOU, Nonlinear, Rotation


@pytest.fixture
def user_letters():
    added = [letters.register(Rotation()), letters.register(EulerOU()), letters.register(Nonlinear())]
    yield added
    for letter in added:
        letters.unregister(letter.name)


# ------------------------------------------------------------------ registry

def test_builtins_are_registered_with_their_metadata():
    A, B, O, D = (letters.get(n) for n in "ABOD")
    assert A.moves == ("q",) and A.clock and not A.needs_force
    assert B.moves == ("p",) and B.needs_force
    assert O.normals == 1 and O.records == (("p_O", "p"),) and O.coefficients == ("gamma", "sigma")
    assert D.moves == ("xi",) and D.coefficients == ("kT",)
    assert letters.whole_steps() == ("EM", "LM", "MALA") and letters.spelled()[:4] == ("A", "B", "O", "D")
    assert letters.spelled()[4:6] == ("{", "}") and letters.grouped() == ("B",)
    for letter in letters.BUILTIN:
        assert letter.supports("numpy") and letter.supports("linear_map")


@pytest.mark.parametrize("name", ["X", "Q", "Z"])
def test_unknown_letter_raises_naming_it(name):
    with pytest.raises(ValueError, match=f"unknown letter.*{name}"):
        Scheme(f"BA{name}AB")
    with pytest.raises(ValueError, match=f"unknown letter '{name}'"):
        letters.get(name)


@pytest.mark.parametrize("attrs, match", [
    ({"name": "ab"}, "upper-case"), ({"name": "AB"}, "one-character"), ({"name": "V"}, "alias"),
    ({"name": "A"}, "built-in"), ({"moves": ("x",)}, "moves"), ({"coefficients": ("h",)}, "coefficients"),
    ({"normals": -1}, "normals"), ({"records": ("p_O",)}, "records"),
])
def test_register_refuses_bad_letters(attrs, match):
    cls = type("Bad", (Letter,), {"name": "W", "title": "bad", **attrs})
    with pytest.raises(ValueError, match=match):
        letters.register(cls())


def test_register_refuses_a_taken_name_and_unregister_frees_it(user_letters):
    with pytest.raises(ValueError, match="already registered"):
        letters.register(Rotation())
    letters.register(Rotation(), replace=True)
    with pytest.raises(ValueError, match="built-in"):
        letters.unregister("B")


def test_coordinate_letter_checks_its_definition():
    with pytest.raises(ValueError, match="flow"):
        type("NoFlow", (CoordinateLetter,), {"name": "W"})()
    with pytest.raises(ValueError, match="inputs"):
        type("BadInput", (CoordinateLetter,), {"name": "W", "inputs": ("xi",), "flow": staticmethod(max)})()
    with pytest.raises(ValueError, match="parameters"):
        type("BadParam", (CoordinateLetter,), {"name": "W", "parameters": ("omega",),
                                              "flow": staticmethod(max)})()


def test_scheme_reads_user_letter_metadata(user_letters):
    s = Scheme("BHOHB")
    assert s.force_evaluations == 1          # H moves q: the last B needs a new force
    assert s.evaluations == (False, False, False, False, True)
    assert s.substep_times == (0.0,) * 5     # the clock rides with A only
    assert s.draws(3) == 3
    assert "H  harmonic" in s.describe()
    assert Scheme("BAEAB").draws(2) == 2 and Scheme("EBAOABE").draws(2) == 6 and Scheme("BAEAB").letters == {"A", "B", "E"}


# ------------------------------------------------------------------ numpy backend

def test_letter_without_hooks_is_refused_naming_letter_and_backend():
    class Plain(Letter):
        name, title, moves = "W", "plain", ("p",)

    letters.register(Plain())
    try:
        for backend in ("numpy", "cpu", None):   # None: every backend refuses, each says why
            with pytest.raises(ValueError, match="letter 'W' \\(plain\\) defines no (numpy|source)\\(\\) hook"):
                sdekit.ensemble("BAWAB", Harmonic(), 0.1, 3, 4, seed=0, backend=backend)
    finally:
        letters.unregister("W")


def test_harmonic_flow_conserves_energy_to_rounding(user_letters):
    """H alone is a rotation: q^2 + p^2 is conserved to rounding over many steps."""
    e = sdekit.ensemble("H", Harmonic(), 0.7, 1000, 16, seed=0, backend="numpy",
                        q0=np.linspace(-2, 2, 16)[:, None], p0=np.ones((16, 1)))
    np.testing.assert_allclose(e.q[:, 0] ** 2 + e.p[:, 0] ** 2, np.linspace(-2, 2, 16) ** 2 + 1, rtol=1e-12)
    np.testing.assert_allclose(e.q[:, 0], np.cos(700.0) * np.linspace(-2, 2, 16) + np.sin(700.0), atol=1e-10)


def test_euler_ou_letter_equals_its_formula_noise_free(user_letters):
    """With sigma = 0 the E letter is p <- (1 - gamma delta) p exactly."""
    e = sdekit.ensemble("E", Harmonic(), 0.1, 10, 3, gamma=2.0, kT=0.0, seed=0, backend="numpy",
                        p0=np.array([[1.0], [2.0], [-1.0]]))
    np.testing.assert_allclose(e.p[:, 0], np.array([1.0, 2.0, -1.0]) * 0.8 ** 10, rtol=1e-14)


@pytest.mark.statistical
def test_hoh_samples_the_gibbs_law_exactly_at_a_large_step(user_letters):
    """HOH (exact harmonic flow, exact OU) keeps N(0, kT) exactly at h = 1.5, where BAOAB's
    <p^2> is kT (1 - h^2/4) = 0.44 kT: within 4.5 standard errors of kT over independent paths."""
    kT = 0.7
    e = sdekit.ensemble("HOH", Harmonic(), 1.5, 60, 40_000, gamma=1.0, kT=kT, seed=3, backend="numpy")
    for v in (e.q[:, 0] ** 2, e.p[:, 0] ** 2):
        se = v.std(ddof=1) / np.sqrt(v.size)
        assert abs(v.mean() - kT) < 4.5 * se, (v.mean(), se)


@pytest.mark.statistical
def test_euler_ou_letter_matches_its_exact_linear_law(user_letters):
    """BAEAB on the harmonic oscillator against the Lyapunov solution of its own linear chain."""
    h, gamma, kT = 0.5, 1.0, 1.0
    cov = linear.stationary_covariance("BAEAB", hessian=1.0, h=h, gamma=gamma, kT=kT)
    e = sdekit.ensemble("BAEAB", Harmonic(), h, 80, 40_000, gamma=gamma, kT=kT, seed=4, backend="numpy")
    for v, exact in ((e.q[:, 0] ** 2, cov[0, 0]), (e.p[:, 0] ** 2, cov[1, 1])):
        se = v.std(ddof=1) / np.sqrt(v.size)
        assert abs(v.mean() - exact) < 4.5 * se, (v.mean(), exact, se)


# ------------------------------------------------------------------ sdekit.linear

def test_probed_linear_map_of_the_euler_letter_is_its_formula(user_letters):
    delta, gamma, kT, mass = 0.3, 0.8, 1.5, np.array([2.0])
    T, Q = linear.letter_map("E", delta, np.eye(1), gamma, kT, mass)
    sigma = np.sqrt(2 * gamma * kT)
    np.testing.assert_allclose(T, [[1.0, 0.0], [0.0, 1.0 - gamma * delta]], rtol=1e-15, atol=0)
    np.testing.assert_allclose(Q, [[0.0, 0.0], [0.0, sigma ** 2 * delta * 2.0]], rtol=1e-14, atol=0)


def test_hoh_stationary_covariance_is_exactly_kT(user_letters):
    """The exact flows compose to a chain whose stationary law is exactly N(0, kT I), at any h."""
    for h in (0.3, 1.5, 2.5):
        cov = linear.stationary_covariance("HOH", hessian=1.0, h=h, gamma=0.7, kT=1.3)
        np.testing.assert_allclose(cov, 1.3 * np.eye(2), rtol=1e-12, atol=1e-13)


def test_linear_refuses_nonlinear_and_hookless_letters(user_letters):
    with pytest.raises(ValueError, match="letter 'Y'.*not linear"):
        linear.stationary_covariance("BAYOAB", hessian=1.0, h=0.1)

    class Plain(Letter):
        name, title, moves = "W", "plain", ("p",)

    letters.register(Plain())
    try:
        with pytest.raises(ValueError, match="letter 'W'.*sdekit.linear"):
            linear.stationary_covariance("BAWOAB", hessian=1.0, h=0.1)
    finally:
        letters.unregister("W")


def test_unconstrained_letter_is_refused_on_a_constrained_system(user_letters):
    from sdekit.constraints import Sphere
    with pytest.raises(ValueError, match=r"constraint: letter\(s\) \['H'\]"):
        sdekit.ensemble("BHOHB", Harmonic(dim=3), 0.1, 3, 4, seed=0, backend="numpy", constraint=Sphere(),
                        q0=np.array([1.0, 0.0, 0.0]))


def test_default_backend_falls_back_to_numpy_for_a_letter_without_source(user_letters):
    """A letter with a numpy hook only runs by default on numpy (the kernels refuse it)."""
    class NumpyOnly(Letter):
        name, title, moves = "W", "numpy only", ("p",)

        def numpy(self, x, k, delta, new_force):
            x.w.p = x.w.p * 0.5

    letters.register(NumpyOnly())
    try:
        e = sdekit.ensemble("W", Harmonic(), 0.1, 3, 2, seed=0, p0=np.ones((2, 1)))
        assert e.state.backend == "numpy"
        np.testing.assert_array_equal(e.p, 0.125)
    finally:
        letters.unregister("W")


# ------------------------------------------------------------------ review fixes (each failed before)

def kick_flow(p, F, delta):
    return p + delta * F


def drift_flow(q, p, delta, inv_mass):
    return q + delta * inv_mass * p


class UserKick(CoordinateLetter):
    name, title = "K", "user kick"
    inputs, moves = ("p", "F"), ("p",)
    flow = staticmethod(kick_flow)


class UserDrift(CoordinateLetter):
    name, title = "Q", "user drift"
    inputs, moves, parameters = ("q", "p"), ("q",), ("inv_mass",)
    flow = staticmethod(drift_flow)


def test_probed_linear_maps_equal_the_builtins_in_several_dimensions():
    """d = 3, a non-diagonal K, unequal masses, frictions and temperatures: the probed maps of
    user letters with the built-ins' arithmetic equal the built-ins' maps (the probe once
    broadcast a (2d,) response against a (d,) point and failed for every d > 1)."""
    from user_letters import ExactOU
    added = [letters.register(UserKick()), letters.register(UserDrift()), letters.register(ExactOU(), replace=True)]
    try:
        K = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]])
        mass, gamma, kT = np.array([1.0, 2.0, 0.5]), np.array([0.3, 1.0, 2.0]), np.array([1.0, 0.5, 2.0])
        for user, builtin in (("K", "B"), ("Q", "A"), ("U", "O")):
            T, Q = linear.letter_map(user, 0.3, K, gamma, kT, mass)
            T0, Q0 = linear.letter_map(builtin, 0.3, K, gamma, kT, mass)
            np.testing.assert_allclose(T, T0, rtol=0, atol=1e-15)
            np.testing.assert_allclose(Q, Q0, rtol=0, atol=1e-15)
        cov = linear.stationary_covariance("KQUQK", K, 0.3, gamma, kT, mass)
        np.testing.assert_allclose(cov, linear.stationary_covariance("BAOAB", K, 0.3, gamma, kT, mass),
                                   rtol=1e-12, atol=1e-14)
    finally:
        for letter in added:
            letters.unregister(letter.name)


def test_a_coordinate_letter_moving_q_cannot_claim_a_constrained_form():
    with pytest.raises(ValueError, match="letter: 'H' moves q.*constrained=False"):
        type("ConstrainedRotation", (Rotation,), {"constrained": True})()


def test_geodesic_steps_split_only_the_drift():
    """A constrained letter that moves q (doing its own SHAKE) is not split into geodesic
    sub-steps: only A is, so a word without A refuses geodesic_steps."""
    cls = type("OwnShake", (Letter,), {"name": "W", "title": "own shake", "moves": ("q",), "constrained": True})
    letters.register(cls())
    try:
        with pytest.raises(ValueError, match="geodesic_steps"):
            Scheme("BWOWB", geodesic_steps=3)
        assert "geodesic" not in Scheme("BAWAB", geodesic_steps=2).describe().split("W  own shake")[1].split("\n")[0]
    finally:
        letters.unregister("W")


def test_a_letter_may_record_only_what_runs_carry():
    cls = type("Rec", (Letter,), {"name": "W", "title": "rec", "moves": ("p",), "records": (("p_W", "p"),)})
    with pytest.raises(ValueError, match="records must be .* in \\('p_O',\\)"):
        letters.register(cls())
