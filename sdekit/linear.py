r"""Exact statistics of the discrete chain for Gaussian targets.

For a quadratic potential :math:`U(q) = q^T K q / 2` (K symmetric positive definite)
and a diagonal mass M, every letter of :mod:`sdekit.operators` is an affine map with
additive Gaussian noise, so one step of any splitting is

.. math::

    x_{n+1} = T x_n + \eta_n, \qquad \eta_n \sim N(0, Q), \qquad x = (q, p),

and the law of the chain stays Gaussian. Its stationary covariance solves the
discrete Lyapunov equation :math:`\Sigma = T \Sigma T^T + Q`, and its moments after
n steps follow :math:`m_{n+1} = T m_n`, :math:`C_{n+1} = T C_n T^T + Q`. This gives
exact answers (to rounding) for stationary biases and weak errors of linear and
quadratic observables, against which schemes and kernels are tested.

T and Q are built letter by letter from the same coefficients the integrators use
(:func:`sdekit.operators.ou_coefficients` for O):

* A(delta): :math:`q \leftarrow q + \delta M^{-1} p`
* B(delta): :math:`p \leftarrow p - \delta K q`
* O(delta): :math:`p \leftarrow c\,p + s M^{1/2} R`,  c, s per coordinate from
  :math:`\gamma_i` and :math:`\sigma_i = \sqrt{2\gamma_i k_BT_i}` (array-valued
  gamma and kT give a partitioned scheme: one friction and temperature per coordinate)
* EM: :math:`q' = (I - hK) q + \sqrt{2 h k_BT}\,R`
* LM: :math:`q' = (I - hK) q + \sqrt{h k_BT/2}\,(R_n + R_{n+1})`, with the state
  augmented by the pending noise :math:`R_n` (so T, Q are 2d x 2d for LM and the
  returned covariances are those of q alone).

D letters make the chain nonlinear (xi multiplies p) and are refused.

References
----------
B. Leimkuhler and C. Matthews, "Rational construction of stochastic numerical
methods for molecular sampling", Appl. Math. Res. Express 2013, 34-56 (BAOAB and
its exact harmonic statistics). B. Leimkuhler, C. Matthews and G. Stoltz, "The
computation of averages from equilibrium and nonequilibrium Langevin molecular
dynamics", IMA J. Numer. Anal. 36 (2016) 13-79 (the LM scheme). C. Van Loan,
"Computing integrals involving the matrix exponential", IEEE TAC 23 (1978) 395-404.
"""
from collections import namedtuple

import numpy as np
from scipy import linalg

from . import letters
from . import operators as ops
from ._checks import finite_array, integer, real
from .schemes import Scheme

Moments = namedtuple("Moments", "mean cov")
Moments.__doc__ = "Mean vector and covariance matrix of a Gaussian law."


# ----------------------------------------------------------------------------- inputs

def as_hessian(hessian):
    """K as a symmetric positive-definite (d, d) array (a scalar or vector is a diagonal)."""
    K = finite_array("hessian", hessian)
    if K.ndim == 0:
        K = K.reshape(1, 1)
    elif K.ndim == 1:
        K = np.diag(K)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"hessian: must be a scalar, a vector (diagonal) or a square matrix, got shape {K.shape}")
    if not np.allclose(K, K.T, rtol=0, atol=1e-12 * np.abs(K).max()):
        raise ValueError(f"hessian: must be symmetric, got {hessian!r}")
    K = 0.5 * (K + K.T)
    low = np.linalg.eigvalsh(K).min()
    if low <= 0:
        raise ValueError(f"hessian: must be positive definite, smallest eigenvalue {low!r}")
    return K


class GroupHessian(np.ndarray):
    r"""The total Hessian :math:`K = \sum_g K_g` of a force-group word, carrying the groups'
    ``K_g`` as ``.groups`` (each group kick's linear map reads its own)."""

    groups = None


