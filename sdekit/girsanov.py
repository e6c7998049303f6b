r"""Girsanov path weights for a change of drift, and reweighted averages.

A run of a word with ``drift_change=u`` (:func:`sdekit.simulate`, :func:`sdekit.ensemble`)
simulates the *proposal* chain (force F) and carries, per path, the log of the exact
likelihood ratio of its path under the *target* chain (force F + u) to its likelihood
under the proposal: ``state.log_weight``, :attr:`Trajectory.log_weight`,
``Ensemble.mean["log_weight"]``. Then, for any function f of the path,

.. math::

    E_{\text{target}}[f] = E_{\text{proposal}}[w f], \qquad w = e^{\log w},
    \qquad E_{\text{proposal}}[w] = 1,

exactly for the discrete chains, at every step h (not only in the limit h -> 0).

Where the change of drift acts
------------------------------
The noise enters a splitting word only in its O letters,
:math:`p' = c p + s M^{1/2} z` (:mod:`sdekit.letters.ou`). The target chain is the same
word whose O letters are the exact flow over :math:`\delta` of

.. math::

    dp = \bigl(u(q) - G p\bigr)\,dt + \sigma M^{1/2} dW \quad (q \text{ fixed during O}),
    \qquad p' = c p + b\,u(q) + s M^{1/2} z^*, \qquad b = \frac{1 - e^{-G\delta}}{G}

(:func:`ou_shift`; :math:`b = \delta` as :math:`G \to 0`; G = gamma, c and s as for O).
Its other letters are those of the proposal, so its SDE limit is Langevin dynamics with
the force F + u (the extra force enters p as F does: :math:`\dot p = F + u - G p + \dots`).
A proposal path drawn with normals z is the same path under the target with
:math:`z^* = z - m`, :math:`m = b\,u(q)/(s M^{1/2})` per coordinate, so the ratio of the
two Gaussian densities of the O letter's step is

.. math::

    \log w \mathrel{+}= m\cdot z - \tfrac12 |m|^2 \qquad (:func:`increment`),

computed from the normals the O letter already drew. Every other letter is a
deterministic map (or draws numbers whose law is the same under both chains: the uniform
of a Metropolis test), so the product over the O letters is the exact path likelihood
ratio. The Euler–Maruyama step (``EM``) is the same with :math:`b = h`,
:math:`s M^{1/2} = \sqrt{2 h k_BT}`: the classical discrete Girsanov weight.

References
----------
I. V. Girsanov, Theory Probab. Appl. 5 (1960) 285-301 (the change of measure);
P. E. Kloeden & E. Platen, *Numerical Solution of SDEs*, Springer 1992, sec. 4.8;
H. J. Kappen, "Path integrals and symmetry breaking for optimal control theory",
J. Stat. Mech. (2005) P11011 (importance weights of a controlled drift: path-integral
control); G.-H. Liu et al., "I2SB: Image-to-Image Schrödinger Bridge", ICML 2023, and
G.-H. Liu, PhD thesis, Georgia Tech 2024 (path-space likelihood ratios between a bridge's
forward and backward drifts); L. Kish, *Survey Sampling*, Wiley 1965 (effective sample size).
"""
import math
from collections import namedtuple

import numpy as np

from . import linear
from ._checks import finite_array, integer
from .letters.ou import increment, ou_shift  # noqa: F401  (re-exported)
from .systems import System, combine_gradients


# ----------------------------------------------------------------------------- the drift change


