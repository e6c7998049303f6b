r"""Schrödinger-bridge samplers between paired endpoints (I2SB), with exact Gaussian error laws.

The bridge
----------
A reference Brownian motion :math:`dX = \sqrt{\beta(t)}\,dW` on [0, 1] conditioned on its
ends :math:`X_0 = x_0` (data) and :math:`X_1 = x_1` (the paired, e.g. degraded, sample)
has Gaussian marginals (Liu et al., I2SB, ICML 2023, Eq. 11):

.. math::

    X_t \mid x_0, x_1 \sim N\!\left(\frac{\bar\sigma_t^2}{\sigma_t^2 + \bar\sigma_t^2} x_0
    + \frac{\sigma_t^2}{\sigma_t^2 + \bar\sigma_t^2} x_1,\
    \frac{\sigma_t^2\bar\sigma_t^2}{\sigma_t^2 + \bar\sigma_t^2} I\right),\qquad
    \sigma_t^2 = \int_0^t\beta,\quad \bar\sigma_t^2 = \int_t^1\beta.

It is a Brownian bridge in the clock :math:`s = \sigma_t^2` (total :math:`S = \sigma_1^2`).
Mixed over a coupling :math:`\pi(x_0, x_1)` it has the one-time marginals of its Markovian
projection (Gyöngy 1986), whose drift is the conditional mean of the pinned one,

.. math::

    dX = -\beta(t)\,\frac{X - \hat x_0(X, t)}{\sigma_t^2}\,d\tau + \sqrt{\beta(t)}\,d\bar W,
    \qquad \hat x_0(x, t) = E[x_0 \mid X_t = x],

run in reverse time :math:`\tau = 1 - t` from :math:`x_1`: it has the bridge's marginals,
ends in the law of :math:`x_0`, and when :math:`\pi` is the static Schrödinger bridge
(entropic OT with :math:`\varepsilon = 2S`, :func:`schrodinger_coupling`) the mixture is
Markov and *is* the Schrödinger bridge (Léonard 2014; Bunne et al. 2023). :math:`\hat x_0`
is a network in practice (:class:`TorchPredictor`, I2SB's parametrization).

Samplers (from t = 1 down to t = 0 in N equal steps)
----------------------------------------------------
* :class:`Posterior` -- I2SB's DDPM-like step :math:`x_n \sim p(x_n \mid \hat x_0, x_{n+1})`
  (the Brownian bridge from :math:`\hat x_0` at 0 to :math:`x_{n+1}`, evaluated at
  :math:`t_n`); ``ot_ode=True`` (:func:`OTODE`) drops its noise (I2SB's OT-ODE, whose
  predictor is trained on the noise-free interpolant).
* :class:`EulerMaruyama` -- the bridge SDE above by Euler–Maruyama.
* :class:`Splitting` -- the bridge SDE through the letters: O is the exact flow of the
  noise piece :math:`dX = \sqrt\beta\,dW` (the O letter of :mod:`sdekit.operators` with
  zero friction, :math:`x \mathrel{+}= \sqrt{\sigma_{t_0}^2 - \sigma_{t_1}^2}\,z`; it
  carries the clock), B the drift kick
  :math:`x \mathrel{+}= \delta\,\beta(t)(\hat x_0 - x)/\sigma_t^2` (Euler, or Heun).
  Default ``"OBO"``; a kick at t = 0, where the drift is singular, is refused.

Measured with the perfect predictor (``analysis/bridge_gaussian.py``): EM and OBO are first
order in W2, OBO with a Heun kick second order, the posterior sampler :math:`h\log(1/h)`,
the OT-ODE first order in its marginal but with a deterministic, not the entropic, coupling.

Exactness harness
-----------------
For Gaussian endpoints (:class:`GaussianPair`) the joint law of :math:`(x_0, x_1, X_t)` is
Gaussian and :math:`\hat x_0` is affine (:class:`GaussianPredictor`); each sampler step is
affine in the state with additive noise, so the law of :math:`(x_0, x_1, x_{out})` follows
from :math:`m' = A m + b`, :math:`C' = A C A^T + L L^T` (:func:`exact_output_moments`,
which reads A, b, L off the sampler's own step, as :mod:`sdekit.diffusion_exact` does).
``predictor="pinned"`` uses the true :math:`x_0` (the conditional bridge): the
posterior sampler is then exact at every grid time for any N.

References
----------
G.-H. Liu, A. Vahdat, D.-A. Huang, E. A. Theodorou, W. Nie, A. Anandkumar, "I2SB:
Image-to-Image Schrödinger Bridge", ICML 2023. C. Bunne, Y.-P. Hsieh, M. Cuturi, A. Krause,
"The Schrödinger bridge between Gaussian measures has a closed form", AISTATS 2023.
H. Janati, B. Muzellec, G. Peyré, M. Cuturi, "Entropic optimal transport between unbalanced
Gaussian measures has a closed form", NeurIPS 2020. A. Mallasto, A. Gerolin, H. Q. Minh,
"Entropy-regularized 2-Wasserstein distance between Gaussian measures", Inf. Geom. 5
(2022). C. Léonard, "A survey of the Schrödinger problem and some of its connections with
optimal transport", Discrete Contin. Dyn. Syst. A 34 (2014). I. Gyöngy, "Mimicking the
one-dimensional marginal distributions of processes having an Itô differential", Probab. Th.
Rel. Fields 71 (1986).
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from . import operators as ops
from ._checks import finite_array, integer, real
from .diffusion_exact import affine_step, fit_exact_order, gaussian_kl, gaussian_w2
from .linear import Moments
from .reverse_samplers import Letters
from .schemes import Scheme
from .torch_systems import evaluate_module, module_placement

__all__ = ["I2SBSchedule", "Bridge", "GaussianPair", "GaussianPredictor", "TorchPredictor",
           "Posterior", "OTODE", "EulerMaruyama", "Splitting", "time_grid", "sample",
           "entropic_ot_cross_covariance", "schrodinger_coupling", "exact_output_moments",
           "convergence_study", "empirical_w2", "Moments"]


# ----------------------------------------------------------------------------- schedule and bridge

class I2SBSchedule:
    r"""I2SB's symmetric schedule (Liu et al. 2023, ``make_beta_schedule``): :math:`\sqrt{\beta}`
    linear from :math:`\sqrt{\beta_{min}}` at t = 0 towards :math:`\sqrt{\beta_{max}}` at t = 1,
    of which the first half is kept and mirrored onto [1/2, 1]:

    .. math::

        \beta(t) = (a + k\,u)^2,\quad u = \min(t, 1 - t),\ a = \sqrt{\beta_{min}},\
        k = \sqrt{\beta_{max}} - a;\qquad
        \sigma_t^2 = a^2 t + a k t^2 + k^2 t^3/3\ (t \le 1/2),\quad
        \sigma_t^2 = S - \sigma_{1-t}^2\ (t > 1/2).

    The peak, at t = 1/2, is :math:`((a + \sqrt{\beta_{max}})/2)^2`. The defaults are I2SB's
    (``linear_start = 1e-4``, ``beta_max = 0.3`` over 1000 steps) as rates on [0, 1].
    ``beta_min == beta_max`` is a constant schedule (:math:`\sigma_t^2 = \beta t`).
    """

    def __init__(self, beta_min=0.1, beta_max=0.3):
        self.beta_min = real("beta_min", beta_min, low=0.0, low_open=True)
        self.beta_max = real("beta_max", beta_max, low=0.0, low_open=True)
        self._a = math.sqrt(self.beta_min)
        self._k = math.sqrt(self.beta_max) - self._a
        self.total = 2.0 * self._half(0.5)

    def _half(self, t):
        a, k = self._a, self._k
        return t * (a * a + t * (a * k + t * k * k / 3.0))

    def beta(self, t):
        u = min(t, 1.0 - t)
        return (self._a + self._k * u) ** 2

    def sigma2(self, t):
        r""":math:`\sigma_t^2 = \int_0^t \beta` (0 at t = 0, exactly S at t = 1)."""
        if t <= 0.5:
            return self._half(t)
        return self.total - self._half(1.0 - t)

    def __repr__(self):
        return f"I2SBSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"


class Bridge:
    r"""The bridge of a Brownian motion :math:`dX = \sqrt{\beta}\,dW` between paired ends
    (module docstring). Also the adapter the letters' ``diffusion`` hooks call
    (:meth:`force`, :meth:`kick`, :meth:`o_letter`)."""

    name = "bridge"

    def __init__(self, schedule=None):
        self.schedule = I2SBSchedule() if schedule is None else schedule
        if not isinstance(self.schedule, I2SBSchedule):
            raise ValueError(f"schedule: must be an I2SBSchedule, got {schedule!r}")
        self.S = self.schedule.total

    def __repr__(self):
        return f"Bridge({self.schedule!r})"

    def sigma2(self, t):
        return self.schedule.sigma2(t)

    def coefficients(self, t):
        r"""(mu_x0, mu_x1, var) of :math:`X_t \mid x_0, x_1` (I2SB Eq. 11): with
        :math:`s = \sigma_t^2`, :math:`r = s/S`: :math:`(1 - r,\ r,\ s(S - s)/S)`."""
        s, S = self.sigma2(t), self.S
        return (S - s) / S, s / S, s * (S - s) / S

    def posterior(self, t_prev, t):
        r"""(mu_x0, mu_xt, var) of :math:`p(x_{t'} \mid x_0, x_t)`, :math:`t' < t` (I2SB Eq. 4):
        the Brownian bridge from :math:`x_0` at 0 to :math:`x_t`, at :math:`s' = \sigma_{t'}^2`:
        :math:`(1 - s'/s,\ s'/s,\ s'(s - s')/s)`."""
        s1, s0 = self.sigma2(t_prev), self.sigma2(t)
        return (s0 - s1) / s0, s1 / s0, s1 * (s0 - s1) / s0

    def drift(self, x, t, x0_hat):
        r"""Reverse-time drift :math:`\beta(t)\,(\hat x_0 - x)/\sigma_t^2` (t > 0)."""
        return (self.schedule.beta(t) / self.sigma2(t)) * (x0_hat - x)

    # -- what the letters' diffusion hooks call (sdekit.letters.kick / .ou)
    def force(self, u, t, x0_hat, w, lam):
        """B's force: the bridge drift at the clock time t (w, lam unused: one split only)."""
        return self.drift(u, t, x0_hat)

    def kick(self, u, force, delta):
        """B: :math:`x \\mathrel{+}= \\delta F` (``operators.kick``)."""
        return ops.kick(u, force, delta)

    def o_letter(self, u, t0, t1, delta, z, w, lam):
        r"""O: the exact flow of :math:`dX = \sqrt{\beta}\,dW` from t0 down to t1, the O letter
        with zero friction (:func:`sdekit.operators.ou_coefficients` gives c = 1,
        :math:`s = \sigma\sqrt\delta`) in the clock: :math:`\sigma^2\delta = \sigma_{t_0}^2 - \sigma_{t_1}^2`."""
        c, s = ops.ou_coefficients(0.0, self.sigma2(t0) - self.sigma2(t1), 1.0)
        return ops.ou(u, c, s, 1.0, z)


