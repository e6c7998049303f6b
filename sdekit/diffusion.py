r"""Diffusion-model sampling through the splitting core: time-dependent, learned-drift SDEs.

A score-based generative model (Song et al., ICLR 2021) noises data with a forward SDE

.. math::

    du = f(u, t)\,dt + G(t)\,dW, \qquad t \in [0, T],

and generates by integrating, from :math:`t = T` down to :math:`t = \epsilon`, the
reverse-time SDE or the probability-flow ODE, in which the score
:math:`\nabla \log p_t` of the forward marginals appears (a network in practice):

.. math::

    du = \left[f - G G^T \nabla\log p_t\right] dt + G\,d\bar W \quad(\text{reverse SDE}),\qquad
    \frac{du}{dt} = f - \tfrac12 G G^T \nabla\log p_t \quad(\text{probability flow}).

Written in the reverse time :math:`\tau = T - t` (so that every sampler runs forward in
:math:`\tau` and a step of length h takes t to t - h), the reverse drift is
:math:`-f + w\,GG^T\nabla\log p_t` with :math:`w = 1` (SDE) or :math:`w = 1/2` (ODE).

Forward processes
-----------------
* :class:`VPSDE` -- variance preserving (Song et al. 2021, Eq. 11):
  :math:`dx = -\tfrac12\beta(t) x\,dt + \sqrt{\beta(t)}\,dW`, linear
  :math:`\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})`, 0.1 and 20 by default.
* :class:`CLD` -- critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis,
  ICLR 2022): position x and velocity v,
  :math:`dx = \beta M^{-1} v\,dt`,
  :math:`dv = -\beta x\,dt - \Gamma\beta M^{-1} v\,dt + \sqrt{2\Gamma\beta}\,dW`,
  critical damping :math:`\Gamma = 2\sqrt{M}`; only the velocity score
  :math:`\nabla_v \log p_t` is needed.

Both have drift and squared diffusion proportional to :math:`\beta(t)`, so in the
*intrinsic time* :math:`b(t) = \int_0^t \beta` they are autonomous linear SDEs: the exact
transition over [t0, t1] is the autonomous one run for
:math:`\Delta b = b(t_1) - b(t_0)` (closed form for VP, Van Loan's block exponential for
CLD's 2x2 blocks, Van Loan, IEEE TAC 23, 1978).

Samplers (each integrates from t = T to t = eps in N equal steps)
------------------------------------------------------------------
* :class:`EulerMaruyama` -- the reverse SDE by Euler–Maruyama (Song et al. 2021);
  :class:`ProbabilityFlow` with ``method="euler"`` or ``"heun"`` -- the ODE.
* :class:`Splitting` -- the splitting through the core: the reverse SDE is split into
  a *linear* piece, solved exactly over each sub-step by the O letter with
  time-integrated coefficients (:func:`sdekit.operators.ou_coefficients` for VP; the
  2x2 exact flow for CLD), and a *score kick*
  :math:`u_v \mathrel{+}= \delta\, w\beta(t)\,(s(u, t) + \lambda\,\text{prior score})`,
  composed by a :class:`~sdekit.schemes.Scheme` over {B, O}: ``"BOB"`` =
  kick(h/2) OU(h) kick(h/2) (two score evaluations per step: unlike Langevin's B, the
  kick moves the variable the score depends on, so there is no first-same-as-last
  reuse), ``"OBO"`` = OU(h/2) kick(h) OU(h/2) (one evaluation), which on CLD is Dockhorn et al.'s symmetric splitting CLD
  sampler (SSCS, their Alg. 1). ``split="prior"`` (default) subtracts the prior's
  score from the kick and puts it into the O letter (the O is then the forward OU
  run backwards in time, a contraction; for VP with N(0, I) data the kick vanishes and
  the sampler is exact); ``split="drift"`` keeps the whole score in the kick (the O then
  has negative friction, :math:`c = e^{+\beta\delta/2}`).
* :class:`PredictorCorrector` -- Song et al.'s PC sampler: Langevin corrector steps at
  t_n, then an Euler–Maruyama predictor step (VP).

Time-dependent letters: how sub-step times are assigned
-------------------------------------------------------
The time t is treated as one more state variable, :math:`dt/d\tau = -1`, and it is
*carried by the O letters*: an O with fraction f run when the clock reads t covers
[t - f h, t] and advances the clock to t - f h; a B (kick) is a frozen-time piece and
is evaluated at the clock's current value. So in ``"BOB"`` the kicks are at
:math:`t_n` and :math:`t_{n+1}`, in ``"OBO"`` the kick is at :math:`t_n - h/2`, and for
a general list of fractions the kick after O fractions :math:`f_1, \dots, f_j` is at
:math:`t_n - h\sum_i f_i`. Because this is an ordinary splitting of the autonomous
system (u, t), symmetric words stay symmetric. The O letter over [t1, t0] is the
time-independent letter with the step-averaged
:math:`\bar\beta = (b(t_0) - b(t_1))/(t_0 - t_1)` -- exact, because the linear piece is
a time change of an autonomous OU -- and for a linear schedule
:math:`\bar\beta = \beta((t_0 + t_1)/2)` exactly, so with a constant schedule the letter
is *bitwise* the time-independent one: ``ou_coefficients(-beta/2, h, sqrt(beta))``.

Order. With exact sub-flows a symmetric splitting has weak order 2. Here the kick
solves :math:`du_v = \delta\,w\beta\,r(u, t)` by one Euler step (the residual score r
depends on the variables the kick moves), which leaves an :math:`O(h^2)` local error,
so the splitting is *first order* in general -- with an error constant proportional
to the derivative of the residual score (zero for VP on N(0, I) data). The exactness
harness (:func:`exact_output_moments`) measures this: see ``analysis/diffusion_gaussian.py``.

Exactness harness
-----------------
For Gaussian data :math:`N(\mu_0, \Sigma_0)` every forward marginal is Gaussian and its
score is affine in u (:class:`GaussianScore`). Every sampler here is then an affine map
with additive Gaussian noise, :math:`u_{k+1} = A_k u_k + b_k + L_k z_k`, and the law of
its output is Gaussian with :math:`m_{k+1} = A_k m_k + b_k`,
:math:`C_{k+1} = A_k C_k A_k^T + L_k L_k^T`. :func:`exact_output_moments` obtains
:math:`A_k, b_k, L_k` by *probing the sampler's own step* on the rows
:math:`(0, 0), (e_i, 0), (0, e_j)` of (state, noise) -- so the recursion and the sampler
share one copy of the arithmetic, and a broken letter breaks both.

References
----------
Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon and B. Poole,
"Score-based generative modeling through stochastic differential equations",
ICLR 2021. T. Dockhorn, A. Vahdat and K. Kreis, "Score-based generative modeling with
critically-damped Langevin diffusion", ICLR 2022. P. Vincent, "A connection between
score matching and denoising autoencoders", Neural Comput. 23 (2011) (denoising score
matching). T. Karras, M. Aittala, T. Aila, S. Laine, "Elucidating the design space of
diffusion-based generative models", NeurIPS 2022 (Heun's method for the ODE).
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg

from . import operators as ops
from ._checks import finite_array, integer, real
from .fits import fit_order
from .schemes import Scheme
from .systems import evaluate_module, module_placement

from .linear import Moments

__all__ = ["LinearSchedule", "VPSDE", "CLD", "GaussianScore", "TorchScore",
           "EulerMaruyama", "ProbabilityFlow", "Splitting", "PredictorCorrector", "SSCS",
           "time_grid", "sample", "exact_output_moments", "target_moments",
           "gaussian_kl", "gaussian_w2", "covariance_error", "convergence_study", "fit_exact_order",
           "Moments"]


# ----------------------------------------------------------------------------- schedule

class LinearSchedule:
    r"""Linear noise schedule :math:`\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})`.

    Intrinsic time :math:`b(t) = \int_0^t \beta = \beta_{min} t + (\beta_{max} - \beta_{min}) t^2/2`.
    ``beta_min == beta_max`` gives a constant schedule.
    """

    def __init__(self, beta_min=0.1, beta_max=20.0):
        self.beta_min = real("beta_min", beta_min, low=0.0, low_open=True)
        self.beta_max = real("beta_max", beta_max, low=0.0, low_open=True)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t0, t1):
        r""":math:`\int_{t_0}^{t_1}\beta = (t_1 - t_0)\,\bar\beta`."""
        return (t1 - t0) * self.mean(t0, t1)

    def mean(self, t0, t1):
        r"""Average of :math:`\beta` over [t0, t1]: :math:`\beta((t_0 + t_1)/2)`, exact for a
        linear schedule (and bitwise :math:`\beta_{min}` for a constant one)."""
        return self.beta_min + (0.5 * (t0 + t1)) * (self.beta_max - self.beta_min)

    def __repr__(self):
        return f"LinearSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"


def _blocks(phi, d):
    """kron(phi, I_d): a (k, k) per-dimension block acting on u = (x, v) of length k d."""
    return np.kron(np.asarray(phi, dtype=float), np.eye(d))


def _expm2(A):
    r"""Exponential of a real 2x2 matrix in closed form (Putzer / Cayley–Hamilton):
    :math:`e^A = e^{\tau/2}[f_1(\Delta) I + f_2(\Delta)(A - \tfrac\tau2 I)]`, :math:`\tau = \mathrm{tr} A`,
    :math:`\Delta = \tau^2/4 - \det A`, :math:`f_1 = \cosh\sqrt\Delta`,
    :math:`f_2 = \sinh\sqrt\Delta/\sqrt\Delta` (cos/sin for :math:`\Delta < 0`; a series near
    :math:`\Delta = 0`, the critically damped case)."""
    tau = A[0, 0] + A[1, 1]
    disc = 0.25 * tau * tau - (A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0])
    if abs(disc) < 1e-3:
        f1 = 1.0 + disc / 2 * (1.0 + disc / 12 * (1.0 + disc / 30 * (1.0 + disc / 56)))
        f2 = 1.0 + disc / 6 * (1.0 + disc / 20 * (1.0 + disc / 42 * (1.0 + disc / 72)))
    elif disc > 0:
        r = math.sqrt(disc)
        f1, f2 = math.cosh(r), math.sinh(r) / r
    else:
        r = math.sqrt(-disc)
        f1, f2 = math.cos(r), math.sin(r) / r
    half = 0.5 * tau
    return math.exp(half) * (f1 * np.eye(2) + f2 * (A - half * np.eye(2)))


_LYAP = {}


def _van_loan(F, GG, b):
    r"""Exact transition of :math:`du = F u\,db + G\,dW` (2x2) over intrinsic time b:
    :math:`\Phi = e^{Fb}` (:func:`_expm2`) and
    :math:`Q = \int_0^b e^{Fs} GG^T e^{F^Ts} ds = \Sigma - \Phi\Sigma\Phi^T`, where
    :math:`F\Sigma + \Sigma F^T + GG^T = 0` (differentiate in b). Equal, to rounding, to
    Van Loan's block exponential (Van Loan 1978), and much cheaper for 2x2 blocks."""
    if not np.any(GG):
        return _expm2(F * b), np.zeros((2, 2))
    key = (F.tobytes(), GG.tobytes())
    if key not in _LYAP:
        _LYAP[key] = linalg.solve_continuous_lyapunov(F, -GG)
    Sigma = _LYAP[key]
    Phi = _expm2(F * b)
    Q = Sigma - Phi @ Sigma @ Phi.T
    return Phi, 0.5 * (Q + Q.T)