class Difference(System):
    r"""The drift change :math:`u = F_{\text{target}} - F_{\text{proposal}}` as a system:
    :math:`U = U_{\text{target}} - U_{\text{proposal}}` (see :func:`difference`)."""

    def __init__(self, target, proposal):
        for name, s in (("target", target), ("proposal", proposal)):
            if not isinstance(s, System) or s.time_dependent or s.parts:
                raise ValueError(f"{name}: must be a time-independent sdekit system (not a split), got {s!r}")
        if target.dim != proposal.dim:
            raise ValueError(f"target: has dimension {target.dim}, the proposal {proposal.dim}")
        # private: the fingerprint (sdekit.kernels.system_fingerprint) hashes the gradient, which closes
        # over the two gradients, and the repr, which names both systems
        self._target, self._proposal, self.dim = target, proposal, target.dim
        self.name = f"difference({target!r}, {proposal!r})"
        self.numpy_only = target.numpy_only or proposal.numpy_only
        if not self.numpy_only:
            self.gradient = combine_gradients(target.gradient, proposal.gradient, -1.0)

    target = property(lambda self: self._target, doc="The target system.")
    proposal = property(lambda self: self._proposal, doc="The proposal system.")

    def potential(self, q):
        return self.target.potential(q) - self.proposal.potential(q)

    def grad(self, q):
        return self.target.grad(q) - self.proposal.grad(q)

    def hessian(self):
        """The constant Hessian of a difference of quadratic systems (Harmonic, Gaussian)."""
        if not (hasattr(self.target, "hessian") and hasattr(self.proposal, "hessian")):
            raise ValueError(f"drift_change: {self.name} is not a difference of quadratic systems")
        return np.atleast_2d(self.target.hessian()) - np.atleast_2d(self.proposal.hessian())


def difference(target, proposal):
    r"""The ``drift_change`` that reweights a run on ``proposal`` to ``target``:
    :math:`u = F_{\text{target}} - F_{\text{proposal}} = -\nabla(U_{\text{target}} - U_{\text{proposal}})`.

    Examples
    --------
    >>> from sdekit.systems import Harmonic
    >>> u = difference(Harmonic(1.5), Harmonic(1.0))        # u(q) = -(2.25 - 1) q
    >>> float(u.force(np.array([2.0]))[0])
    -2.5
    """
    return Difference(target, proposal)


def check(spec):
    """ValueError naming the argument unless the run's ``drift_change`` can be weighted exactly:
    a time-independent system of the run's dimension; a word whose noise carries the weight
    (an O letter, or EM) with noise in it (sigma > 0), no thermostat D, constant parameters,
    no constraint, not LM."""
    u, scheme = spec.drift_change, spec.scheme
    if not isinstance(u, System) or u.time_dependent:
        raise ValueError(f"drift_change: must be a time-independent sdekit system whose force is the change "
                         f"of drift u(q) (e.g. sdekit.girsanov.difference(target, proposal)), got {u!r}")
    if u.dim != spec.dim:
        raise ValueError(f"drift_change: has dimension {u.dim}, the system {spec.dim}")
    if scheme.overdamped == "LM":
        raise ValueError(f"scheme: {scheme.word}'s noise R_n + R_n+1 is shared by two steps; path weights "
                         f"for a change of drift run on EM or words with O letters, got scheme={scheme.word!r}")
    if not any(letter.carries_weight for letter in scheme.alphabet_entries):
        raise ValueError(f"scheme: {scheme.word} has no O letter (or EM) whose noise could carry the weight "
                         f"of a change of drift, got scheme={scheme.word!r}")
    if any("xi" in letter.moves for letter in scheme.alphabet_entries):
        raise ValueError(f"scheme: path weights for a change of drift are not implemented for words with a "
                         f"thermostat D (xi), got scheme={scheme.word!r}")
    if spec.constraint is not None:
        raise ValueError(f"constraint: path weights for a change of drift need the full noise of O (RATTLE "
                         f"projects it), got constraint={spec.constraint!r}")
    if spec.time_dependent:
        raise ValueError("drift_change: path weights need constant gamma, kT, sigma_A and force; the run "
                         "depends on t")
    for name in ("gamma", "kT"):
        v = getattr(spec, name)
        if not math.isfinite(v):
            raise ValueError(f"{name}: path weights need a finite {name}, got {name}={v!r}")
    if scheme.overdamped == "EM":
        if spec.kT <= 0:
            raise ValueError(f"kT: EM with kT = 0 has no noise to carry a path weight, got kT={spec.kT!r}")
    elif spec.sigma <= 0:
        name = "gamma" if spec.sigma_A is None else "sigma_A"
        raise ValueError(f"{name}: O without noise (gamma = 0 and no sigma_A, or sigma_A = 0) cannot carry a path "
                         f"weight for a change of drift, got {name}={getattr(spec, name)!r}")