def _check_bridge(bridge):
    if not isinstance(bridge, Bridge):
        raise ValueError(f"bridge: must be a Bridge, got {bridge!r}")
    return bridge


# ----------------------------------------------------------------------------- Gaussian endpoints

def _spd(name, C, d):
    C = finite_array(name, C)
    if C.ndim == 0:
        C = float(C) * np.eye(d)
    if C.shape != (d, d):
        raise ValueError(f"{name}: must be ({d}, {d}), got shape {C.shape}")
    if not np.allclose(C, C.T) or np.linalg.eigvalsh(0.5 * (C + C.T)).min() <= 0:
        raise ValueError(f"{name}: must be symmetric positive definite, got {C.tolist()!r}")
    return 0.5 * (C + C.T)


def _sqrtm(C):
    w, V = np.linalg.eigh(C)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


def entropic_ot_cross_covariance(cov0, cov1, eps):
    r"""Cross-covariance of the entropic OT plan between :math:`N(\cdot, A)` and :math:`N(\cdot, B)`
    for the cost :math:`|x - y|^2` and regularization :math:`\varepsilon\,KL(\pi\|\alpha\otimes\beta)`
    (Janati et al. 2020, Thm 1; Mallasto et al. 2022), with :math:`\sigma^2 = \varepsilon/2`:

    .. math::

        C_\sigma = \tfrac12 A^{1/2} D_\sigma A^{-1/2} - \tfrac{\sigma^2}{2} I,\qquad
        D_\sigma = (4 A^{1/2} B A^{1/2} + \sigma^4 I)^{1/2}.

    Equivalently the plan's precision has off-diagonal block :math:`-(2/\varepsilon) I`.
    :math:`\varepsilon \to 0` gives the OT (Monge) plan, :math:`\varepsilon\to\infty` independence.
    """
    A = _spd("cov0", cov0, np.shape(cov0)[0] if np.ndim(cov0) else 1)
    B = _spd("cov1", cov1, A.shape[0])
    eps = real("eps", eps, low=0.0, low_open=True)
    s2 = 0.5 * eps
    Ah = _sqrtm(A)
    D = _sqrtm(4.0 * Ah @ B @ Ah + s2 * s2 * np.eye(len(A)))
    return 0.5 * Ah @ D @ np.linalg.inv(Ah) - 0.5 * s2 * np.eye(len(A))