def group_hessian(hessians, n_groups):
    """K = sum of ``hessians`` (one symmetric positive semi-definite K_g per force group, the
    sum positive definite) as a :class:`GroupHessian`."""
    if isinstance(hessians, GroupHessian):
        return hessians
    if not isinstance(hessians, (list, tuple)) or len(hessians) != n_groups:
        raise ValueError(f"hessian: a word with force groups takes one Hessian per group (a list of "
                         f"{n_groups}: system.hessians() of sdekit.systems.split), got {hessians!r:.80}")
    parts = []
    for g, H in enumerate(hessians):
        H = finite_array(f"hessian[{g}]", H)
        H = H.reshape(1, 1) if H.ndim == 0 else np.diag(H) if H.ndim == 1 else H
        if H.ndim != 2 or H.shape[0] != H.shape[1] or not np.allclose(H, H.T, rtol=0, atol=1e-12 * (np.abs(H).max() + 1)):
            raise ValueError(f"hessian[{g}]: must be a symmetric matrix (or a scalar or diagonal), got {H!r:.80}")
        if np.linalg.eigvalsh(0.5 * (H + H.T)).min() < -1e-12 * np.abs(H).max():
            raise ValueError(f"hessian[{g}]: must be positive semi-definite")
        parts.append(0.5 * (H + H.T))
    if len({H.shape for H in parts}) != 1:
        raise ValueError(f"hessian: the groups' Hessians must have the same shape, got {[H.shape for H in parts]}")
    K = as_hessian(sum(parts)).view(GroupHessian)
    K.groups = tuple(parts)
    return K