def _van_loan_expm(F, GG, b):
    """Van Loan's block exponential (reference for :func:`_van_loan` in the tests)."""
    k = F.shape[0]
    E = linalg.expm(np.block([[-F, GG], [np.zeros((k, k)), F.T]]) * b)
    Phi = E[k:, k:].T
    Q = Phi @ E[:k, k:]
    return Phi, 0.5 * (Q + Q.T)


# ----------------------------------------------------------------------------- forward SDEs

class VPSDE:
    r"""Variance-preserving SDE (Song et al., ICLR 2021, Eq. 11).

    .. math::

        dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dW,\qquad
        x_t \mid x_0 \sim N\!\left(\alpha_t x_0,\ (1 - \alpha_t^2) I\right),\quad
        \alpha_t = e^{-b(t)/2},\ b(t) = \int_0^t\beta.

    Prior N(0, I). State u = x (k = 1 block per data dimension); the score is
    :math:`\nabla_x\log p_t`.
    """

    name = "VP"
    k = 1

    def __init__(self, beta_min=0.1, beta_max=20.0, T=1.0):
        self.schedule = LinearSchedule(beta_min, beta_max)
        self.T = real("T", T, low=0.0, low_open=True)

    def __repr__(self):
        return f"VPSDE(beta_min={self.schedule.beta_min}, beta_max={self.schedule.beta_max}, T={self.T})"

    # -- laws
    def transition_blocks(self, t0, t1):
        r"""(phi, q) per dimension of :math:`x_{t_1} \mid x_{t_0}`: :math:`\phi = e^{-\Delta b/2}`,
        :math:`q = 1 - e^{-\Delta b}`."""
        db = self.schedule.integral(t0, t1)
        return np.array([[math.exp(-0.5 * db)]]), np.array([[-math.expm1(-db)]])

    def initial_law(self, data_mean, data_cov):
        return Moments(np.array(data_mean, dtype=float), np.array(data_cov, dtype=float))

    def prior(self, d):
        return Moments(np.zeros(d), np.eye(d))

    def data_block(self, d):
        return slice(0, d)

    def sigma(self, t):
        r"""Noise level :math:`\sqrt{1 - e^{-b(t)}}` of :math:`x_t \mid x_0`."""
        return math.sqrt(-math.expm1(-self.schedule.integral(0.0, t)))

    # -- reverse time (tau = T - t), per unit tau
    def reverse_drift(self, u, t, s, w=1.0):
        r""":math:`\tfrac12\beta x + w\beta s` (w = 1 reverse SDE, 1/2 probability flow)."""
        beta = self.schedule.beta(t)
        return (0.5 * beta) * u + (w * beta) * s

    def add_noise(self, u, t, h, z):
        """Euler–Maruyama noise :math:`\\sqrt{\\beta(t) h}\\,z` on every coordinate."""
        return u + math.sqrt(self.schedule.beta(t) * h) * z

    def n_noise(self, d):
        return d

    # -- the letters of the splitting
    def o_noise(self, d):
        return d

    def o_letter(self, u, t0, t1, delta, z, w, lam):
        r"""Exact flow of the linear piece :math:`dx = -G\beta(t) x\,d\tau + \sqrt{\beta(t)}\,dW`
        from t0 down to t1 = t0 - delta, :math:`G = -(1/2 - w\lambda)`: the O letter of
        :mod:`sdekit.operators` with friction :math:`G\bar\beta`, noise
        :math:`\sqrt{\bar\beta}` (0 for the ODE), :math:`\bar\beta` the mean of
        :math:`\beta` over [t1, t0]."""
        beta = self.schedule.mean(t1, t0)
        sigma = np.sqrt(beta) if w == 1.0 else 0.0
        c, s = ops.ou_coefficients(-(0.5 - w * lam) * beta, delta, sigma)
        return ops.ou(u, c, s, 1.0, z if w == 1.0 else 0.0)

    def force(self, u, t, s, w, lam):
        r"""The kick's force :math:`w\beta(t)\,(s + \lambda x)` on x."""
        beta = self.schedule.beta(t)
        return (w * beta) * (s + u) if lam else (w * beta) * s

    def kick(self, u, force, delta):
        r"""B: :math:`x \mathrel{+}= \delta\,F` (``operators.kick``)."""
        return ops.kick(u, force, delta)