def schrodinger_coupling(mean0, cov0, mean1, cov1, S):
    r"""The static Schrödinger bridge between :math:`N(m_0, A)` and :math:`N(m_1, B)` for the
    reference Brownian motion of total variance S (Bunne et al. 2023): the entropic OT
    plan with :math:`\varepsilon = 2S`, :math:`\pi = N((m_0, m_1), [[A, C], [C^T, B]])`.
    Returns its Moments (2d)."""
    m0 = finite_array("mean0", mean0, ndim=1)
    m1 = finite_array("mean1", mean1, ndim=1)
    C = entropic_ot_cross_covariance(cov0, cov1, 2.0 * real("S", S, low=0.0, low_open=True))
    A, B = _spd("cov0", cov0, len(m0)), _spd("cov1", cov1, len(m1))
    J = np.block([[A, C], [C.T, B]])
    return Moments(np.concatenate([m0, m1]), 0.5 * (J + J.T))


class GaussianPair:
    r"""Gaussian endpoints :math:`x_0 \sim N(m_0, A)`, :math:`x_1 \sim N(m_1, B)` and their coupling.

    ``coupling``: ``"schrodinger"`` (the static Schrödinger bridge for ``bridge``,
    :func:`schrodinger_coupling`; the mixture of bridges is then the dynamic SB),
    ``"independent"`` (C = 0), or a (d, d) cross-covariance :math:`C = \mathrm{Cov}(x_0, x_1)`.
    """

    def __init__(self, bridge, mean0, cov0, mean1, cov1, coupling="schrodinger"):
        self.bridge = _check_bridge(bridge)
        self.m0 = finite_array("mean0", mean0, ndim=1)
        d = self.d = len(self.m0)
        self.m1 = finite_array("mean1", mean1, ndim=1)
        if len(self.m1) != d:
            raise ValueError(f"mean1: must have length {d} (as mean0), got {len(self.m1)}")
        self.A, self.B = _spd("cov0", cov0, d), _spd("cov1", cov1, d)
        if isinstance(coupling, str):
            if coupling not in ("schrodinger", "independent"):
                raise ValueError(f"coupling: must be 'schrodinger', 'independent' or a (d, d) array, got {coupling!r}")
            self.C = (entropic_ot_cross_covariance(self.A, self.B, 2.0 * bridge.S) if coupling == "schrodinger"
                      else np.zeros((d, d)))
        else:
            self.C = finite_array("coupling", coupling)
            if self.C.shape != (d, d):
                raise ValueError(f"coupling: a cross-covariance must be ({d}, {d}), got shape {self.C.shape}")
        self.coupling = coupling if isinstance(coupling, str) else "given"
        low = np.linalg.eigvalsh(self.joint().cov).min()
        if low < -1e-12 * max(np.abs(self.A).max(), np.abs(self.B).max()):
            raise ValueError(f"coupling: the joint covariance of (x0, x1) must be positive semidefinite, "
                             f"its smallest eigenvalue is {low:.3g}")

    def joint(self):
        """Moments of :math:`(x_0, x_1)` (2d)."""
        J = np.block([[self.A, self.C], [self.C.T, self.B]])
        return Moments(np.concatenate([self.m0, self.m1]), 0.5 * (J + J.T))

    def target(self):
        """The endpoint law every sampler should reach: :math:`N(m_0, A)`."""
        return Moments(self.m0.copy(), self.A.copy())

    def state_moments(self, t, noise=True):
        r"""Moments of :math:`(x_0, x_1, X_t)` (3d), :math:`X_t = (1-r)x_0 + r x_1 + \sqrt{v}\,\xi`
        (``noise=False``: v = 0, the interpolant of I2SB's OT-ODE). The X_t block is the
        Schrödinger bridge marginal of Bunne et al. when the coupling is "schrodinger"."""
        a, b, v = self.bridge.coefficients(t)
        d, I = self.d, np.eye(self.d)
        M = np.hstack([a * I, b * I])
        m, J = self.joint()
        full = np.vstack([np.eye(2 * d), M])
        C = full @ J @ full.T
        C[2 * d:, 2 * d:] += (v if noise else 0.0) * I
        return Moments(full @ m, 0.5 * (C + C.T))


