r"""Holonomic constraints g(q) = 0: SHAKE, RATTLE and geodesic (g-BAOAB) drifts.

Constrained Langevin dynamics (Leimkuhler & Matthews, *Molecular Dynamics*,
Springer 2015, ch. 7; Lelièvre, Rousset & Stoltz, Math. Comp. 81, 2012) keeps the
positions on the manifold :math:`\Sigma = \{q : g(q) = 0\}`, :math:`g: \mathbb{R}^d
\to \mathbb{R}^m`, and the momenta in its cotangent space
:math:`\{p : G(q) M^{-1} p = 0\}`, :math:`G = \partial g / \partial q` (m x d):

.. math::

    dq = M^{-1} p\,dt, \qquad
    dp = -\nabla U\,dt - \gamma p\,dt + \sqrt{2\gamma k_BT} M^{1/2} dW - G(q)^T d\lambda,

with the multipliers :math:`\lambda` such that the constraints hold. Its invariant
law is :math:`e^{-H/k_BT}` on the cotangent bundle; the configurational marginal is
:math:`e^{-U(q)/k_BT}\,\sigma^M_\Sigma(dq)`, the surface measure of
:math:`\Sigma` in the metric :math:`M` (for :math:`M = I` the ordinary surface, or
arc-length, measure).

The letters become (:mod:`sdekit.reference` applies them):

* **A** (drift) is followed by **SHAKE** (Ryckaert, Ciccotti & Berendsen,
  J. Comput. Phys. 23, 1977): given :math:`\tilde q = q_0 + \delta M^{-1} p`, find
  :math:`\lambda` with :math:`g(\tilde q - M^{-1} G(q_0)^T \lambda) = 0`, and set
  :math:`q = \tilde q - M^{-1} G(q_0)^T\lambda`,
  :math:`p \leftarrow p - G(q_0)^T \lambda / \delta`; then by **RATTLE** at the new q
  (Andersen, J. Comput. Phys. 52, 1983):

  .. math::  p \leftarrow p - G^T (G M^{-1} G^T)^{-1} G M^{-1} p.

* **B** and **O** are followed by RATTLE: the force of a constrained system is the
  unconstrained :math:`-\nabla U` projected onto the cotangent space, and O's noise
  likewise.
* **g-BAOAB** (Leimkuhler & Matthews, Proc. R. Soc. A 472, 20160138, 2016) replaces
  each A by K geodesic sub-steps, each a drift of :math:`\delta/K` followed by SHAKE
  and RATTLE (``Scheme("BAOAB", geodesic_steps=K)``).

The constraints here: :class:`Sphere` (the "magnitude" constraint |q| = r),
:class:`Stiefel` (the "orthogonality" constraint :math:`W^TW = I`),
:class:`Circle` (one magnitude constraint per weight with a slack variable; Leimkuhler,
Pouchon & Vlaar, "Better training using weight-constrained stochastic dynamics",
ICML 2021) and :class:`Constraint` (your own g and Jacobian).

Per-path functions
------------------
Each constraint carries plain-arithmetic, numba-jittable functions on one path
(``q``, ``p``, ``inv_mass`` of shape (d,); ``work`` a float64 scratch buffer of
length ``constraint.work_size(d)``), the single definition that the numpy
reference backend runs through compiled batch loops (and compiled kernels may
inline):

``g(q, out)``, ``jacobian(q, out)``
    the constraint values (m,) and Jacobian (m, d);
``rattle(q, p, inv_mass, work) -> bool``
    project p in place (False if :math:`G M^{-1} G^T` is singular);
``shake(q_old, q, p, delta, inv_mass, work) -> int``
    on entry q is the drifted :math:`\tilde q`; on exit q is on the manifold and p is
    corrected by :math:`-G(q_0)^T\lambda/\delta` (RATTLE not yet applied). Returns the
    number of Newton iterations (0 if already on the manifold) or -1 if it did not
    converge to ``tol`` (relative to the constraint's ``scale``) within ``max_iter``.

They are in ``constraint.per_path`` (a namespace). Arrays of paths are handled by
the methods :meth:`Manifold.rattle`, :meth:`Manifold.drift`,
:meth:`Manifold.residual`, :meth:`Manifold.tangency`, :meth:`Manifold.project`.

Modules
-------
This module holds the classes and the simulators' glue (:func:`validate`,
:func:`check_start`, :func:`project_momenta`, :func:`constrained_drift`). The compiled
per-path functions and their batch loops (the Newton solver, the closed forms of the
sphere and the circles, the Stiefel constraints, the cache of built sets) are in
:mod:`sdekit.rattle`; their names are re-exported here.
"""
import numpy as np