# ----------------------------------------------------------------------------- reweighted averages

Reweighted = namedtuple("Reweighted", "mean stderr ess")
Reweighted.__doc__ = """A self-normalised importance-sampling estimate: the mean, its standard error
(delta method, independent paths) and the Kish effective sample size."""


def normalized_weights(log_weight):
    r""":math:`w_i / \sum_j w_j` from the log-weights (stable: the largest is subtracted first)."""
    lw = finite_array("log_weight", log_weight, ndim=1)
    if lw.size == 0:
        raise ValueError("log_weight: needs at least one path, got an empty array")
    w = np.exp(lw - lw.max())
    return w / w.sum()


def effective_sample_size(log_weight):
    r"""Kish's effective sample size :math:`(\sum w_i)^2 / \sum w_i^2` (n for equal weights, 1 for one
    dominant path)."""
    w = normalized_weights(log_weight)
    return float(1.0 / np.sum(w * w))


def reweight(values, log_weight):
    r"""Self-normalised importance-sampling average of ``values`` under the target.

    .. math::

        \hat\mu = \frac{\sum_i w_i f_i}{\sum_i w_i}, \qquad
        \widehat{\mathrm{se}}^2 = \frac{\sum_i w_i^2 (f_i - \hat\mu)^2}{(\sum_i w_i)^2}

    (the delta method for the ratio of two means over independent paths; Owen, *Monte
    Carlo theory, methods and examples*, 2013, ch. 9).

    Parameters
    ----------
    values : (n_paths,) or (n_paths, k)
        f of each path (e.g. ``ens.q ** 2``).
    log_weight : (n_paths,)
        The paths' log-weights (``ens.log_weight``).

    Returns
    -------
    Reweighted(mean, stderr, ess)
    """
    w = normalized_weights(log_weight)
    f = finite_array("values", values)
    if f.ndim == 0 or f.shape[0] != w.size:
        raise ValueError(f"values: must have one row per path ({w.size}), got shape {f.shape}")
    wf = w.reshape((-1,) + (1,) * (f.ndim - 1))
    mean = np.sum(wf * f, axis=0)
    se = np.sqrt(np.sum(wf ** 2 * (f - mean) ** 2, axis=0))
    return Reweighted(mean, se, float(1.0 / np.sum(w * w)))


# ----------------------------------------------------------------------------- exact laws (linear chains)

LogWeightLaw = namedtuple("LogWeightLaw", "mean var mean_weight mean_square_weight")
LogWeightLaw.__doc__ = r"""The exact law of :math:`\log w` of a linear chain under the proposal: its mean
(minus the KL divergence of the proposal's path law from the target's), variance,
:math:`E[w]` (1 for an exact weight) and :math:`E[w^2]` (inf where it diverges):
n paths have an effective sample size of about :math:`n / E[w^2]`."""


