r"""Test systems: potentials whose invariant measures are known, and the user's own.

Every system has

* ``dim`` — the number of position coordinates d;
* ``potential(q)`` and ``grad(q)`` — numpy, vectorised over leading axes
  (``q`` of shape ``(..., d)``);
* ``gradient`` — the same gradient as a plain-arithmetic function
  ``gradient(q, out)`` on one configuration (``q``, ``out`` of shape ``(d,)``),
  written so that numba compiles it for the CPU kernels and numba-cuda for device
  code; constants are closed over;
* ``energy`` — the potential as a plain-arithmetic function ``energy(q) -> float`` on one
  configuration, compiled like ``gradient`` (the Metropolis tests of ``{ }`` and MALA in
  the compiled kernels); None if the system has none;
* ``exact(name, kT)`` — exact stationary expectations of the built-in observables
  (``"q"``, ``"q2"``, ...) of the canonical law :math:`\propto e^{-U(q)/k_BT}`,
  closed form or 1-D quadrature, for computing biases.

A sum of parts :math:`U = \sum_g U_g` (:func:`split`) is a system whose parts are force
groups: the kicks ``B0``, ``B1``, ... of a multiple-time-stepping word kick with one part each.

A torch module (a learned force, gradient or potential) is a system through
:func:`torch_module`; it has no compiled ``gradient`` (``numpy_only = True``), so only the
numpy backend runs it. It lives in :mod:`sdekit.torch_systems`, the base class
:class:`System` in :mod:`sdekit.system_base`; both are re-exported here.

A time-dependent system (``time_dependent = True``, e.g. :func:`custom` with
``time_dependent=True``) has ``grad(q, t)``, ``force(q, t)`` and a numba-jittable
``gradient(q, t, out)`` instead; the schemes evaluate it at the clock time of each
letter (:attr:`sdekit.schemes.Scheme.substep_times`).

The momentum marginal is always :math:`N(0, k_BT M)`, so ``exact("p2", kT, mass)``
is ``kT * mass`` for every system.
"""
import numba
import numpy as np
from scipy import integrate

from ._checks import as_positive_vector, finite_array, integer
from .system_base import System, UnknownObservable, _known_values  # noqa: F401 (re-exported)
from .torch_systems import (MODULE_OUTPUTS, TorchModule, evaluate_module,  # noqa: F401 (re-exported)
                            module_placement, torch_module)


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

        def energy(q):
            acc = 0.0
            for i in range(q.shape[0]):
                acc += 0.5 * w2[i] * q[i] * q[i]
            return acc

        self.gradient, self.energy = gradient, energy

    def potential(self, q):
        return 0.5 * np.sum(self.omega ** 2 * np.asarray(q) ** 2, axis=-1)

    def grad(self, q):
        return self.omega ** 2 * q

    def hessian(self):
        """The constant Hessian K = diag(omega^2)."""
        return np.diag(self.omega ** 2)

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

        def energy(q):
            n = q.shape[0]
            acc = 0.0
            for i in range(n):
                for j in range(n):
                    acc += 0.5 * q[i] * K[i, j] * q[j]
            return acc

        self.gradient, self.energy = gradient, energy

    def potential(self, q):
        q = np.asarray(q)
        return 0.5 * np.einsum("...i,ij,...j->...", q, self.precision, q)

    def grad(self, q):
        return q @ self.precision  # K symmetric

    def hessian(self):
        """The constant Hessian K (the precision)."""
        return self.precision

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

        def energy(q):
            acc = 0.0
            for i in range(q.shape[0]):
                x = q[i] * q[i] - 1.0
                acc += x * x
            return acc

        self.gradient, self.energy = gradient, energy

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

    def __init__(self, gradient, dim, potential=None, exact=None, name="custom", time_dependent=False):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: must be a positive integer, got {dim!r}")
        if not callable(gradient):
            raise ValueError(f"gradient: must be callable, got {gradient!r}")
        if not isinstance(time_dependent, bool):
            raise ValueError(f"time_dependent: must be True or False, got {time_dependent!r}")
        self.dim, self.name = int(dim), name
        self.time_dependent = time_dependent
        self.gradient = gradient
        if potential is not None and not callable(potential):
            raise ValueError(f"potential: must be callable potential(q) -> float, got {potential!r}")
        self._potential = potential
        # the kernels' Metropolis tests compile it; a time-dependent U(q, t) has no Metropolis test
        self.energy = potential if potential is not None and not time_dependent else None
        self._exact = dict(exact or {})
        jitted = _probe_compile(gradient, time_dependent)
        if time_dependent:
            @numba.njit
            def batch(q, t, out):
                for n in range(q.shape[0]):
                    jitted(q[n], t, out[n])
        else:
            @numba.njit
            def batch(q, out):
                for n in range(q.shape[0]):
                    jitted(q[n], out[n])

        self._batch = batch

    def grad(self, q, *t):
        t = self._time(t)
        q = np.ascontiguousarray(q, dtype=np.float64)
        flat = q.reshape(-1, self.dim)
        out = np.empty_like(flat)
        self._batch(flat, *t, out)
        return out.reshape(q.shape)

    def potential(self, q, *t):
        if self._potential is None:
            raise ValueError(f"{self.name}: no potential was given")
        t = self._time(t)
        q = np.asarray(q, dtype=float)
        return np.apply_along_axis(self._potential, -1, q, *t)

    def _exact_positions(self, kT):
        return _known_values(self._exact, kT)