class GaussianPredictor:
    r"""The perfect predictor :math:`\hat x_0(x, t) = E[x_0 \mid X_t = x]` for Gaussian endpoints:
    :math:`m_0 + \mathrm{Cov}(x_0, X_t)\,\mathrm{Var}(X_t)^{-1}(x - m_t)`, affine in x.
    ``noise=False``: under the noise-free interpolant (what I2SB's OT-ODE is trained on).
    ``predictor(x, t)`` works row-wise; :meth:`affine` gives (P, c) with x0_hat = x P^T + c."""

    def __init__(self, pair, noise=True):
        if not isinstance(pair, GaussianPair):
            raise ValueError(f"pair: must be a GaussianPair, got {pair!r}")
        self.pair, self.noise, self._cache = pair, bool(noise), {}

    def affine(self, t):
        if t not in self._cache:
            d = self.pair.d
            m, C = self.pair.state_moments(t, self.noise)
            K = np.linalg.solve(C[2 * d:, 2 * d:], C[2 * d:, :d]).T      # Cov(x0, Xt) Var(Xt)^-1
            self._cache[t] = (K, m[:d] - K @ m[2 * d:])
        return self._cache[t]

    def __call__(self, x, t):
        P, c = self.affine(t)
        return x @ P.T + c


class TorchPredictor:
    r"""A torch module as the predictor, in I2SB's parametrization: ``model(x, t)`` predicts
    the label :math:`(x_t - x_0)/\sigma_t` and :math:`\hat x_0 = x - \sigma_t\,\text{model}(x, t)`
    (I2SB ``compute_pred_x0``). Evaluated in batches under ``no_grad``
    (:func:`sdekit.torch_systems.evaluate_module`)."""

    def __init__(self, model, bridge, batch_size=65536, dtype=None, device=None):
        self.model, self.bridge = model, _check_bridge(bridge)
        self.batch_size = integer("batch_size", batch_size, low=1)
        self.dtype, self.device = module_placement(model, dtype, device)
        self.evaluations = 0

    def __call__(self, x, t):
        out = evaluate_module(self.model, x, t, batch_size=self.batch_size, dtype=self.dtype,
                              device=self.device, name="model")
        self.evaluations += 1
        return x - math.sqrt(self.bridge.sigma2(t)) * out