def _affine_paths(scheme, K, Ku, h, n_steps, gamma, kT, mass, x0):
    """Propagate x = a + X Z through n_steps steps of the proposal (Z all the normals), and the
    log weight c0 + b.Z + Z^T A Z / 2; returns (a, X, c0, b, A) with X, b, A over all normals."""
    letters_of = [(scheme.whole_step, h)] if scheme.whole_step is not None else \
        [(e.letter, e.fraction * h) for e in scheme.entries]
    d = K.shape[0]
    per_step = sum(letter.normals for letter, _ in letters_of) * d
    N = per_step * n_steps
    n = x0.size
    a, X = x0.astype(float).copy(), np.zeros((n, N))
    c0, b, A = 0.0, np.zeros(N), np.zeros((N, N))
    col = 0
    for _ in range(n_steps):
        for letter, delta in letters_of:
            T, Q = linear.letter_map(letter, delta, K, gamma, kT, mass)
            if letter.normals:
                if not letter.carries_weight:
                    raise ValueError(f"scheme: letter {letter.name!r} draws noise but carries no weight")
                # the noise loading: diagonal (O: on p, s M^1/2; EM: on q, sqrt(2 h kT))
                load = np.sqrt(np.diag(Q))
                rows = np.flatnonzero(load > 0)
                if letter.whole_step:
                    shift, amp = delta * np.ones(d), np.sqrt(2.0 * delta * kT) * np.ones(d)
                else:
                    shift = np.array([ou_shift(g, delta) for g in np.broadcast_to(gamma, (d,))])
                    amp = load[d:]
                # m = shift u(q) / amp, u = -Ku q, q the first d entries of x
                Lm = -(shift / amp)[:, None] * Ku          # m = Lm q
                m_c, m_Z = Lm @ a[:d], Lm @ X[:d]
                E = np.zeros((d, N))
                E[np.arange(d), col + np.arange(d)] = 1.0
                c0 -= 0.5 * m_c @ m_c
                b += E.T @ m_c - m_Z.T @ m_c
                A += m_Z.T @ E + E.T @ m_Z - m_Z.T @ m_Z
                a, X = T @ a, T @ X
                X[rows] += load[rows, None] * E[rows - (0 if letter.whole_step else d)]
                col += d
            else:
                a, X = T @ a, T @ X
    return a, X, c0, b, A


def log_weight_law(scheme, hessian, drift_hessian, h, n_steps, gamma=1.0, kT=1.0, mass=None, x0=None):
    r"""The exact law of the path log-weight of a linear chain, from a fixed start.

    For :math:`U = q^T K q/2` and a linear drift change :math:`u = -K_u q`, every state is
    an affine function of the vector Z of all the normals drawn, and :math:`\log w` is a
    quadratic form :math:`c_0 + b^T Z + Z^T A Z/2` (each O adds :math:`m\cdot z - |m|^2/2`
    with m affine in the earlier normals). Under the proposal :math:`Z \sim N(0, I)`, so

    .. math::

        E[\log w] = c_0 + \tfrac12 \operatorname{tr} A, \qquad
        \operatorname{Var}[\log w] = |b|^2 + \tfrac12 \operatorname{tr} A^2, \qquad
        E[w^k] = \det(I - kA)^{-1/2} \exp\bigl(k c_0 + \tfrac{k^2}2 b^T (I - kA)^{-1} b\bigr),

    with :math:`E[w] = 1` for an exact likelihood ratio (a check of the bookkeeping), and
    :math:`E[w^2]` the inverse of the effective sample size per path.

    Parameters
    ----------
    scheme, hessian, h, gamma, kT, mass
        As in :func:`sdekit.linear.transient_moments` (scalar gamma and kT).
    drift_hessian : float, (d,) or (d, d)
        :math:`K_u` of :math:`u = -K_u q` (``difference(target, proposal).hessian()``; may be indefinite).
    n_steps : int
        Steps (small: the normals' count N = steps x normals per step x d sets an N x N matrix).
    x0 : array (2d,) of (q, p), (d,) of q for EM; default zeros

    Returns
    -------
    LogWeightLaw(mean, var, mean_weight, mean_square_weight)
    """
    scheme, K, h, gamma, kT, mass, Ku, x0 = _linear_inputs(scheme, hessian, drift_hessian, h, gamma, kT, mass, x0)
    n_steps = integer("n_steps", n_steps, low=0)
    _, _, c0, b, A = _affine_paths(scheme, K, Ku, h, n_steps, gamma, kT, mass, x0)
    def moment(k):   # E[w^k] of the quadratic form under Z ~ N(0, I)
        IA = np.eye(A.shape[0]) - k * A
        sign, logdet = np.linalg.slogdet(IA)
        if sign <= 0 or np.linalg.eigvalsh(0.5 * (IA + IA.T)).min() <= 0:
            return math.inf
        return float(np.exp(-0.5 * logdet + k * c0 + 0.5 * k * k * b @ np.linalg.solve(IA, b)))

    return LogWeightLaw(float(c0 + 0.5 * np.trace(A)), float(b @ b + 0.5 * np.sum(A * A)), moment(1), moment(2))