class CLD:
    r"""Critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis, ICLR 2022).

    .. math::

        \begin{pmatrix} dx \\ dv \end{pmatrix} =
        \beta(t)\begin{pmatrix} 0 & M^{-1} \\ -1 & -\Gamma M^{-1}\end{pmatrix}
        \begin{pmatrix} x \\ v \end{pmatrix} dt
        + \begin{pmatrix} 0 \\ \sqrt{2\Gamma\beta(t)} \end{pmatrix} dW,
        \qquad \Gamma = 2\sqrt{M}\ \text{(critical damping)}.

    This is sdekit's underdamped Langevin (K = 1, mass M, friction :math:`\Gamma/M`,
    kT = 1) in intrinsic time b(t). The stationary (prior) law is
    :math:`N(0, I) \otimes N(0, M I)`; data start with :math:`v_0 \sim N(0, \gamma M I)`.
    Defaults follow the paper: M = 0.25 (:math:`M^{-1} = 4`), :math:`\Gamma = 1`,
    :math:`\gamma = 0.04`, constant :math:`\beta = 4` (``beta_min = beta_max = 4``), T = 1.
    State u = (x, v) of length 2d (k = 2 blocks per data dimension); the score is
    :math:`\nabla_v \log p_t` (length d).
    """

    name = "CLD"
    k = 2

    def __init__(self, beta_min=4.0, beta_max=4.0, mass=0.25, Gamma=None, v0_scale=0.04, T=1.0):
        self.schedule = LinearSchedule(beta_min, beta_max)
        self.mass = real("mass", mass, low=0.0, low_open=True)
        self.Gamma = 2.0 * math.sqrt(self.mass) if Gamma is None else real("Gamma", Gamma, low=0.0, low_open=True)
        self.v0_scale = real("v0_scale", v0_scale, low=0.0)
        self.T = real("T", T, low=0.0, low_open=True)
        M, G = self.mass, self.Gamma
        self.F = np.array([[0.0, 1.0 / M], [-1.0, -G / M]])
        self.GG = np.array([[0.0, 0.0], [0.0, 2.0 * G]])
        self._cache = {}

    def __repr__(self):
        return (f"CLD(beta_min={self.schedule.beta_min}, beta_max={self.schedule.beta_max}, "
                f"mass={self.mass}, Gamma={self.Gamma}, v0_scale={self.v0_scale}, T={self.T})")

    def transition_blocks(self, t0, t1):
        """(Phi, Q) 2x2 per dimension of :math:`u_{t_1} \\mid u_{t_0}` (Van Loan)."""
        return _van_loan(self.F, self.GG, self.schedule.integral(t0, t1))

    def initial_law(self, data_mean, data_cov):
        d = len(data_mean)
        return Moments(np.concatenate([data_mean, np.zeros(d)]),
                       linalg.block_diag(data_cov, self.v0_scale * self.mass * np.eye(d)))

    def prior(self, d):
        return Moments(np.zeros(2 * d), linalg.block_diag(np.eye(d), self.mass * np.eye(d)))

    def data_block(self, d):
        return slice(0, d)

    def sigma(self, t):
        """Noise level of x_t | x_0 (square root of the x-x entry of Q)."""
        return math.sqrt(self.transition_blocks(0.0, t)[1][0, 0])

    def reverse_drift(self, u, t, s, w=1.0):
        r""":math:`dx = -\beta M^{-1} v`, :math:`dv = \beta(x + \Gamma M^{-1} v) + 2w\Gamma\beta s`."""
        d = u.shape[-1] // 2
        x, v = u[..., :d], u[..., d:]
        beta = self.schedule.beta(t)
        dx = (-beta / self.mass) * v
        dv = beta * x + (beta * self.Gamma / self.mass) * v + (2.0 * w * self.Gamma * beta) * s
        return _cat(dx, dv)

    def add_noise(self, u, t, h, z):
        """Noise :math:`\\sqrt{2\\Gamma\\beta(t) h}\\,z` on v only."""
        d = u.shape[-1] // 2
        return _cat(u[..., :d], u[..., d:] + math.sqrt(2.0 * self.Gamma * self.schedule.beta(t) * h) * z)

    def n_noise(self, d):
        return d

    def o_noise(self, d):
        return 2 * d

    def o_blocks(self, t0, t1, delta, w, lam):
        r"""Exact flow of the linear piece from t0 down to t1: :math:`du = \beta(t) F_r u\,d\tau + \ldots`,
        :math:`F_r = [[0, -M^{-1}], [1, (1 - 2w\lambda)\Gamma M^{-1}]]`, diffusion
        :math:`2\Gamma` on v for the SDE (0 for the ODE); returns (Phi, chol(Q))."""
        key = (t0, t1, delta, w, lam)
        if key not in self._cache:
            M, G = self.mass, self.Gamma
            Fr = np.array([[0.0, -1.0 / M], [1.0, (1.0 - 2.0 * w * lam) * G / M]])
            GG = self.GG if w == 1.0 else np.zeros((2, 2))
            Phi, Q = _van_loan(Fr, GG, self.schedule.mean(t1, t0) * delta)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = (Phi, _chol2(Q))
        return self._cache[key]

    def o_letter(self, u, t0, t1, delta, z, w, lam):
        """O: u <- Phi u + chol(Q) z, per dimension (z has 2d columns: x-noise, v-noise)."""
        Phi, L = self.o_blocks(t0, t1, delta, w, lam)
        (p11, p12), (p21, p22) = Phi
        (l11, _), (l21, l22) = L
        d = u.shape[-1] // 2
        x, v = u[..., :d], u[..., d:]
        if w == 1.0:
            z1, z2 = z[..., :d], z[..., d:]
            return _cat(p11 * x + p12 * v + l11 * z1, p21 * x + p22 * v + l21 * z1 + l22 * z2)
        return _cat(p11 * x + p12 * v, p21 * x + p22 * v)

    def force(self, u, t, s, w, lam):
        r"""The kick's force :math:`2w\Gamma\beta(t)\,(s + \lambda M^{-1} v)` on v."""
        d = u.shape[-1] // 2
        coef = 2.0 * w * self.Gamma * self.schedule.beta(t)
        return coef * (s + u[..., d:] / self.mass) if lam else coef * s

    def kick(self, u, force, delta):
        r"""B: :math:`v \mathrel{+}= \delta\,F` (``operators.kick``)."""
        d = u.shape[-1] // 2
        return _cat(u[..., :d], ops.kick(u[..., d:], force, delta))


