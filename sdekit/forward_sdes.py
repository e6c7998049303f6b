r"""Forward SDEs of diffusion models: the noise schedule, VP and CLD, their exact transitions,
the Gaussian marginals of Gaussian data, and the scores.

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

Scores
------
:func:`marginal` is the exact forward marginal :math:`p_t` of Gaussian data; its score,
affine in u, is :class:`GaussianScore`. :class:`TorchScore` wraps a learned one (a torch
module). The samplers that integrate the reverse-time SDE with these pieces are in
:mod:`sdekit.reverse_samplers`.

See also
--------
sdekit.diffusion : the overview (the reverse-time SDE and the probability-flow ODE) and every
    name of the three modules below in one place.
sdekit.reverse_samplers : the samplers, which run these SDEs' ``o_letter``, ``force`` and ``kick``.
sdekit.diffusion_exact : exact output moments of the samplers for Gaussian data.
"""
import math

import numpy as np
from scipy import linalg

from . import operators as ops
from ._checks import finite_array, integer, real
from .linear import Moments
from .torch_systems import evaluate_module, module_placement

__all__ = ["LinearSchedule", "VPSDE", "CLD", "GaussianScore", "TorchScore"]


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
    The batches are evaluated by :func:`sdekit.torch_systems.evaluate_module` (as for
    :func:`sdekit.torch_systems.torch_module`), in ``dtype`` on ``device`` (default: the model's).
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