from ._checks import DivergenceError, finite_array, integer, real
# the compiled building blocks, re-exported under the names sdekit.constraints has always had
from .rattle import (  # noqa: F401
    _COMPILED, _batch_functions, _circle_functions, _compiled, _jit, _newton_functions, _solve,
    _sphere_functions, _stiefel_g_jacobian)

Q0_TOL = 1e-8
"""A q0 (or a state handed to :func:`check_start`) must satisfy |g(q0)| <= Q0_TOL * scale."""


# ----------------------------------------------------------------------------- classes

class Manifold:
    """Base class of the constraints. Subclasses set the per-path functions.

    Attributes
    ----------
    dim : int or None
        Number of position coordinates d it acts on (None: any, checked by :meth:`codim`).
    scale : float
        Natural size of g; SHAKE stops when :math:`\\max_i |g_i(q)| \\le` ``tol * scale``.
    tol, max_iter : float, int
        SHAKE's relative tolerance and iteration limit (closed-form constraints
        solve SHAKE exactly, up to rounding).
    per_path : namespace
        ``g``, ``jacobian``, ``rattle``, ``shake``, ``project``: see the module docstring.
    """

    dim = None
    scale = 1.0
    tol = 1e-12
    max_iter = 50
    device_functions = False
    """True if the per-path ``shake`` and ``rattle`` are plain arithmetic that numba-cuda
    compiles as device functions (closed forms: :class:`Sphere`, :class:`Circle` and their
    subclasses), so the cuda backend runs the constraint; False for a Newton solve."""

    def codim(self, d):
        """Number m of constraints on R^d (the tangent space has d - m dimensions)."""
        raise NotImplementedError

    def check_dim(self, d, name="constraint"):
        """Raise ValueError naming ``name`` unless the constraint acts on R^d."""
        if self.dim is not None and d != self.dim:
            raise ValueError(f"{name}: {self!r} acts on {self.dim} coordinates, the system has {d}")
        m = self.codim(d)
        if not 0 < m < d:
            raise ValueError(f"{name}: {self!r} has {m} constraints on {d} coordinates; "
                             f"need 0 < m < d")
        return m

    def work_size(self, d):
        """Length of the per-path scratch buffer ``work`` (float64)."""
        m = self.codim(d)
        return 2 * m * d + m * m + m

    # -- arrays of paths -------------------------------------------------------------
    def _prepare(self, q, mass, p=None):
        q = np.atleast_1d(finite_array("q", q))
        shape = q.shape
        d = shape[-1]
        self.check_dim(d, "q")
        Q = np.ascontiguousarray(q.reshape(-1, d))
        inv_mass = np.ones(d) if mass is None else 1.0 / np.broadcast_to(np.asarray(mass, dtype=float), (d,))
        inv_mass = np.ascontiguousarray(inv_mass)
        if p is not None:
            p = np.atleast_1d(finite_array("p", p))
            if p.shape != shape:
                raise ValueError(f"p: must have the shape of q {shape}, got {p.shape}")
            p = np.ascontiguousarray(p.reshape(-1, d))
        return Q, p, inv_mass, shape

    def residual(self, q):
        """:math:`|g(q)|` (Euclidean norm over the m constraints), per path: shape q.shape[:-1]."""
        Q, _, _, shape = self._prepare(q, None)
        m = self.codim(Q.shape[1])
        out = np.empty((Q.shape[0], m))
        self._batch.g(Q, out)
        return np.sqrt((out * out).sum(axis=1)).reshape(shape[:-1])

    def tangency(self, q, p, mass=None):
        """:math:`|G(q) M^{-1} p|` per path (zero for p in the cotangent space)."""
        Q, P, inv_mass, shape = self._prepare(q, mass, p)
        out = np.empty(Q.shape[0])
        self._batch.tangency(Q, P, inv_mass, self.codim(Q.shape[1]), out)
        return out.reshape(shape[:-1])

    def rattle(self, q, p, mass=None):
        """RATTLE: p projected onto the cotangent space at q (a new array)."""
        Q, P, inv_mass, shape = self._prepare(q, mass, p)
        status = np.zeros(Q.shape[0], dtype=np.int64)
        self._batch.rattle(Q, P, inv_mass, self.work_size(Q.shape[1]), status)
        self._raise_failed(status, "RATTLE: G M^-1 G^T is singular")
        return P.reshape(shape)

    def drift(self, q, p, delta, mass=None, steps=1):
        """A constrained drift over ``delta``: ``steps`` sub-steps of drift, SHAKE, RATTLE.

        Returns new arrays (q, p). Raises :class:`sdekit.DivergenceError` (``step``
        None, ``path`` the first failing row) if SHAKE does not converge.
        """
        Q, P, inv_mass, shape = self._prepare(q, mass, p)
        delta = real("delta", delta)
        if delta == 0.0:
            raise ValueError("delta: must be non-zero (SHAKE divides the multiplier by it), got 0.0")
        status = np.zeros(Q.shape[0], dtype=np.int64)
        self._batch.drift(Q, P, delta, inv_mass, integer("steps", steps, low=1),
                          self.work_size(Q.shape[1]), status)
        self._raise_failed(status, "SHAKE did not converge")
        return Q.reshape(shape), P.reshape(shape)

    def project(self, q):
        """The nearest-ish point of the manifold (closed form where there is one; else
        Gauss–Newton minimum-norm steps). Use it to put a q0 on the manifold."""
        Q, _, _, shape = self._prepare(q, None)
        status = np.zeros(Q.shape[0], dtype=np.int64)
        self._batch.project(Q, self.work_size(Q.shape[1]), status)
        self._raise_failed(status, "projection onto the manifold failed")
        return Q.reshape(shape)

    def _raise_failed(self, status, what):
        bad = np.flatnonzero(status < 0)
        if bad.size:
            raise DivergenceError(f"constraint {self!r}: {what} (path {int(bad[0])})",
                                  step=None, path=int(bad[0]))

    def _set_functions(self, key, make):
        self.per_path, self._batch = _compiled(key, make)