def _cat(a, b):
    if isinstance(a, np.ndarray):
        return np.concatenate([a, b], axis=-1)
    import torch
    return torch.cat([a, b], dim=-1)


def _chol2(Q):
    """Lower Cholesky factor of a 2x2 PSD matrix, valid when it is singular."""
    l11 = math.sqrt(max(Q[0, 0], 0.0))
    l21 = Q[1, 0] / l11 if l11 > 0 else 0.0
    l22 = math.sqrt(max(Q[1, 1] - l21 * l21, 0.0))
    return np.array([[l11, 0.0], [l21, l22]])


def _check_sde(sde):
    if not isinstance(sde, (VPSDE, CLD)):
        raise ValueError(f"sde: must be a VPSDE or a CLD, got {sde!r}")
    return sde


# ----------------------------------------------------------------------------- scores

def marginal(sde, t, data_mean, data_cov):
    r"""Exact forward marginal :math:`p_t` of Gaussian data (u = x for VP, (x, v) for CLD):
    :math:`m_t = \Phi m_0`, :math:`C_t = \Phi C_0 \Phi^T + Q`, with
    :math:`\Phi = \phi\otimes I_d`, :math:`Q = q\otimes I_d`."""
    m0, C0 = sde.initial_law(np.asarray(data_mean, float), np.asarray(data_cov, float))
    d = len(data_mean)
    phi, q = sde.transition_blocks(0.0, t)
    P = _blocks(phi, d)
    C = P @ C0 @ P.T + _blocks(q, d)
    return Moments(P @ m0, 0.5 * (C + C.T))


def _data_law(data_mean, data_cov):
    m = finite_array("data_mean", data_mean, ndim=1)
    C = finite_array("data_cov", data_cov)
    if C.ndim == 0:
        C = float(C) * np.eye(len(m))
    elif C.ndim == 1:
        C = np.diag(C)
    if C.shape != (len(m), len(m)):
        raise ValueError(f"data_cov: must be ({len(m)}, {len(m)}), got shape {C.shape}")
    if not np.allclose(C, C.T) or np.linalg.eigvalsh(0.5 * (C + C.T)).min() <= 0:
        raise ValueError(f"data_cov: must be symmetric positive definite, got {data_cov!r}")
    return m, 0.5 * (C + C.T)


class GaussianScore:
    r"""The exact score of every forward marginal for Gaussian data :math:`N(\mu_0, \Sigma_0)`.

    :math:`p_t = N(m_t, C_t)` (:func:`marginal`), so
    :math:`\nabla_u \log p_t(u) = -C_t^{-1}(u - m_t)`, affine in u. For VP the score is
    all of it; for CLD its v-rows (:math:`\nabla_v\log p_t`, Dockhorn et al.).
    ``score(u, t)`` works row-wise on (n, k d) arrays; :meth:`affine` gives (S, c) with
    score = u S^T + c.
    """

    def __init__(self, sde, data_mean, data_cov):
        self.sde = _check_sde(sde)
        self.data_mean, self.data_cov = _data_law(data_mean, data_cov)
        self.d = len(self.data_mean)
        self._cache = {}

    def affine(self, t):
        if t not in self._cache:
            m, C = marginal(self.sde, t, self.data_mean, self.data_cov)
            P = np.linalg.inv(C)
            P = 0.5 * (P + P.T)
            rows = slice(self.d, 2 * self.d) if self.sde.k == 2 else slice(0, self.d)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[t] = (-P[rows], (P @ m)[rows])
        return self._cache[t]

    def __call__(self, u, t):
        S, c = self.affine(t)
        return u @ S.T + c


class TorchScore:
    r"""A torch module as a numpy score: ``model(u, t)`` evaluated in batches under ``no_grad``.

    ``model`` maps a (n, k d) float tensor and a (n, 1) tensor of times to the score
    (n, d). With ``noise_prediction=True`` the model predicts the noise
    :math:`\hat\varepsilon` of :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon` and the
    score is :math:`-\hat\varepsilon/\sigma_t` (VP; Ho et al. 2020, Song et al. 2021).
    The batches are evaluated by :func:`sdekit.systems.evaluate_module` (as for
    :func:`sdekit.systems.torch_module`), in ``dtype`` on ``device`` (default: the model's).
    """

    def __init__(self, model, sde=None, batch_size=65536, noise_prediction=False, dtype=None, device=None):
        self.model = model
        self.batch_size = integer("batch_size", batch_size, low=1)
        self.noise_prediction = bool(noise_prediction)
        if self.noise_prediction and sde is None:
            raise ValueError("sde: needed for noise_prediction=True (to compute sigma_t)")
        self.sde = sde
        self.dtype, self.device = module_placement(model, dtype, device)
        self.evaluations = 0

    def __call__(self, u, t):
        s = evaluate_module(self.model, u, t, batch_size=self.batch_size, dtype=self.dtype,
                            device=self.device, name="model")
        self.evaluations += 1
        return -s / self.sde.sigma(t) if self.noise_prediction else s