# ----------------------------------------------------------------------------- samplers

class _Sampler:
    """``step(x, t, t_prev, z, predict, cache=None) -> x``: one step from t down to t_prev < t."""

    evals_per_step = 1

    def __init__(self, bridge):
        self.sde = self.bridge = _check_bridge(bridge)

    def __repr__(self):
        return self.label

    def n_noise(self, d):
        return d

    @staticmethod
    def _predict(predict, x, t, cache):
        if cache is not None:
            cache["evals"] = cache.get("evals", 0) + 1
        return predict(x, t)


class Posterior(_Sampler):
    r"""I2SB's posterior step (Liu et al. 2023, Eq. 4 and ``p_posterior``):

    .. math::

        x_n = \left(1 - \tfrac{s_n}{s_{n+1}}\right)\hat x_0(x_{n+1}, t_{n+1})
        + \tfrac{s_n}{s_{n+1}}\,x_{n+1} + \sqrt{\tfrac{s_n(s_{n+1} - s_n)}{s_{n+1}}}\,z_n,
        \qquad s_n = \sigma_{t_n}^2,

    the exact flow of the pinned bridge SDE with :math:`\hat x_0` frozen over the step
    (an exponential integrator). Exact for any N given the true :math:`x_0`; with
    :math:`E[x_0 \mid x_{n+1}]` it drops :math:`(1 - s_n/s_{n+1})^2\mathrm{Cov}(x_0 \mid x_{n+1})`
    from each step's variance. ``ot_ode=True``: no noise (I2SB's OT-ODE)."""

    def __init__(self, bridge, ot_ode=False):
        super().__init__(bridge)
        self.ot_ode = bool(ot_ode)
        self.label = "OT-ODE" if self.ot_ode else "posterior"

    def n_noise(self, d):
        return 0 if self.ot_ode else d

    def step(self, x, t, t_prev, z, predict, cache=None):
        x0 = self._predict(predict, x, t, cache)
        a, b, v = self.bridge.posterior(t_prev, t)
        out = a * x0 + b * x
        return out if self.ot_ode else out + math.sqrt(v) * z