class Sphere(Manifold):
    r"""The sphere :math:`|q| = r` in :math:`\mathbb{R}^d` (the "magnitude" constraint).

    :math:`g(q) = (|q|^2 - r^2)/(2r)` (so :math:`|g| \approx ||q| - r|`), one
    constraint; SHAKE and RATTLE in closed form (see :func:`_sphere_functions`).

    Parameters
    ----------
    radius : float
        r > 0.
    dim : int, optional
        d (>= 2); default: that of the system it is used with.

    Examples
    --------
    >>> import numpy as np
    >>> s = Sphere(2.0)
    >>> float(s.residual(np.array([0.0, 2.0, 0.0]))) < 1e-15
    True
    """

    device_functions = True

    def __init__(self, radius=1.0, dim=None):
        self.radius = real("radius", radius, low=0.0, low_open=True)
        self.dim = None if dim is None else integer("dim", dim, low=2)
        self.scale = self.radius
        self._set_functions(("sphere", self.radius), lambda: _sphere_functions(self.radius))

    def codim(self, d):
        return 1

    def work_size(self, d):
        return 1

    def __repr__(self):
        return f"Sphere(radius={self.radius!r}" + ("" if self.dim is None else f", dim={self.dim}") + ")"


class Circle(Manifold):
    r"""Per-weight magnitude constraints with slack variables: :math:`w_i^2 + s_i^2 = r^2`.

    Leimkuhler, Pouchon & Vlaar (ICML 2021) bound each weight, :math:`|w_i| \le r`, by
    giving it a slack :math:`s_i` and constraining the pair to a circle. **The slacks
    are part of the state**: for n weights the system has d = 2n coordinates,
    ``q = (w_1, ..., w_n, s_1, ..., s_n)`` (weights first, then their slacks, in the
    same order), and the same for p. The potential depends on the weights only, so
    the system's gradient must write 0 into the slack components (or, if you want a
    potential on the slacks, their derivatives). Each pair is a circle of radius r in
    its plane: SHAKE is the sphere's closed-form root, RATTLE the projection onto the
    circle's tangent (G is block diagonal, so the pairs are independent).

    Parameters
    ----------
    radius : float
        r > 0: the bound on every weight.
    """

    device_functions = True

    def __init__(self, radius=1.0):
        self.radius = real("radius", radius, low=0.0, low_open=True)
        self.scale = self.radius
        self._set_functions(("circle", self.radius), lambda: _circle_functions(self.radius))

    def codim(self, d):
        if d % 2:
            raise ValueError(f"constraint: {self!r} needs an even number of coordinates "
                             f"(n weights, then n slacks), the system has {d}")
        return d // 2

    def work_size(self, d):
        return 1

    def __repr__(self):
        return f"Circle(radius={self.radius!r})"