# ----------------------------------------------------------------------------- samplers

class _Sampler:
    """Common part: ``step(u, t, h, z, score, cache=None) -> u``; ``n_noise(d)`` normals per row."""

    linear = True          # an affine map of (u, z) when the score is affine
    evals_per_step = 1

    def __init__(self, sde):
        self.sde = _check_sde(sde)

    def __repr__(self):
        return self.label

    @staticmethod
    def _score(score, u, t, cache):
        """score(u, t), reusing the last evaluation when it was at the same (u object, t)."""
        if cache is not None and cache.get("u") is u and cache.get("t") == t:
            cache["reused"] = cache.get("reused", 0) + 1
            return cache["s"]
        s = score(u, t)
        if cache is not None:
            cache.update(u=u, t=t, s=s)
            cache["evals"] = cache.get("evals", 0) + 1
        return s


class EulerMaruyama(_Sampler):
    r"""Euler–Maruyama on the reverse SDE (Song et al. 2021):
    :math:`u_{n+1} = u_n + h\,[-f + GG^T\nabla\log p](u_n, t_n) + G(t_n)\sqrt h\,z_n`,
    :math:`t_{n+1} = t_n - h`. Weak order 1."""

    label = "EM"

    def n_noise(self, d):
        return self.sde.n_noise(d)

    def step(self, u, t, h, z, score, cache=None):
        s = self._score(score, u, t, cache)
        return self.sde.add_noise(u + h * self.sde.reverse_drift(u, t, s, 1.0), t, h, z)


class ProbabilityFlow(_Sampler):
    r"""The probability-flow ODE :math:`du/d\tau = -f + \tfrac12 GG^T\nabla\log p_t`
    (Song et al. 2021, Eq. 13) by Euler (order 1) or Heun's method (order 2; Karras et al.
    2022). Deterministic (no noise)."""

    def __init__(self, sde, method="heun"):
        super().__init__(sde)
        if method not in ("euler", "heun"):
            raise ValueError(f"method: must be 'euler' or 'heun', got {method!r}")
        self.method = method
        self.label = f"ODE-{method}"
        self.evals_per_step = 1 if method == "euler" else 2

    def n_noise(self, d):
        return 0

    def step(self, u, t, h, z, score, cache=None):
        f0 = self.sde.reverse_drift(u, t, self._score(score, u, t, cache), 0.5)
        if self.method == "euler":
            return u + h * f0
        u1 = u + h * f0
        f1 = self.sde.reverse_drift(u1, t - h, self._score(score, u1, t - h, cache), 0.5)
        return u + (0.5 * h) * (f0 + f1)


class Letters:
    """What a letter's :meth:`~sdekit.letters.Letter.diffusion` hook sees of one step of a
    :class:`Splitting` sampler.

    Attributes
    ----------
    sde : VPSDE or CLD
        The forward SDE: its ``force``, ``kick`` and ``o_letter`` are the pieces' arithmetic.
    w : float
        1 for the reverse SDE, 1/2 for the probability-flow ODE.
    lam : float
        1 (``split="prior"``: the prior's score is in the linear piece) or 0 (``"drift"``).
    kick : str
        How a score kick is solved: "euler" or "heun".
    """

    def __init__(self, sampler, z, width, score, cache):
        self.sde, self.w, self.lam, self.kick = sampler.sde, sampler.w, sampler.lam, sampler.kick
        self._z, self._width, self._score, self._cache, self._next = z, width, score, cache, 0

    def score(self, u, t):
        """The score s(u, t), reusing the last evaluation at the same (u object, t)."""
        return _Sampler._score(self._score, u, t, self._cache)

    def normals(self, n):
        """The next n blocks of the step's standard normals (one block per normal per
        coordinate of u, in word order); None for the ODE."""
        j, self._next = self._next, self._next + n
        return self._z[..., j * self._width:(j + n) * self._width] if self._width else None