def OTODE(bridge):
    """I2SB's OT-ODE sampler: :class:`Posterior` without noise (use a noise-free predictor)."""
    return Posterior(bridge, ot_ode=True)


class EulerMaruyama(_Sampler):
    r"""Euler–Maruyama on the bridge SDE:
    :math:`x_n = x_{n+1} + h\,\beta(t_{n+1})(\hat x_0 - x_{n+1})/s_{n+1} + \sqrt{\beta(t_{n+1}) h}\,z_n`."""

    label = "EM"

    def step(self, x, t, t_prev, z, predict, cache=None):
        h, beta = t - t_prev, self.bridge.schedule.beta(t)
        x0 = self._predict(predict, x, t, cache)
        return x + h * self.bridge.drift(x, t, x0) + math.sqrt(beta * h) * z


class Splitting(_Sampler):
    r"""The bridge SDE split into the exact noise letter O (it carries the clock) and the
    drift kick B, composed by a :class:`~sdekit.schemes.Scheme` over {B, O} through the
    letters' ``diffusion`` hooks (:mod:`sdekit.letters.kick`, :mod:`sdekit.letters.ou`).

    ``"OBO"`` (default): noise over [t_{n+1}, t_mid], kick(h) at :math:`t_{mid}` with
    :math:`F = \beta(t_{mid})(\hat x_0 - x)/\sigma^2_{t_{mid}}`, noise over [t_mid, t_n].
    A kick lands at the clock the O letters have reached; a word whose kick lands on t = 0
    (``"BOB"``) is refused (the drift is singular there). ``kick="heun"``: Heun's rule.
    """

    def __init__(self, bridge, scheme="OBO", kick="euler"):
        super().__init__(bridge)
        if kick not in ("euler", "heun"):
            raise ValueError(f"kick: must be 'euler' or 'heun', got {kick!r}")
        self.kick, self.w, self.lam = kick, 1.0, 0.0
        self.scheme = scheme if isinstance(scheme, Scheme) else Scheme(scheme)
        letters = [e.letter for e in self.scheme.entries]
        if self.scheme.whole_step or not all(l.supports("diffusion") for l in letters) \
                or not any(l.diffusion_clock for l in letters):
            raise ValueError(f"scheme: a bridge splitting is a word over B (drift kick) and O (noise, "
                             f"carries the clock) with at least one O, got {self.scheme.word!r}")
        for (letter, _, t0, _) in self.substep_times(1.0, 1.0):
            if letter == "B" and t0 <= 0.0:
                raise ValueError(f"scheme: {self.scheme.word!r} kicks at t = 0, where the bridge drift "
                                 f"beta (x0_hat - x) / sigma_t^2 is singular; end the word with an O")
        self.n_kicks = sum(1 for l in letters if l.needs_force)
        self.evals_per_step = self.n_kicks * (2 if kick == "heun" else 1)
        self.label = self.scheme.word + ("-heun" if kick == "heun" else "")

    def substep_times(self, t, h):
        """[(letter, fraction, t_start, t_end)]: an O runs from the clock to clock - f h (the last
        one exactly to t - h); a B is at the clock."""
        out, clock, done = [], t, 0.0
        n_clock = sum(1 for e in self.scheme.entries if e.letter.diffusion_clock)
        seen = 0
        for e in self.scheme.entries:
            if e.letter.diffusion_clock:
                seen, done = seen + 1, done + e.fraction
                end = t - h if seen == n_clock else t - done * h
                out.append((e.letter.name, e.fraction, clock, end))
                clock = end
            else:
                out.append((e.letter.name, e.fraction, clock, clock))
        return out

    def n_noise(self, d):
        return d * sum(e.letter.normals for e in self.scheme.entries)

    def step(self, x, t, t_prev, z, predict, cache=None):
        h = t - t_prev
        width = z.shape[-1] // max(1, sum(e.letter.normals for e in self.scheme.entries))
        ctx = Letters(self, z, width, lambda u, tt: self._predict(predict, u, tt, cache), None)
        for e, (_, _, t0, t1) in zip(self.scheme.entries, self.substep_times(t, h)):
            x = e.letter.diffusion(ctx, x, e.fraction * h, t0, t1)
        return x


