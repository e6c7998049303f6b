r"""Test systems: potentials whose invariant measures are known, and the user's own.

Every system has

* ``dim`` — the number of position coordinates d;
* ``potential(q)`` and ``grad(q)`` — numpy, vectorised over leading axes
  (``q`` of shape ``(..., d)``);
* ``gradient`` — the same gradient as a plain-arithmetic function
  ``gradient(q, out)`` on one configuration (``q``, ``out`` of shape ``(d,)``),
  written so that numba compiles it for the CPU kernels and numba-cuda for device
  code; constants are closed over;
* ``exact(name, kT)`` — exact stationary expectations of the built-in observables
  (``"q"``, ``"q2"``, ...) of the canonical law :math:`\propto e^{-U(q)/k_BT}`,
  closed form or 1-D quadrature, for computing biases.

The momentum marginal is always :math:`N(0, k_BT M)`, so ``exact("p2", kT, mass)``
is ``kT * mass`` for every system.
"""
import numpy as np
from scipy import integrate

from ._checks import as_positive_vector, finite_array, integer


class System:
    """Base class. Subclasses set ``dim`` and define ``potential``, ``grad``, ``gradient``."""

    dim: int
    name = "system"
    escape_bound = None
    """|q_i| beyond which a path has left the region where the usual steps are stable
    (used by the analysis functions as the default ``max_abs``); None: no such region."""

    def force(self, q):
        """F(q) = -grad U(q), vectorised."""
        return -self.grad(q)

    def exact(self, name, kT, mass=None):
        """Exact stationary expectation of observable ``name`` at temperature ``kT``.

        ``"p2"`` (per-coordinate <p_i^2> = kT m_i) and ``"p"`` (0) hold for every
        system; position observables are defined by subclasses. Raises
        ``KeyError`` for an observable whose exact value is not known.
        """
        mass = np.ones(self.dim) if mass is None else np.broadcast_to(mass, (self.dim,))
        if name == "p":
            return np.zeros(self.dim)
        if name == "p2":
            return kT * np.asarray(mass, dtype=float)
        values = self._exact_positions(kT)
        if name not in values:
            raise KeyError(f"{self.name}: no exact value known for observable {name!r}")
        return values[name]

    def _exact_positions(self, kT):
        return {}

    def __repr__(self):
        return self.name


class Harmonic(System):
    r"""Harmonic oscillator :math:`U = \sum_i \omega_i^2 q_i^2 / 2`.

    Parameters
    ----------
    omega : float or array of shape (dim,)
        Angular frequencies (positive).
    dim : int
        Number of coordinates (default 1, or ``len(omega)``).

    Exact: :math:`\langle q_i\rangle = 0`, :math:`\langle q_i^2\rangle = k_BT/\omega_i^2`,
    :math:`\langle q_i^4\rangle = 3 (k_BT/\omega_i^2)^2`.
    """

    def __init__(self, omega=1.0, dim=None):
        omega = finite_array("omega", omega)
        if omega.ndim > 1:
            raise ValueError(f"omega: must be a scalar or a vector, got shape {omega.shape}")
        dim = omega.size if dim is None else integer("dim", dim, low=1)
        self.omega = as_positive_vector("omega", omega, dim)
        self.dim = len(self.omega)
        self.name = f"Harmonic(omega={self.omega.tolist() if self.dim > 1 else float(self.omega[0])}, dim={self.dim})"
        w2 = self.omega ** 2

        def gradient(q, out):
            for i in range(q.shape[0]):
                out[i] = w2[i] * q[i]

        self.gradient = gradient

    def potential(self, q):
        return 0.5 * np.sum(self.omega ** 2 * np.asarray(q) ** 2, axis=-1)

    def grad(self, q):
        return self.omega ** 2 * q

    def _exact_positions(self, kT):
        var = kT / self.omega ** 2
        return {"q": np.zeros(self.dim), "q2": var, "q4": 3 * var ** 2}


class Gaussian(System):
    r"""Gaussian potential :math:`U = q^T K q / 2` with a positive-definite precision K.

    Exact: :math:`\langle q q^T \rangle = k_BT\,K^{-1}`.
    """

    def __init__(self, precision):
        K = finite_array("precision", precision, ndim=2)
        if K.shape[0] != K.shape[1]:
            raise ValueError(f"precision: must be square, got shape {K.shape}")
        if not np.allclose(K, K.T, rtol=0, atol=1e-12 * np.abs(K).max()):
            raise ValueError("precision: must be symmetric")
        if np.linalg.eigvalsh(K).min() <= 0:
            raise ValueError(f"precision: must be positive definite, eigenvalues {np.linalg.eigvalsh(K)}")
        self.precision = K
        self.dim = K.shape[0]
        self.name = f"Gaussian(dim={self.dim})"

        def gradient(q, out):
            n = q.shape[0]
            for i in range(n):
                acc = 0.0
                for j in range(n):
                    acc += K[i, j] * q[j]
                out[i] = acc

        self.gradient = gradient

    def potential(self, q):
        q = np.asarray(q)
        return 0.5 * np.einsum("...i,ij,...j->...", q, self.precision, q)

    def grad(self, q):
        return q @ self.precision  # K symmetric

    def covariance(self, kT):
        """Exact stationary covariance kT K^-1 of q."""
        return kT * np.linalg.inv(self.precision)

    def _exact_positions(self, kT):
        cov = self.covariance(kT)
        return {"q": np.zeros(self.dim), "q2": np.diag(cov).copy()}