def _probe_compile(gradient, time_dependent):
    """``gradient`` jitted by numba and compiled for float64 (dim,) arrays (and a float time):
    the numpy backend's batch loop calls this very dispatcher, so the compilation is not
    repeated there. ValueError naming ``gradient``, with numba's first meaningful line, if
    numba cannot compile it (rather than a long TypingError at the first run, which never
    said "gradient"). Costs ~0.1 s per system after numba's own start-up."""
    if isinstance(gradient, numba.core.dispatcher.Dispatcher):
        raise ValueError(f"gradient: must be the plain Python function, not a numba-jitted one "
                         f"(pass its .py_func), got {gradient!r}")
    array = numba.types.float64[::1]
    signature = (array, numba.types.float64, array) if time_dependent else (array, array)
    jitted = numba.njit(gradient)
    try:
        jitted.compile(signature)
    except Exception as err:  # numba's TypingError, UnsupportedError, ... or an error it met
        what = "gradient(q, t, out)" if time_dependent else "gradient(q, out)"
        raise ValueError(f"gradient: numba cannot compile {getattr(gradient, '__qualname__', gradient)!r} "
                         f"as {what} on float64 arrays of shape (dim,): {_first_line(err)}") from None
    return jitted


def _first_line(err):
    """The first line of a numba error that says what is wrong (not its 'Failed in ... pipeline'
    headers), with the place in the user's code where numba gives one."""
    lines = [line.strip() for line in str(err).splitlines()]
    what = next((line for line in lines if line and not line.startswith(("Failed in ", "During:"))),
                type(err).__name__)
    where = next((line for line in lines if line.startswith("File ") and ", line " in line), None)
    return what if where is None else f"{what} (in {where[5:].rstrip(':').replace(chr(34), '')})"


def custom(gradient, dim, potential=None, exact=None, name="custom", time_dependent=False):
    """Bring your own potential (possibly time-dependent).

    Parameters
    ----------
    gradient : callable ``gradient(q, out)``
        Writes :math:`\\nabla U(q)` into ``out`` for one configuration ``q`` of
        shape ``(dim,)``. Must be numba-jittable (plain loops and arithmetic,
        constants closed over); the same function runs in the numpy reference
        backend (through a compiled batch loop), the CPU kernels and, if it uses
        only scalar arithmetic, on the GPU. numba compiles it here, on float64 arrays
        (a ``ValueError`` naming ``gradient``, with numba's reason, if it cannot).
    dim : int
        Number of coordinates.
    potential : callable ``potential(q) -> float``, optional
        U(q) for one configuration: for plots and checks, and for the Metropolis tests of
        brace words ``"O{BAB}O"`` and ``"MALA"``, which refuse a system without one. Written
        like ``gradient`` (numba-compilable arithmetic), the compiled backends run it too.
    exact : dict, optional
        Known stationary expectations, ``{"q2": array or callable(kT)}``.
    name : str
    time_dependent : bool
        If True, ``gradient(q, t, out)`` writes :math:`\\nabla_q U(q, t)` for the time
        ``t`` (a float), and ``potential(q, t)``; the schemes evaluate it at the
        clock time of each letter (:attr:`sdekit.schemes.Scheme.substep_times`).

    Examples
    --------
    >>> def grad_quartic(q, out):
    ...     for i in range(q.shape[0]):
    ...         out[i] = q[i] ** 3
    >>> sys = custom(grad_quartic, dim=2)

    A harmonic well driven by :math:`F(t) = a\\cos(\\nu t)`,
    :math:`U(q, t) = q^2/2 - a q \\cos(\\nu t)`:

    >>> import math
    >>> def grad_driven(q, t, out):
    ...     out[0] = q[0] - 0.5 * math.cos(2.0 * t)
    >>> driven = custom(grad_driven, dim=1, time_dependent=True)
    >>> float(driven.force(np.array([1.0]), 0.0)[0])
    -0.5
    """
    return Custom(gradient, dim, potential, exact, name, time_dependent)