class Stiefel(Manifold):
    r"""The Stiefel manifold :math:`W^TW = I_p` of n x p matrices (the "orthogonality" constraint).

    The state q is the row-major flattening of W (d = n p, ``W = q.reshape(n, p)``);
    m = p(p+1)/2 constraints (see :func:`_stiefel_g_jacobian`). SHAKE is Newton's
    method to ``tol`` (relative; the reference code of Leimkuhler, Pouchon & Vlaar
    uses a fixed number of fixed-point sweeps instead). With unit mass RATTLE is the
    orthogonal tangent projection :math:`P - W(W^TP + P^TW)/2`
    (:meth:`tangent_projection`).

    Parameters
    ----------
    n, p : int
        1 <= p <= n (p = n gives the orthogonal group).
    tol : float
        SHAKE tolerance on :math:`\max_{ij}|g_{ij}|` (default 1e-12).
    max_iter : int
        SHAKE's Newton iteration limit (default 50).
    """

    def __init__(self, n, p, tol=1e-12, max_iter=50):
        self.n = integer("n", n, low=1)
        self.p = integer("p", p, low=1)
        if self.p > self.n:
            raise ValueError(f"p: must be <= n = {self.n} (W^T W = I needs p orthonormal columns "
                             f"in R^n), got {p!r}")
        self.dim = self.n * self.p
        self.tol = real("tol", tol, low=0.0, low_open=True)
        self.max_iter = integer("max_iter", max_iter, low=1)
        m = self.p * (self.p + 1) // 2
        g, jac = _stiefel_g_jacobian(self.n, self.p)
        self._set_functions(("stiefel", self.n, self.p, self.tol, self.max_iter),
                            lambda: _newton_functions(g, jac, m, self.tol, self.max_iter))

    def codim(self, d):
        return self.p * (self.p + 1) // 2

    def check_dim(self, d, name="constraint"):
        if d != self.dim:
            raise ValueError(f"{name}: {self!r} acts on n p = {self.dim} coordinates, got {d}")
        return self.codim(d)

    def tangent_projection(self, W, P):
        """:math:`P - W(W^TP + P^TW)/2` for matrices W, P (n, p) (unit mass), or stacks of them
        (numpy arrays, or torch tensors; the torch optimizer's in-place RATTLE is
        :class:`sdekit.torch.manifolds.StiefelTensors`)."""
        if not (hasattr(W, "mT") and hasattr(P, "mT")):
            W, P = np.asarray(W, dtype=float), np.asarray(P, dtype=float)
        WtP = W.mT @ P
        return P - W @ (WtP + WtP.mT) / 2.0

    def __repr__(self):
        extra = "" if (self.tol, self.max_iter) == (1e-12, 50) else f", tol={self.tol!r}, max_iter={self.max_iter}"
        return f"Stiefel(n={self.n}, p={self.p}{extra})"