def per_coordinate(name, value, d, *, positive=False):
    """A scalar or length-d vector of non-negative (or positive) reals, as a (d,) array."""
    arr = finite_array(name, value)
    if arr.ndim == 0:
        arr = np.full(d, float(arr))
    if arr.shape != (d,):
        raise ValueError(f"{name}: must be a scalar or have length {d}, got shape {arr.shape}")
    if np.any(arr < 0) or (positive and np.any(arr == 0)):
        raise ValueError(f"{name}: must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return arr


def _inputs(scheme, hessian, h, gamma, kT, mass):
    scheme = scheme if isinstance(scheme, Scheme) else Scheme(scheme)
    if any("xi" in e.letter.moves for e in scheme.entries):
        raise ValueError(f"scheme: {scheme.word!r} has a D letter; the thermostat variable xi "
                         f"multiplies p, so the chain is not linear and has no exact Gaussian law")
    for letter in scheme.alphabet:
        if not letter.supports("linear_map"):
            raise letter.missing("linear_map", "sdekit.linear (exact Gaussian statistics)")
    K = group_hessian(hessian, len(scheme.force_groups)) if scheme.force_groups else as_hessian(hessian)
    d = K.shape[0]
    h = real("h", h, low=0.0, low_open=True)
    kT = per_coordinate("kT", kT, d)
    if scheme.overdamped:
        if mass is not None:
            raise ValueError(f"mass: overdamped scheme {scheme.word} takes no mass, got {mass!r}")
        return scheme, K, h, None, kT, None
    gamma = per_coordinate("gamma", gamma, d)
    mass = np.ones(d) if mass is None else per_coordinate("mass", mass, d, positive=True)
    return scheme, K, h, gamma, kT, mass


# ----------------------------------------------------------------------------- one step

def letter_map(letter, delta, K, gamma, kT, mass):
    r"""Linear map T and noise covariance Q of one letter on x = (q, p): its
    :meth:`~sdekit.letters.Letter.linear_map` hook (ValueError for a letter without one).

    A: :math:`[[I, \delta M^{-1}], [0, I]]`; B: :math:`[[I, 0], [-\delta K, I]]`;
    O: :math:`\mathrm{diag}(I, C)` with noise :math:`\mathrm{diag}(0, S M S)`, where
    ``C, S`` are :func:`sdekit.operators.ou_coefficients` per coordinate. EM and LM
    (whole steps, ``delta`` = h) act on q (EM) or on (q, R_n) (LM): see
    :mod:`sdekit.letters.overdamped`.
    """
    letter = letter if isinstance(letter, letters.Letter) else letters.get(letter)
    return letter.linear_map(delta, K, gamma, kT, mass, ops)


def one_step(scheme, hessian, h, gamma=1.0, kT=1.0, mass=None):
    r"""The composed linear map T and injected noise covariance Q of one step.

    .. math::

        x_{n+1} = T x_n + \eta_n,\quad \eta_n \sim N(0, Q),\qquad
        T = T_L \cdots T_1,\quad Q = T_L Q_{L-1} T_L^T + Q_L \ \text{(recursively)}.

    Parameters
    ----------
    scheme : Scheme, str or list of (letter, fraction)
        Any word over A, B, O (explicit fractions allowed), or "EM"/"LM".
    hessian : float, (d,) or (d, d), or a list of them
        K of :math:`U = q^T K q / 2` (symmetric positive definite); for a word with force
        groups (B0, B1, ...) one :math:`K_g` per group, :math:`U = \sum_g q^T K_g q/2`
        (``system.hessians()`` of :func:`sdekit.systems.split`).
    h : float
        Step size.
    gamma, kT : float or (d,)
        Friction and temperature, per coordinate if arrays (partitioned scheme).
    mass : float or (d,), optional
        Diagonal mass (default 1).

    Returns
    -------
    T, Q : (n, n) arrays, n = 2d for x = (q, p); for EM n = d (q); for LM n = 2d
        with state (q, R_n).
    """
    scheme, K, h, gamma, kT, mass = _inputs(scheme, hessian, h, gamma, kT, mass)
    return _one_step(scheme, K, h, gamma, kT, mass)


def _one_step(scheme, K, h, gamma, kT, mass):
    if scheme.whole_step is not None:
        return letter_map(scheme.whole_step, h, K, gamma, kT, mass)
    n = 2 * K.shape[0]
    T, Q = np.eye(n), np.zeros((n, n))
    for letter, f, _, _ in scheme.entries:
        TL, QL = letter_map(letter, f * h, K, gamma, kT, mass)
        T, Q = TL @ T, TL @ Q @ TL.T + QL
    return T, Q


STABLE = 1.0 - 1e-12
"""A chain is treated as stable when the spectral radius of T is below this."""


def spectral_radius(T):
    """max |eigenvalue| of T."""
    return float(np.max(np.abs(np.linalg.eigvals(T))))


# ----------------------------------------------------------------------------- stationary law

def stability_limit(scheme, hessian, h, gamma=1.0, kT=1.0, mass=None, rtol=1e-6):
    """The largest step below ``h`` at which the chain is stable, by bisection on h.

    Bisects :math:`\\rho(T(h)) < 1` between a tiny step and ``h`` (if ``h`` is
    stable, returns ``h``). Returns 0.0 if no step tried is stable (e.g. gamma = 0,
    where :math:`\\rho = 1` for every step).
    """
    scheme, K, h, gamma, kT, mass = _inputs(scheme, hessian, h, gamma, kT, mass)
    stable = lambda x: spectral_radius(_one_step(scheme, K, x, gamma, kT, mass)[0]) < STABLE
    if stable(h):
        return h
    lo, hi = h * 1e-6, h
    if not stable(lo):
        return 0.0
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    return lo


def lyapunov(T, Q):
    r"""Solve :math:`\Sigma = T \Sigma T^T + Q` (:func:`scipy.linalg.solve_discrete_lyapunov`),
    symmetrized. Relative accuracy ~1e-13, degrading like :math:`1/(1 - \rho(T))` as the
    spectral radius approaches one (tiny friction or step)."""
    sigma = linalg.solve_discrete_lyapunov(T, Q)
    return 0.5 * (sigma + sigma.T)


def _dimension_of_state(scheme, d):
    return d if scheme.overdamped else 2 * d


def stationary_covariance(scheme, hessian, h, gamma=1.0, kT=1.0, mass=None):
    r"""Exact stationary covariance of the discrete chain on a Gaussian target.

    Solves the discrete Lyapunov equation

    .. math::

        \Sigma = T \Sigma T^T + Q

    (:func:`scipy.linalg.solve_discrete_lyapunov`) with T, Q from :func:`one_step`.
    The stationary mean is zero. On :math:`U = \omega^2 q^2/2` this gives, for every
    stable step and friction, BAOAB :math:`\langle q^2\rangle = k_BT/\omega^2`,
    :math:`\langle p^2\rangle = k_BT(1 - h^2\omega^2/4)`; OBABO
    :math:`\langle p^2\rangle = k_BT`, :math:`\langle q^2\rangle = k_BT/(\omega^2(1 - h^2\omega^2/4))`;
    EM :math:`\langle q^2\rangle = k_BT/(\omega^2(1 - h\omega^2/2))`; LM
    :math:`\langle q^2\rangle = k_BT/\omega^2` (Leimkuhler & Matthews 2013;
    Leimkuhler, Matthews & Stoltz 2016).

    Parameters
    ----------
    scheme, hessian, h, gamma, kT, mass
        As in :func:`one_step`; gamma and kT may be length-d arrays (partitioned).

    Returns
    -------
    (2d, 2d) covariance of (q, p) for Langevin words; (d, d) covariance of q for
    the overdamped schemes.

    Raises
    ------
    ValueError
        If the chain is unstable (spectral radius of T >= 1): the message gives the
        spectral radius and the stability limit in h found by bisection.
    """
    scheme, K, h, gamma, kT, mass = _inputs(scheme, hessian, h, gamma, kT, mass)
    noisy = [e.letter for e in scheme.entries if e.letter.normals]
    if not scheme.overdamped and (not noisy or (all("gamma" in l.coefficients for l in noisy)
                                                and not np.any(gamma > 0))):
        raise ValueError(f"gamma: {scheme.word} with zero friction conserves a discrete energy; "
                         f"the chain has no unique stationary law (gamma={gamma.tolist()})")
    T, Q = _one_step(scheme, K, h, gamma, kT, mass)
    rho = spectral_radius(T)
    if rho >= STABLE:
        limit = stability_limit(scheme, K, h, gamma if gamma is not None else 1.0, kT, mass)
        where = (f"stable for h < {limit:.6g} (bisection on h)" if limit > 0
                 else "no stable step found (is the friction zero?)")
        raise ValueError(f"h: the chain of {scheme.word} is unstable at h={h!r}: spectral radius "
                         f"of the one-step map is {rho:.12g} >= 1; {where}")
    sigma = lyapunov(T, Q)
    d = K.shape[0]
    return sigma[:_dimension_of_state(scheme, d), :_dimension_of_state(scheme, d)]


# ----------------------------------------------------------------------------- transient law

def _initial_law(scheme, d, mean0, cov0):
    n = _dimension_of_state(scheme, d)
    what = "q" if scheme.overdamped else "(q, p)"
    m = finite_array("mean0", mean0).reshape(-1)
    if m.shape != (n,):
        raise ValueError(f"mean0: must have length {n} (the state {what}), got shape {m.shape}")
    C = finite_array("cov0", cov0)
    if C.ndim == 0:
        C = float(C) * np.eye(n)
    elif C.ndim == 1:
        C = np.diag(C)
    if C.shape != (n, n):
        raise ValueError(f"cov0: must be ({n}, {n}) (the state {what}), got shape {C.shape}")
    if not np.allclose(C, C.T) or np.linalg.eigvalsh(0.5 * (C + C.T)).min() < -1e-12 * max(1.0, np.abs(C).max()):
        raise ValueError(f"cov0: must be symmetric positive semi-definite, got {cov0!r}")
    if scheme.overdamped == "LM":  # the pending noise R_0 ~ N(0, I), independent of q_0
        m = np.concatenate([m, np.zeros(d)])
        C = linalg.block_diag(C, np.eye(d))
    return m, C


def transient_moments(scheme, hessian, h, n_steps, gamma=1.0, kT=1.0, mean0=None, cov0=0.0, mass=None):
    r"""Exact mean and covariance of the chain after ``n_steps`` from a Gaussian start.

    .. math::

        m_{n+1} = T m_n, \qquad C_{n+1} = T C_n T^T + Q,

    so that :math:`E[f(x_n)]` is exact for linear and quadratic f, e.g.
    :math:`E[q_n q_n^T] = C_n^{qq} + m_n^q m_n^{qT}`. Subtracting
    :func:`exact_moments` at :math:`t = n h` gives the exact weak error.

    Parameters
    ----------
    scheme, hessian, h, gamma, kT, mass
        As in :func:`one_step`.
    n_steps : int
        Number of steps (>= 0).
    mean0 : array (2d,) for (q, p), (d,) for overdamped q; default zeros
    cov0 : scalar, (n,) diagonal or (n, n) matrix; default 0 (a deterministic start)
        For LM the pending noise :math:`R_0` is drawn N(0, I) independently, as
        :func:`sdekit.ensemble` does.

    Returns
    -------
    Moments(mean, cov) of (q, p), or of q for overdamped schemes.
    """
    scheme, K, h, gamma, kT, mass = _inputs(scheme, hessian, h, gamma, kT, mass)
    n_steps = integer("n_steps", n_steps, low=0)
    d = K.shape[0]
    n = _dimension_of_state(scheme, d)
    m, C = _initial_law(scheme, d, np.zeros(n) if mean0 is None else mean0, cov0)
    T, Q = _one_step(scheme, K, h, gamma, kT, mass)
    for _ in range(n_steps):
        m, C = T @ m, T @ C @ T.T + Q
    return Moments(m[:n], 0.5 * (C + C.T)[:n, :n])


def exact_moments(hessian, t, gamma=1.0, kT=1.0, mean0=None, cov0=0.0, mass=None, overdamped=False):
    r"""Exact mean and covariance of the SDE itself at time t (no discretization).

    Underdamped: :math:`dx = A x\,dt + B\,dW` with
    :math:`A = [[0, M^{-1}], [-K, -\Gamma]]`, :math:`BB^T = \mathrm{diag}(0, 2\Gamma k_BT M)`;
    overdamped: :math:`A = -K`, :math:`BB^T = 2 k_BT`. Then
    :math:`m(t) = e^{At} m_0` and
    :math:`C(t) = e^{At} C_0 e^{A^Tt} + \int_0^t e^{As} BB^T e^{A^Ts} ds`,
    the integral by Van Loan's block exponential (Van Loan 1978).

    Returns
    -------
    Moments(mean, cov) of (q, p), or of q when ``overdamped``.
    """
    K = as_hessian(hessian)
    d = K.shape[0]
    t = real("t", t, low=0.0)
    kT = per_coordinate("kT", kT, d)
    if not isinstance(overdamped, (bool, np.bool_)):
        raise ValueError(f"overdamped: must be True or False, got {overdamped!r}")
    if overdamped:
        A, BB = -K, np.diag(2.0 * kT)
    else:
        gamma = per_coordinate("gamma", gamma, d)
        mass = np.ones(d) if mass is None else per_coordinate("mass", mass, d, positive=True)
        A = np.block([[np.zeros((d, d)), np.diag(1.0 / mass)], [-K, -np.diag(gamma)]])
        BB = linalg.block_diag(np.zeros((d, d)), np.diag(2.0 * gamma * kT * mass))
    n = A.shape[0]
    scheme = Scheme("EM") if overdamped else Scheme("BAOAB")
    m0, C0 = _initial_law(scheme, d, np.zeros(n) if mean0 is None else mean0, cov0)
    E = linalg.expm(np.block([[-A, BB], [np.zeros((n, n)), A.T]]) * t)
    Phi = E[n:, n:].T                      # e^{At}
    noise = Phi @ E[:n, n:]                # int_0^t e^{As} BB^T e^{A^T s} ds
    C = Phi @ C0 @ Phi.T + noise
    return Moments(Phi @ m0, 0.5 * (C + C.T))


def second_moments(moments):
    r"""Diagonal of :math:`E[x x^T] = C + m m^T` (e.g. <q_i^2>, <p_i^2>)."""
    return np.diag(moments.cov) + moments.mean ** 2