# ----------------------------------------------------------------------------- force groups

def combine_gradients(a, b, sign=1.0):
    """``gradient(q, out)`` of U_a + sign U_b (a scratch array per call: the group kicks avoid it;
    ``sign`` is +1 or -1, so the sum or difference is exact as written)."""
    def gradient(q, out):
        a(q, out)
        tmp = np.empty(out.shape[0])
        b(q, tmp)
        for i in range(out.shape[0]):
            out[i] += sign * tmp[i]
    return gradient


def _sum_energies(a, b):
    def energy(q):
        return a(q) + b(q)
    return energy


class Split(System):
    r"""A sum of parts :math:`U = U_0 + U_1 + \dots`, each a force group: see :func:`split`."""

    def __init__(self, parts):
        parts = tuple(parts)
        if len(parts) < 2:
            raise ValueError(f"parts: split() needs at least two systems, got {len(parts)}")
        for part in parts:
            if not isinstance(part, System) or part.parts:
                raise ValueError(f"parts: each part must be a single sdekit system (not a split), got {part!r}")
            if part.time_dependent or part.numpy_only:
                raise ValueError(f"parts: {part!r} is time-dependent or numpy-only; force groups take "
                                 f"time-independent systems with a compiled gradient")
        dims = {part.dim for part in parts}
        if len(dims) != 1:
            raise ValueError(f"parts: the parts must have the same dimension, got {[p.dim for p in parts]}")
        self.parts, self.dim = parts, dims.pop()
        self.name = "split(" + ", ".join(repr(p) for p in parts) + ")"
        gradient, energy = parts[0].gradient, parts[0].energy
        for part in parts[1:]:
            gradient = combine_gradients(gradient, part.gradient)
            energy = None if energy is None or part.energy is None else _sum_energies(energy, part.energy)
        self.gradient, self.energy = gradient, energy
        bounds = [p.escape_bound for p in parts if p.escape_bound is not None]
        self.escape_bound = min(bounds) if bounds else None

    def potential(self, q):
        return sum(part.potential(q) for part in self.parts)

    def grad(self, q):
        return sum(part.grad(q) for part in self.parts)

    def group_force(self, q, group):
        """F_g(q) = -grad U_g(q) of part ``group``, vectorised."""
        return -self.parts[group].grad(q)

    def hessian(self):
        """The Hessian of a sum of quadratic parts (Harmonic, Gaussian): the sum of theirs."""
        return sum(self.hessians())

    def hessians(self):
        """Each part's constant Hessian (ValueError naming ``parts`` if one is not quadratic)."""
        if not all(hasattr(p, "hessian") for p in self.parts):
            raise ValueError(f"parts: {self.name} has a part that is not quadratic (Harmonic or Gaussian)")
        return [np.atleast_2d(p.hessian()) for p in self.parts]

    def _exact_positions(self, kT):
        if not all(hasattr(p, "hessian") for p in self.parts):
            return {}
        cov = kT * np.linalg.inv(self.hessian())
        return {"q": np.zeros(self.dim), "q2": np.diag(cov).copy()}


def check_force_groups(scheme, system):
    """ValueError naming ``system`` unless it has one part per force group the word kicks with
    (``scheme.force_groups``: B0, B1, ...); the drivers and the kernel builder both ask."""
    groups = scheme.force_groups
    if groups and len(system.parts) != len(groups):
        have = f"{len(system.parts)} parts" if system.parts else "no force groups"
        raise ValueError(f"system: {scheme.word} kicks with force groups {list(groups)}, so the system must be "
                         f"sdekit.systems.split() of {len(groups)} parts; {system!r} has {have}")


def split(*parts):
    r"""A system that is the sum of its parts, each a force group: :math:`U = \sum_g U_g`.

    A word kicks with the whole force (``B``) or with one group per kick (``B0`` for
    ``parts[0]``, ``B1`` for ``parts[1]``, ...), each group's force cached and evaluated
    lazily on its own: multiple time stepping (r-RESPA; Tuckerman, Berne & Martyna,
    J. Chem. Phys. 97, 1992), with the fast part kicked in an inner loop and the slow part
    once per step, ``"B1 (B0 A O A B0)^4 B1"``. Quadratic parts give exact linear
    statistics (:mod:`sdekit.linear` with ``system.hessians()``).

    Parameters
    ----------
    *parts : System
        Two or more time-independent systems of the same dimension with compiled gradients.

    Examples
    --------
    >>> stiff_and_soft = split(Harmonic(10.0), Harmonic(1.0))   # U = (100 + 1) q^2 / 2
    >>> float(stiff_and_soft.exact("q2", 1.0)[0]) == 1 / 101
    True
    """
    return Split(parts)