class Constraint(Manifold):
    r"""Your own constraint :math:`g: \mathbb{R}^d \to \mathbb{R}^m`.

    Parameters
    ----------
    g : callable ``g(q, out)``
        Writes g(q) (m,) for one configuration q (d,). Numba-jittable (plain loops
        and arithmetic, constants closed over).
    jacobian : callable ``jacobian(q, out)``
        Writes :math:`G = \partial g/\partial q` (m, d). Numba-jittable.
    m : int
        Number of constraints (1 <= m < d); the rows of G must be independent on
        the manifold.
    dim : int, optional
        d; default: that of the system.
    scale : float
        Natural size of g (default 1): SHAKE's tolerance is ``tol * scale``.
    tol, max_iter :
        SHAKE's Newton tolerance (relative to ``scale``, default 1e-12) and iteration
        limit (default 50).
    name : str
        For messages and for recognising a resumed run's settings.

    Examples
    --------
    An ellipse :math:`x^2/a^2 + y^2/b^2 = 1`:

    >>> a, b = 2.0, 1.0
    >>> def g(q, out):
    ...     out[0] = q[0] ** 2 / a ** 2 + q[1] ** 2 / b ** 2 - 1.0
    >>> def jac(q, out):
    ...     out[0, 0] = 2 * q[0] / a ** 2
    ...     out[0, 1] = 2 * q[1] / b ** 2
    >>> ellipse = Constraint(g, jac, m=1, name="ellipse")
    """

    def __init__(self, g, jacobian, m, dim=None, scale=1.0, tol=1e-12, max_iter=50, name=None):
        if not callable(g):
            raise ValueError(f"g: must be callable g(q, out), got {g!r}")
        if not callable(jacobian):
            raise ValueError(f"jacobian: must be callable jacobian(q, out), got {jacobian!r}")
        self.m = integer("m", m, low=1)
        self.dim = None if dim is None else integer("dim", dim, low=2)
        if self.dim is not None and self.m >= self.dim:
            raise ValueError(f"m: must be < dim = {self.dim}, got {m!r}")
        self.scale = real("scale", scale, low=0.0, low_open=True)
        self.tol = real("tol", tol, low=0.0, low_open=True)
        self.max_iter = integer("max_iter", max_iter, low=1)
        self.name = name or getattr(g, "__name__", "g")
        self._set_functions(None, lambda: _newton_functions(g, jacobian, self.m, self.tol * self.scale,
                                                            self.max_iter))

    def codim(self, d):
        return self.m

    def __repr__(self):
        return f"Constraint({self.name}, m={self.m}" + ("" if self.dim is None else f", dim={self.dim}") + ")"


# ----------------------------------------------------------------------------- driver support

def validate(constraint, system, scheme, dtype):
    """Check a ``constraint=`` argument against the system, scheme and dtype (ValueErrors
    name ``constraint``); returns it (or None)."""
    if constraint is None:
        return None
    if not isinstance(constraint, Manifold):
        raise ValueError(f"constraint: must be an sdekit.constraints Sphere, Stiefel, Circle or "
                         f"Constraint, got {constraint!r}")
    constraint.check_dim(system.dim)
    if scheme.overdamped:
        raise ValueError(f"constraint: overdamped scheme {scheme.word} does not support constraints; "
                         f"use an underdamped word such as BAOAB")
    if np.dtype(dtype) != np.float64:
        raise ValueError(f"constraint: constrained runs are float64 only (SHAKE's tolerance), "
                         f"got dtype {np.dtype(dtype).name}")
    return constraint


def check_start(spec, state):
    r"""Put a fresh state on the constraint: refuse a q0 off the manifold, project p0.

    The rule: q0 must lie on the manifold, :math:`|g(q_0)| \le` ``Q0_TOL * scale``
    (1e-8 relative) for every path, else ValueError naming ``q0`` and the residual
    (``constraint.project(q0)`` gives a point on it); p0 is replaced (in place) by its
    RATTLE projection onto the cotangent space at q0.
    """
    c = spec.constraint
    res = c.residual(state.q)
    worst = int(np.argmax(res))
    if not res[worst] <= Q0_TOL * c.scale:
        where = f" (path {worst})" if state.q.shape[0] > 1 else ""
        raise ValueError(f"q0: not on the constraint manifold of {c!r}: residual |g(q0)| = "
                         f"{res[worst]:.3g}{where} > {Q0_TOL * c.scale:.1g}; start on it, e.g. "
                         f"q0 = constraint.project(q0)")
    if state.p is not None:
        state.p[...] = c.rattle(state.q, state.p, spec.mass)
    return state


def project_momenta(spec, w, status):
    """RATTLE on the walker's momenta (in place); failing paths get status -1."""
    c = spec.constraint
    c._batch.rattle(w.q, w.p, spec.inv_mass, c.work_size(spec.dim), status)


def constrained_drift(spec, w, delta, status):
    """A(delta) on the walker: ``spec.scheme.geodesic_steps`` sub-steps of drift, SHAKE,
    RATTLE (in place on fresh copies of q and p); failing paths get status -1."""
    c = spec.constraint
    w.q = np.array(w.q, dtype=np.float64, order="C")
    w.p = np.array(w.p, dtype=np.float64, order="C")
    c._batch.drift(w.q, w.p, float(delta), spec.inv_mass, spec.scheme.geodesic_steps,
                   c.work_size(spec.dim), status)