class Splitting(_Sampler):
    r"""Splitting of the reverse SDE (or probability-flow ODE) into an exact linear O
    letter and a score kick B, composed by a :class:`~sdekit.schemes.Scheme` over {B, O}.

    Pieces, in reverse time with :math:`w = 1` (SDE) or 1/2 (ODE) and
    :math:`\lambda = 1` (``split="prior"``) or 0 (``"drift"``):

    * VP, O: :math:`dx = (\tfrac12 - w\lambda)\beta x\,d\tau + \sqrt\beta\,dW` -- the
      operators' O letter with friction :math:`-(\tfrac12 - w\lambda)\bar\beta`
      (:func:`sdekit.operators.ou_coefficients`); B:
      :math:`x \mathrel{+}= \delta\,w\beta(t)(s + \lambda x)`.
    * CLD, O: :math:`dx = -\beta M^{-1} v`, :math:`dv = \beta(x + (1 - 2w\lambda)\Gamma M^{-1} v) + \sqrt{2\Gamma\beta}\,dW`
      (exact 2x2 flow); B: :math:`v \mathrel{+}= \delta\,2w\Gamma\beta(t)(s + \lambda M^{-1}v)`.
      ``Splitting(CLD(), "OBO")`` is Dockhorn et al.'s SSCS.

    Each letter is its :meth:`~sdekit.letters.Letter.diffusion` hook (B in
    :mod:`sdekit.letters.kick`, O in :mod:`sdekit.letters.ou`); a letter without one is
    refused. Sub-step times: the letters with ``diffusion_clock`` (O) carry the clock
    (see the module docstring). Each letter that reads the force (B) costs one score
    evaluation (``evals_per_step``); each draws ``normals`` blocks of noise.

    Parameters
    ----------
    sde : VPSDE or CLD
    scheme : str, list of (letter, fraction) or Scheme
        A word over B and O (default ``"BOB"``); it must contain an O (the clock).
    split : {"prior", "drift"}
    ode : bool
        Integrate the probability-flow ODE instead of the reverse SDE.
    kick : {"euler", "heun"}
        How the kick piece :math:`du = \delta F(u, t)` (frozen t) is solved: one Euler
        step (the letter B; the splitting is then first order because F depends on the
        kicked variable) or Heun's rule (two score evaluations per kick; with the exact
        O this restores the second order of the symmetric composition).
    """

    def __init__(self, sde, scheme="BOB", split="prior", ode=False, kick="euler"):
        super().__init__(sde)
        if kick not in ("euler", "heun"):
            raise ValueError(f"kick: must be 'euler' or 'heun', got {kick!r}")
        self.kick = kick
        self.scheme = scheme if isinstance(scheme, Scheme) else Scheme(scheme)
        rule = ("a diffusion splitting is a word over letters with a diffusion() hook (B: score kick, O: exact "
                "linear flow, which carries the clock) with at least one O")
        for letter in (self.scheme.whole_step,) if self.scheme.whole_step else self._letters:
            if not letter.supports("diffusion"):
                raise ValueError(f"scheme: {letter.missing('diffusion', 'the diffusion sampler Splitting')}; "
                                 f"{rule}; got {self.scheme.word!r}")
        if not any(letter.diffusion_clock for letter in self._letters):
            raise ValueError(f"scheme: {rule}; got {self.scheme.word!r}")
        if split not in ("prior", "drift"):
            raise ValueError(f"split: must be 'prior' or 'drift', got {split!r}")
        self.split, self.ode = split, bool(ode)
        self.w = 0.5 if self.ode else 1.0
        self.lam = 1.0 if split == "prior" else 0.0
        self.label = f"{self.scheme.word}" + ("-ODE" if ode else "") + ("" if split == "prior" else "-drift")
        if isinstance(sde, CLD) and self.scheme.word == "OBO" and not ode and split == "prior":
            self.label = "SSCS"
        if kick == "heun":
            self.label += "-heun"
        # a kick moves the variables the score depends on: no first-same-as-last reuse
        self.evals_per_step = sum(1 for l in self._letters if l.needs_force) * (2 if kick == "heun" else 1)

    @property
    def _letters(self):
        return tuple(e.letter for e in self.scheme.entries)

    def _times(self, t, h):
        """(t_start, t_end) of each entry: a clock letter runs from the clock to clock - f h, the
        others at the clock."""
        out, clock, done = [], t, 0.0
        n_clock = sum(1 for l in self._letters if l.diffusion_clock)
        seen = 0
        for e in self.scheme.entries:
            if e.letter.diffusion_clock:
                seen += 1
                done += e.fraction
                # the last O lands exactly on t - h (no rounding drift of the clock)
                end = t - h if seen == n_clock else t - done * h
                out.append((clock, end))
                clock = end
            else:
                out.append((clock, clock))
        return out

    def substep_times(self, t, h):
        """[(letter, fraction, t_start, t_end)]: each O runs from the clock to clock - f h; a B is
        at the clock (t_start == t_end)."""
        return [(e.letter.name, e.fraction, t0, t1) for e, (t0, t1) in zip(self.scheme.entries, self._times(t, h))]

    def _normals(self):
        return sum(l.normals for l in self._letters)

    def n_noise(self, d):
        if self.ode:
            return 0
        return self.sde.o_noise(d) * self._normals()

    def step(self, u, t, h, z, score, cache=None):
        width = 0 if self.ode else (z.shape[-1] // max(1, self._normals()))
        x = Letters(self, z, width, score, cache)
        for e, (t0, t1) in zip(self.scheme.entries, self._times(t, h)):
            u = e.letter.diffusion(x, u, e.fraction * h, t0, t1)
        return u


def SSCS(sde=None):
    """Dockhorn et al.'s symmetric splitting CLD sampler: ``Splitting(CLD(), "OBO")``,
    i.e. exact OU(h/2), Euler score kick(h) at :math:`t_n - h/2`, exact OU(h/2)."""
    return Splitting(CLD() if sde is None else sde, "OBO", split="prior")


class PredictorCorrector(_Sampler):
    r"""Song et al.'s predictor–corrector sampler (ICLR 2021, Alg. 1/2; VP).

    At each :math:`t_n`: ``n_corrector`` Langevin steps
    :math:`x \leftarrow x + \epsilon\,s(x, t_n) + \sqrt{2\epsilon}\,z`, then one
    Euler–Maruyama predictor step to :math:`t_{n+1}`. Step size
    :math:`\epsilon = 2\alpha\,(r\,\|z\|/\|s\|)^2`, :math:`\alpha = 1 - \beta(t_n) h`,
    r = ``snr``. With ``step_size="snr"`` the norms are those of the drawn noise and
    score per sample (Song et al.'s rule, not affine in x); the default
    ``"deterministic"`` replaces :math:`\|z\|/\|s\|` by the noise level
    :math:`\sigma_t = \sqrt{1 - e^{-b(t)}}` (the ratio for data much narrower than the
    noise), so the sampler is affine and the exactness harness applies. The corrector
    step does not shrink with h (only with :math:`\sigma_t`): on Gaussian data the
    corrector adds an error that grows with r and decays slower than h (observed order
    about 0.6 for r = 0.16, N = 1024..4096), so PC is less accurate than EM at equal N.
    """

    def __init__(self, sde, n_corrector=1, snr=0.16, step_size="deterministic"):
        super().__init__(sde)
        if not isinstance(sde, VPSDE):
            raise ValueError(f"sde: the predictor-corrector sampler is implemented for VPSDE, got {sde!r}")
        self.n_corrector = integer("n_corrector", n_corrector, low=0)
        self.snr = real("snr", snr, low=0.0)
        if step_size not in ("deterministic", "snr"):
            raise ValueError(f"step_size: must be 'deterministic' or 'snr', got {step_size!r}")
        self.step_size = step_size
        self.linear = step_size == "deterministic"
        self.evals_per_step = 1 + self.n_corrector
        self.label = f"PC({self.n_corrector}, snr={self.snr:g})"

    def n_noise(self, d):
        return d * (1 + self.n_corrector)

    def step(self, u, t, h, z, score, cache=None):
        sde, d = self.sde, u.shape[-1]
        alpha = 1.0 - sde.schedule.beta(t) * h
        if self.n_corrector and alpha <= 0:
            raise ValueError(f"n_steps: too few for the corrector: alpha = 1 - beta(t) h = {alpha:.3g} <= 0 "
                             f"at t = {t:.4g}, h = {h:.4g} (Song et al.'s corrector needs beta h < 1)")
        for j in range(self.n_corrector):
            zj = z[..., (j + 1) * d:(j + 2) * d]
            s = self._score(score, u, t, cache)
            if self.step_size == "snr":
                ratio = np.linalg.norm(zj, axis=-1, keepdims=True) / np.linalg.norm(s, axis=-1, keepdims=True)
            else:
                ratio = sde.sigma(t)
            eps = 2.0 * alpha * (self.snr * ratio) ** 2
            u = u + eps * s + np.sqrt(2.0 * eps) * zj
        s = self._score(score, u, t, cache)
        return sde.add_noise(u + h * sde.reverse_drift(u, t, s, 1.0), t, h, z[..., :d])


# ----------------------------------------------------------------------------- drivers

def time_grid(n_steps, T=1.0, eps=1e-3):
    r"""The N + 1 times :math:`t_n = T - n h`, :math:`h = (T - \epsilon)/N` (last one exactly eps)."""
    n_steps = integer("n_steps", n_steps, low=1)
    T = real("T", T, low=0.0, low_open=True)
    eps = real("eps", eps, low=0.0)
    if eps >= T:
        raise ValueError(f"eps: must be < T = {T}, got {eps!r}")
    ts = np.linspace(T, eps, n_steps + 1)
    ts[-1] = eps
    return ts


def _check_sampler(sampler):
    if not isinstance(sampler, _Sampler):
        raise ValueError(f"sampler: must be one of EulerMaruyama, ProbabilityFlow, Splitting, "
                         f"PredictorCorrector, got {sampler!r}")
    return sampler


@dataclass
class SampleResult:
    """Output of :func:`sample`: the final states u (n, k d), their data block x (n, d),
    the score evaluations made (per sample batch) and the wall time."""
    u: np.ndarray
    x: np.ndarray
    evaluations: int
    wall: float
    ts: np.ndarray = field(repr=False)


def sample(sampler, score, n_samples, n_steps, dim, *, seed=0, eps=1e-3, u0=None):
    r"""Integrate ``sampler`` from t = T to t = eps in ``n_steps`` equal steps.

    Starts from the prior (VP: N(0, I); CLD: N(0, I) x N(0, M I)) unless ``u0`` is given.
    Noise: one numpy Generator from ``seed``; per step an (n, sampler.n_noise(d)) block
    of standard normals.

    Returns
    -------
    SampleResult
    """
    sampler = _check_sampler(sampler)
    n_samples = integer("n_samples", n_samples, low=1)
    dim = integer("dim", dim, low=1)
    sde = sampler.sde
    ts = time_grid(n_steps, sde.T, eps)
    rng = np.random.default_rng(seed)
    D = sde.k * dim
    if u0 is None:
        m, C = sde.prior(dim)
        u = m + rng.standard_normal((n_samples, D)) * np.sqrt(np.diag(C))
    else:
        u = finite_array("u0", u0)
        if u.shape != (n_samples, D):
            raise ValueError(f"u0: must have shape ({n_samples}, {D}), got {u.shape}")
    cache, start, nz = {}, time.perf_counter(), sampler.n_noise(dim)
    for k in range(len(ts) - 1):
        z = rng.standard_normal((n_samples, nz)) if nz else None
        u = sampler.step(u, ts[k], ts[k] - ts[k + 1], z, score, cache)
        if not np.all(np.isfinite(u)):
            raise FloatingPointError(f"sample: non-finite state at step {k + 1} (t = {ts[k + 1]:.6g}) "
                                     f"with {sampler.label}")
    return SampleResult(u=u, x=u[:, sde.data_block(dim)], evaluations=cache.get("evals", 0),
                        wall=time.perf_counter() - start, ts=ts)


def target_moments(sde, data_mean, data_cov, eps=1e-3):
    """The exact marginal p_eps of the forward process at t = eps (u = x or (x, v))."""
    m, C = _data_law(data_mean, data_cov)
    return marginal(_check_sde(sde), eps, m, C)


def affine_step(out, m, C, D):
    r"""Gaussian moments through one probed affine step: ``out`` is the step applied to the rows
    0 (the origin: b), 1..D (the unit vectors: b + A e_i) and D+1.. (unit noise: b + L e_j), so
    :math:`m' = A m + b`, :math:`C' = A C A^T + L L^T` (symmetrised)."""
    b = out[0]
    A = (out[1:1 + D] - b).T
    L = (out[1 + D:] - b).T
    C = A @ C @ A.T + L @ L.T
    return A @ m + b, 0.5 * (C + C.T)


def exact_output_moments(sampler, data_mean, data_cov, n_steps, *, eps=1e-3, start="prior",
                         return_path=False):
    r"""Exact mean and covariance of a sampler's output for Gaussian data (no sampling).

    With the exact, affine score of :class:`GaussianScore` each step is
    :math:`u' = A_k u + b_k + L_k z`; :math:`A_k, b_k, L_k` are read off the sampler's own
    ``step`` applied to the probe rows (0, 0), (e_i, 0), (0, e_j) of (state, noise), and

    .. math::

        m_{k+1} = A_k m_k + b_k, \qquad C_{k+1} = A_k C_k A_k^T + L_k L_k^T.

    Parameters
    ----------
    sampler : EulerMaruyama, ProbabilityFlow, Splitting or PredictorCorrector
        (PredictorCorrector only with ``step_size="deterministic"``).
    data_mean, data_cov : (d,), (d, d)
        The data law :math:`N(\mu_0, \Sigma_0)`.
    n_steps : int
    eps : float
        Final time.
    start : {"prior", "exact"}
        Start from the prior (what a sampler does) or from the exact marginal
        :math:`p_T` (then the output differs from :math:`p_\epsilon` by the
        discretization error alone).
    return_path : bool
        Also return the list of moments after each step.

    Returns
    -------
    Moments of the full state u (x for VP, (x, v) for CLD); see
    :func:`target_moments` for the exact :math:`p_\epsilon`.
    """
    sampler = _check_sampler(sampler)
    if not sampler.linear:
        raise ValueError(f"sampler: {sampler.label} is not affine in the state (adaptive step size); "
                         f"use step_size='deterministic' for the exact recursion")
    if start not in ("prior", "exact"):
        raise ValueError(f"start: must be 'prior' or 'exact', got {start!r}")
    mu, Sigma = _data_law(data_mean, data_cov)
    sde, d = sampler.sde, len(mu)
    score = GaussianScore(sde, mu, Sigma)
    ts = time_grid(n_steps, sde.T, eps)
    m, C = sde.prior(d) if start == "prior" else marginal(sde, sde.T, mu, Sigma)
    D, nz = sde.k * d, sampler.n_noise(d)
    U = np.zeros((1 + D + nz, D))
    U[1:1 + D] = np.eye(D)
    Z = np.zeros((1 + D + nz, nz))
    Z[1 + D:] = np.eye(nz)
    path = []
    for k in range(len(ts) - 1):
        out = sampler.step(U, ts[k], ts[k] - ts[k + 1], Z if nz else None, score)
        m, C = affine_step(out, m, C, D)
        if return_path:
            path.append(Moments(m, C))
    result = Moments(m, C)
    return (result, path) if return_path else result


# ----------------------------------------------------------------------------- distances

def _gauss(name, moments):
    m = finite_array(f"{name}.mean", moments[0]).reshape(-1)
    C = finite_array(f"{name}.cov", moments[1])
    if C.shape != (len(m), len(m)):
        raise ValueError(f"{name}: covariance shape {C.shape} does not match mean length {len(m)}")
    return m, C


def gaussian_kl(p, q):
    r""":math:`KL(N(m_1, C_1)\,\|\,N(m_2, C_2)) = \tfrac12[\mathrm{tr}(C_2^{-1}C_1) +
    (m_2 - m_1)^T C_2^{-1}(m_2 - m_1) - k + \ln\det C_2 - \ln\det C_1]`."""
    m1, C1 = _gauss("p", p)
    m2, C2 = _gauss("q", q)
    L = np.linalg.cholesky(C2)
    dm = np.linalg.solve(L, m2 - m1)
    tr = np.trace(np.linalg.solve(C2, C1))
    ld1, ld2 = np.linalg.slogdet(C1)[1], np.linalg.slogdet(C2)[1]
    return 0.5 * (tr + dm @ dm - len(m1) + ld2 - ld1)


def gaussian_w2(p, q):
    r"""Wasserstein-2 distance of Gaussians:
    :math:`W_2^2 = |m_1 - m_2|^2 + \mathrm{tr}\,C_1 + \mathrm{tr}\,C_2 - 2\,\mathrm{tr}(C_2^{1/2} C_1 C_2^{1/2})^{1/2}`.
    The trace difference cancels: resolution about 1e-8 in W2."""
    m1, C1 = _gauss("p", p)
    m2, C2 = _gauss("q", q)
    w, V = np.linalg.eigh(C2)
    R = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
    mid = np.linalg.eigvalsh(R @ C1 @ R)
    val = np.sum((m1 - m2) ** 2) + np.trace(C1) + np.trace(C2) - 2.0 * np.sum(np.sqrt(np.clip(mid, 0, None)))
    return math.sqrt(max(val, 0.0))


def covariance_error(p, q):
    """Frobenius norm of the covariance difference, and Euclidean norm of the mean difference."""
    return float(np.linalg.norm(np.asarray(p[1]) - np.asarray(q[1]))), float(np.linalg.norm(np.asarray(p[0]) - np.asarray(q[0])))


# ----------------------------------------------------------------------------- convergence

def fit_exact_order(hs, errors, level=0.95, correction=False):
    r"""Observed order of exactly computed errors, with a confidence interval.

    Exact errors have no sampling noise, so the interval reflects only how far the
    errors are from the fitted model (residuals; Student t).

    * ``correction=False``: :math:`\log|e| = a + p\log h` by
      :func:`sdekit.fits.fit_order` with equal weights (stderr = 1e-6 |e|, so its
      chi-square inflation turns the interval into the residual one). Use on the
      asymptotic range: a pre-asymptotic drift of the slope makes this interval too
      narrow to contain the integer order.
    * ``correction=True``: :math:`\log|e| = a + p\log h + c\,h`, the next term of the
      expansion :math:`e = C h^p(1 + c h + \dots)` (Talay–Tubaro), fitted by ordinary
      least squares (n - 3 degrees of freedom).

    Returns
    -------
    (order, (low, high))
    """
    hs = np.asarray(hs, float).reshape(-1)
    errors = np.abs(np.asarray(errors, float)).reshape(-1)
    need = 4 if correction else 3
    if hs.shape != errors.shape or hs.size < need:
        raise ValueError(f"errors: need at least {need} errors matching hs, got {errors.size} and {hs.size}")
    if np.any(errors <= 0) or not np.all(np.isfinite(errors)):
        raise ValueError(f"errors: must be finite and non-zero to fit an order, got {errors.tolist()}")
    level = real("level", level, low=0.0, low_open=True)
    if level >= 1:
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    from scipy import stats
    if correction:
        X = np.column_stack([np.ones_like(hs), np.log(hs), hs])
        y = np.log(errors)
        coef = np.linalg.lstsq(X, y, rcond=None)[0]
        r = y - X @ coef
        dof = len(y) - 3
        se = math.sqrt(max(r @ r / dof, 0.0) * np.linalg.inv(X.T @ X)[1, 1])
        q = stats.t.ppf(0.5 + level / 2, dof)
        return float(coef[1]), (float(coef[1] - q * se), float(coef[1] + q * se))
    fit = fit_order(hs, errors, 1e-6 * errors, level=level)
    return fit.order, tuple(fit.ci)


def convergence_study(sampler, data_mean, data_cov, steps, *, eps=1e-3, fit_from=None, with_data=True):
    r"""Exact errors of a sampler's output law against N, for Gaussian data.

    For each N: the discretization error (start from the exact :math:`p_T`, compare the
    data block x with :math:`p_\epsilon`): covariance error :math:`\|C_N - C_\epsilon\|_F`,
    mean error :math:`|m_N - m_\epsilon|`, Gaussian KL; and (``with_data``), starting
    from the prior, the Gaussian KL and W2 of the output x to the data law
    :math:`N(\mu_0, \Sigma_0)` (these include the eps and prior biases, and plateau).

    Returns
    -------
    dict with arrays ``steps, h, cov_err, mean_err, kl_eps`` (and ``kl_data, w2_data``),
    the fitted ``order, ci`` of ``cov_err`` over the steps >= ``fit_from`` (pure power
    law, :func:`fit_exact_order`) and ``order_corr, ci_corr`` (with the correction term,
    over all steps).
    """
    mu, Sigma = _data_law(data_mean, data_cov)
    sampler = _check_sampler(sampler)
    sde, d = sampler.sde, len(mu)
    blk = sde.data_block(d)
    target = target_moments(sde, mu, Sigma, eps)
    tx = Moments(target.mean[blk], target.cov[blk, blk])
    data = Moments(mu, Sigma)
    keys = ("cov_err", "mean_err", "kl_eps") + (("kl_data", "w2_data") if with_data else ())
    rows = {k: [] for k in keys}
    for n in steps:
        ex = exact_output_moments(sampler, mu, Sigma, n, eps=eps, start="exact")
        x = Moments(ex.mean[blk], ex.cov[blk, blk])
        ce, me = covariance_error(x, tx)
        rows["cov_err"].append(ce)
        rows["mean_err"].append(me)
        rows["kl_eps"].append(gaussian_kl(x, tx))
        if with_data:
            pr = exact_output_moments(sampler, mu, Sigma, n, eps=eps, start="prior")
            px = Moments(pr.mean[blk], pr.cov[blk, blk])
            rows["kl_data"].append(gaussian_kl(px, data))
            rows["w2_data"].append(gaussian_w2(px, data))
    out = {k: np.array(v) for k, v in rows.items()}
    out["steps"] = np.array(steps)
    out["h"] = (sde.T - eps) / out["steps"]
    use = out["steps"] >= (fit_from or 0)
    out["order"], out["ci"] = fit_exact_order(out["h"][use], out["cov_err"][use])
    if len(steps) >= 4:
        out["order_corr"], out["ci_corr"] = fit_exact_order(out["h"], out["cov_err"], correction=True)
    out["label"] = sampler.label
    out["evals_per_step"] = sampler.evals_per_step
    return out