def _linear_inputs(scheme, hessian, drift_hessian, h, gamma, kT, mass, x0):
    scheme, K, h, gamma, kT, mass = linear._inputs(scheme, hessian, h, gamma, kT, mass)
    d = K.shape[0]
    Ku = finite_array("drift_hessian", drift_hessian)
    Ku = np.diag(np.broadcast_to(Ku, (d,))) if Ku.ndim <= 1 else Ku
    if Ku.shape != (d, d):
        raise ValueError(f"drift_hessian: must be ({d}, {d}), got shape {Ku.shape}")
    if scheme.overdamped == "LM" or scheme.force_groups or \
            not any(letter.carries_weight for letter in scheme.alphabet_entries):
        raise ValueError(f"scheme: exact path-weight laws for words with O letters (no force groups) or EM, "
                         f"got scheme={scheme.word!r}")
    n = d if scheme.overdamped else 2 * d
    x0 = np.zeros(n) if x0 is None else finite_array("x0", x0).reshape(-1)
    if x0.shape != (n,):
        raise ValueError(f"x0: must have length {n}, got shape {x0.shape}")
    return scheme, K, h, gamma, kT, mass, Ku, x0


def target_moments(scheme, hessian, drift_hessian, h, n_steps, gamma=1.0, kT=1.0, mass=None, x0=None):
    r"""Exact mean and covariance after ``n_steps`` of the *target* chain of a linear drift change:
    the word with each O replaced by the exact OU flow with the extra force
    :math:`u = -K_u q` held fixed, :math:`p' = c p - b K_u q + s M^{1/2} z` (EM: the step with
    the force :math:`-(K + K_u) q`), from the fixed start ``x0``. What reweighted proposal runs
    must reproduce. Arguments as :func:`log_weight_law`; returns :class:`sdekit.linear.Moments`."""
    scheme, K, h, gamma, kT, mass, Ku, x0 = _linear_inputs(scheme, hessian, drift_hessian, h, gamma, kT, mass, x0)
    n_steps = integer("n_steps", n_steps, low=0)
    d = K.shape[0]
    if scheme.whole_step is not None:
        T, Q = linear.letter_map(scheme.whole_step, h, K + Ku, gamma, kT, mass)
    else:
        T, Q = np.eye(2 * d), np.zeros((2 * d, 2 * d))
        for e in scheme.entries:
            TL, QL = linear.letter_map(e.letter, e.fraction * h, K, gamma, kT, mass)
            if e.letter.carries_weight:   # O with the drift change: p' = c p + b u(q) + noise
                shift = np.array([ou_shift(g, e.fraction * h) for g in np.broadcast_to(gamma, (d,))])
                TL = TL.copy()
                TL[d:, :d] -= shift[:, None] * Ku
            T, Q = TL @ T, TL @ Q @ TL.T + QL
    m, C = x0.astype(float), np.zeros((x0.size, x0.size))
    for _ in range(n_steps):
        m, C = T @ m, T @ C @ T.T + Q
    return linear.Moments(m, 0.5 * (C + C.T))


__all__ = ["difference", "Difference", "ou_shift", "increment", "check", "reweight", "Reweighted",
           "effective_sample_size", "normalized_weights", "log_weight_law", "LogWeightLaw", "target_moments"]