def _check_sampler(sampler):
    if not isinstance(sampler, _Sampler):
        raise ValueError(f"sampler: must be a bridges Posterior, EulerMaruyama or Splitting, got {sampler!r}")
    return sampler


# ----------------------------------------------------------------------------- drivers

def time_grid(n_steps):
    """The N + 1 times :math:`t_n = 1 - n/N` from 1 down to exactly 0."""
    n_steps = integer("n_steps", n_steps, low=1)
    ts = np.linspace(1.0, 0.0, n_steps + 1)
    ts[0], ts[-1] = 1.0, 0.0
    return ts


@dataclass
class BridgeResult:
    """Output of :func:`sample`: the samples x (n, d), predictor evaluations and wall time."""
    x: np.ndarray
    evaluations: int
    wall: float
    ts: np.ndarray = field(repr=False)


def sample(sampler, predict, x1, n_steps, *, seed=0):
    r"""Run ``sampler`` from the paired samples ``x1`` (n, d) at t = 1 down to t = 0.

    ``predict(x, t)`` gives :math:`\hat x_0` row-wise (:class:`GaussianPredictor`,
    :class:`TorchPredictor` or any callable). Noise: one numpy Generator from ``seed``, per
    step an (n, sampler.n_noise(d)) block of standard normals.
    """
    sampler = _check_sampler(sampler)
    x = finite_array("x1", x1, ndim=2)
    ts, rng = time_grid(n_steps), np.random.default_rng(seed)
    nz, cache, start = sampler.n_noise(x.shape[1]), {}, time.perf_counter()
    for k in range(len(ts) - 1):
        z = rng.standard_normal((len(x), nz)) if nz else None
        x = sampler.step(x, ts[k], ts[k + 1], z, predict, cache)
        if not np.all(np.isfinite(x)):
            raise FloatingPointError(f"sample: non-finite state at step {k + 1} (t = {ts[k + 1]:.6g}) "
                                     f"with {sampler.label}")
    return BridgeResult(x=x, evaluations=cache.get("evals", 0), wall=time.perf_counter() - start, ts=ts)


def exact_output_moments(sampler, pair, n_steps, *, predictor="markov", return_path=False):
    r"""Exact law of :math:`(x_0, x_1, x_{out})` (3d) for Gaussian endpoints (no sampling).

    The state is :math:`u = (x_0, x_1, x)` with :math:`x = x_1` at t = 1; each step is affine,
    :math:`u' = A_k u + b_k + L_k z`, read off the sampler's own ``step`` on the probe rows
    (0, 0), (e_i, 0), (0, e_j) of (state, noise); :math:`m' = A m + b`, :math:`C' = A C A^T + L L^T`.

    Parameters
    ----------
    sampler : Posterior, EulerMaruyama or Splitting
    pair : GaussianPair
    n_steps : int
    predictor : {"markov", "pinned"}
        :math:`E[x_0 \mid X_t]` (:class:`GaussianPredictor`; the noise-free one for the
        OT-ODE) or the true :math:`x_0` carried in the state (the conditional bridge).
    return_path : bool
        Also return the moments after each step (at :math:`t_{N-1}, \dots, t_0`).
    """
    sampler = _check_sampler(sampler)
    if not isinstance(pair, GaussianPair):
        raise ValueError(f"pair: must be a GaussianPair, got {pair!r}")
    if repr(pair.bridge) != repr(sampler.bridge):
        raise ValueError(f"pair: its bridge {pair.bridge!r} is not the sampler's {sampler.bridge!r}")
    if predictor not in ("markov", "pinned"):
        raise ValueError(f"predictor: must be 'markov' or 'pinned', got {predictor!r}")
    d = pair.d
    ode = isinstance(sampler, Posterior) and sampler.ot_ode
    exact = GaussianPredictor(pair, noise=not ode) if predictor == "markov" else None
    nz, D = sampler.n_noise(d), 3 * d
    U = np.zeros((1 + D + nz, D))
    U[1:1 + D] = np.eye(D)
    Z = np.zeros((1 + D + nz, nz))
    Z[1 + D:] = np.eye(nz)
    predict = exact if exact is not None else (lambda x, t: U[:, :d])
    m, J = pair.joint()
    m = np.concatenate([m, m[d:]])
    E = np.vstack([np.eye(2 * d), np.hstack([np.zeros((d, d)), np.eye(d)])])
    C = E @ J @ E.T
    ts, path = time_grid(n_steps), []
    for k in range(len(ts) - 1):
        out = U.copy()
        out[:, 2 * d:] = sampler.step(U[:, 2 * d:], ts[k], ts[k + 1], Z if nz else None, predict)
        m, C = affine_step(out, m, C, D)
        if return_path:
            path.append(Moments(m, C))
    return (Moments(m, C), path) if return_path else Moments(m, C)