class DoubleWell(System):
    r"""Double well :math:`U = \sum_i (q_i^2 - 1)^2`, independent in each coordinate.

    Exact moments by 1-D quadrature of :math:`e^{-(x^2-1)^2/k_BT}` (scipy ``quad``,
    relative accuracy ~1e-12).

    The force grows like :math:`4q^3`, so explicit steps are unstable for large |q|
    (for h = 0.3, once |q| > 2): rare paths escape and blow up. ``escape_bound = 5``
    is where the analysis functions stop such a path and report it.
    """

    escape_bound = 5.0

    def __init__(self, dim=1):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.name = f"DoubleWell(dim={self.dim})"

        def gradient(q, out):
            for i in range(q.shape[0]):
                out[i] = 4.0 * q[i] * (q[i] * q[i] - 1.0)

        self.gradient = gradient

    def potential(self, q):
        return np.sum((np.asarray(q) ** 2 - 1.0) ** 2, axis=-1)

    def grad(self, q):
        return 4.0 * q * (q * q - 1.0)

    @staticmethod
    def moment(k, kT):
        """<x^k> of the 1-D density proportional to exp(-(x^2 - 1)^2 / kT)."""
        if k % 2:
            return 0.0
        w = lambda x, j: x ** j * np.exp(-(x * x - 1.0) ** 2 / kT)
        opts = dict(epsabs=0, epsrel=1e-13, limit=200)
        z = integrate.quad(w, 0, np.inf, args=(0,), **opts)[0]
        return integrate.quad(w, 0, np.inf, args=(k,), **opts)[0] / z

    def _exact_positions(self, kT):
        one = lambda k: np.full(self.dim, self.moment(k, kT))
        return {"q": np.zeros(self.dim), "q2": one(2), "q4": one(4)}


class Custom(System):
    """A user's potential: see :func:`custom`."""

    def __init__(self, gradient, dim, potential=None, exact=None, name="custom"):
        import numba

        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: must be a positive integer, got {dim!r}")
        if not callable(gradient):
            raise ValueError(f"gradient: must be callable, got {gradient!r}")
        self.dim, self.name = int(dim), name
        self.gradient = gradient
        self._potential = potential
        self._exact = dict(exact or {})
        jitted = numba.njit(gradient)

        @numba.njit
        def batch(q, out):
            for n in range(q.shape[0]):
                jitted(q[n], out[n])

        self._batch = batch

    def grad(self, q):
        q = np.ascontiguousarray(q, dtype=np.float64)
        flat = q.reshape(-1, self.dim)
        out = np.empty_like(flat)
        self._batch(flat, out)
        return out.reshape(q.shape)

    def potential(self, q):
        if self._potential is None:
            raise ValueError(f"{self.name}: no potential was given")
        q = np.asarray(q, dtype=float)
        return np.apply_along_axis(self._potential, -1, q)

    def _exact_positions(self, kT):
        return {k: (v(kT) if callable(v) else np.asarray(v, dtype=float)) for k, v in self._exact.items()}


def custom(gradient, dim, potential=None, exact=None, name="custom"):
    """Bring your own potential.

    Parameters
    ----------
    gradient : callable ``gradient(q, out)``
        Writes :math:`\\nabla U(q)` into ``out`` for one configuration ``q`` of
        shape ``(dim,)``. Must be numba-jittable (plain loops and arithmetic,
        constants closed over); the same function runs in the numpy reference
        backend (through a compiled batch loop), the CPU kernels and, if it uses
        only scalar arithmetic, on the GPU.
    dim : int
        Number of coordinates.
    potential : callable ``potential(q) -> float``, optional
        U(q) for one configuration (for plots and checks).
    exact : dict, optional
        Known stationary expectations, ``{"q2": array or callable(kT)}``.

    Examples
    --------
    >>> def grad_quartic(q, out):
    ...     for i in range(q.shape[0]):
    ...         out[i] = q[i] ** 3
    >>> sys = custom(grad_quartic, dim=2)
    """
    return Custom(gradient, dim, potential, exact, name)