def convergence_study(sampler, pair, steps, *, predictor="markov", fit_from=None):
    r"""Exact errors of a sampler's output against N, for Gaussian endpoints.

    For each N: W2 and KL of the output :math:`x_{out}` to the target :math:`N(m_0, A)`, and
    W2 of the coupling :math:`(x_{out}, x_1)` to the pair's coupling (for the "schrodinger"
    pair: the closed-form Schrödinger bridge, Bunne et al. 2023). Fitted order (95% CI) of
    W2 over the steps >= ``fit_from`` where W2 > 1e-6 (resolved; mask ``fitted``), by
    :func:`sdekit.diffusion_exact.fit_exact_order`.

    Returns
    -------
    dict with arrays ``steps, h, w2, kl, w2_coupling, mean_err, fitted`` and ``order, ci``
    (NaN with fewer than 3 resolved errors: an exact sampler has no order).
    """
    d = pair.d
    target, coupling = pair.target(), pair.joint()
    rows = {k: [] for k in ("w2", "kl", "w2_coupling", "mean_err")}
    for n in steps:
        m, C = exact_output_moments(sampler, pair, n, predictor=predictor)
        out = Moments(m[2 * d:], C[2 * d:, 2 * d:])
        idx = np.r_[2 * d:3 * d, d:2 * d]
        rows["w2"].append(gaussian_w2(out, target))
        rows["kl"].append(gaussian_kl(out, target))
        rows["w2_coupling"].append(gaussian_w2(Moments(m[idx], C[np.ix_(idx, idx)]), coupling))
        rows["mean_err"].append(float(np.linalg.norm(out.mean - target.mean)))
    res = {k: np.array(v) for k, v in rows.items()}
    res["steps"] = np.array(steps)
    res["h"] = 1.0 / res["steps"]
    # W2 is the square root of a cancelling difference: resolved to about 1e-8, so fit above 1e-6
    use = (res["steps"] >= (fit_from or 0)) & (res["w2"] > 1e-6)
    res["fitted"] = use
    if use.sum() >= 3:
        res["order"], res["ci"] = fit_exact_order(res["h"][use], res["w2"][use])
    else:   # an exact sampler (W2 at its rounding floor): no order to fit
        res["order"], res["ci"] = math.nan, (math.nan, math.nan)
    res["label"], res["evals_per_step"] = sampler.label, sampler.evals_per_step
    return res


# ----------------------------------------------------------------------------- empirical distance

def empirical_w2(a, b):
    r"""Exact Wasserstein-2 distance between two equal-size point clouds (uniform weights):
    the optimal plan is a permutation (Birkhoff), found by
    :func:`scipy.optimize.linear_sum_assignment` on :math:`|a_i - b_j|^2`:
    :math:`W_2^2 = \min_\sigma \frac1n\sum_i |a_i - b_{\sigma(i)}|^2`. Equals POT's
    ``ot.emd2`` on uniform weights (tested when POT is installed)."""
    a = finite_array("a", a, ndim=2)
    b = finite_array("b", b, ndim=2)
    if a.shape != b.shape:
        raise ValueError(f"b: must have the shape of a {a.shape}, got {b.shape}")
    M = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    r, c = optimize.linear_sum_assignment(M)
    return math.sqrt(M[r, c].mean())
