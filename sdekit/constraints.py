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
"""
import math
import types

import numba
import numpy as np

from ._checks import DivergenceError, finite_array, integer, real

Q0_TOL = 1e-8
"""A q0 (or a state handed to :func:`check_start`) must satisfy |g(q0)| <= Q0_TOL * scale."""


def _jit(f):
    return f if isinstance(f, numba.core.registry.CPUDispatcher) else numba.njit(f)


@numba.njit(cache=True)
def _solve(A, b, m):
    """Solve A x = b in place (b <- x) by Gaussian elimination with partial pivoting.

    Plain loops, for the small m x m systems of SHAKE and RATTLE. Returns False if a
    pivot is zero or not finite (singular :math:`G M^{-1} G^T`).
    """
    for k in range(m):
        piv = k
        big = abs(A[k, k])
        for i in range(k + 1, m):
            if abs(A[i, k]) > big:
                big = abs(A[i, k])
                piv = i
        if not (big > 0.0 and big < np.inf):
            return False
        if piv != k:
            for j in range(m):
                t = A[k, j]
                A[k, j] = A[piv, j]
                A[piv, j] = t
            t = b[k]
            b[k] = b[piv]
            b[piv] = t
        for i in range(k + 1, m):
            f = A[i, k] / A[k, k]
            for j in range(k, m):
                A[i, j] -= f * A[k, j]
            b[i] -= f * b[k]
    for k in range(m - 1, -1, -1):
        acc = b[k]
        for j in range(k + 1, m):
            acc -= A[k, j] * b[j]
        b[k] = acc / A[k, k]
    return True


# ----------------------------------------------------------------------------- per-path functions

def _newton_functions(g, jac, m, tol, max_iter):
    r"""RATTLE, SHAKE and projection for any g with Jacobian ``jac`` (m constraints).

    ``work`` holds, in order, G0 (m x d), G (m x d), A (m x m) and a vector (m).
    SHAKE is Newton's method on :math:`\lambda \mapsto g(\tilde q - M^{-1}G_0^T\lambda)`,
    whose Jacobian is :math:`-G(q) M^{-1} G_0^T`; it converges quadratically from
    :math:`\lambda = 0` for small steps.
    """
    g, jac = _jit(g), _jit(jac)

    @numba.njit
    def rattle(q, p, inv_mass, work):
        d = q.shape[0]
        G = work[m * d:2 * m * d].reshape((m, d))
        A = work[2 * m * d:2 * m * d + m * m].reshape((m, m))
        b = work[2 * m * d + m * m:2 * m * d + m * m + m]
        jac(q, G)
        for i in range(m):
            acc = 0.0
            for k in range(d):
                acc += G[i, k] * inv_mass[k] * p[k]
            b[i] = acc
            for j in range(m):
                acc = 0.0
                for k in range(d):
                    acc += G[i, k] * inv_mass[k] * G[j, k]
                A[i, j] = acc
        if not _solve(A, b, m):
            return False
        for k in range(d):
            acc = 0.0
            for i in range(m):
                acc += G[i, k] * b[i]
            p[k] -= acc
        return True

    @numba.njit
    def shake(q_old, q, p, delta, inv_mass, work):
        d = q.shape[0]
        G0 = work[0:m * d].reshape((m, d))
        G = work[m * d:2 * m * d].reshape((m, d))
        A = work[2 * m * d:2 * m * d + m * m].reshape((m, m))
        gv = work[2 * m * d + m * m:2 * m * d + m * m + m]
        jac(q_old, G0)
        for it in range(max_iter + 1):
            g(q, gv)
            err = 0.0
            for i in range(m):
                err = max(err, abs(gv[i]))
            if err <= tol:
                return it
            if not err < np.inf or it == max_iter:
                return -1
            jac(q, G)
            for i in range(m):
                for j in range(m):
                    acc = 0.0
                    for k in range(d):
                        acc += G[i, k] * inv_mass[k] * G0[j, k]
                    A[i, j] = acc
            if not _solve(A, gv, m):
                return -1
            for k in range(d):
                acc = 0.0
                for i in range(m):
                    acc += G0[i, k] * gv[i]
                q[k] -= inv_mass[k] * acc
                p[k] -= acc / delta
        return -1

    @numba.njit
    def project(q, work):
        # Gauss-Newton minimum-norm steps q <- q - G^T (G G^T)^-1 g(q)
        d = q.shape[0]
        G = work[m * d:2 * m * d].reshape((m, d))
        A = work[2 * m * d:2 * m * d + m * m].reshape((m, m))
        gv = work[2 * m * d + m * m:2 * m * d + m * m + m]
        for it in range(max_iter + 1):
            g(q, gv)
            err = 0.0
            for i in range(m):
                err = max(err, abs(gv[i]))
            if err <= tol:
                return it
            if not err < np.inf or it == max_iter:
                return -1
            jac(q, G)
            for i in range(m):
                for j in range(m):
                    acc = 0.0
                    for k in range(d):
                        acc += G[i, k] * G[j, k]
                    A[i, j] = acc
            if not _solve(A, gv, m):
                return -1
            for k in range(d):
                acc = 0.0
                for i in range(m):
                    acc += G[i, k] * gv[i]
                q[k] -= acc
        return -1

    return types.SimpleNamespace(g=g, jacobian=jac, rattle=rattle, shake=shake, project=project)


def _sphere_functions(r):
    r"""|q| = r with :math:`g(q) = (|q|^2 - r^2)/(2r)`, :math:`G = q^T/r`: closed forms.

    RATTLE: :math:`p \leftarrow p - q\,(q^T M^{-1} p)/(q^T M^{-1} q)`.
    SHAKE: :math:`|\tilde q - \lambda M^{-1} q_0|^2 = r^2` is the quadratic
    :math:`a\lambda^2 - 2b\lambda + c = 0` with :math:`a = |M^{-1}q_0|^2`,
    :math:`b = \tilde q^T M^{-1} q_0`, :math:`c = |\tilde q|^2 - r^2`; the root nearest
    zero, :math:`\lambda = c / (b + \sqrt{b^2 - ac})`, written to avoid cancellation
    (no real root, or b <= 0: the step is too large, SHAKE fails).
    """

    @numba.njit
    def g(q, out):
        s = 0.0
        for i in range(q.shape[0]):
            s += q[i] * q[i]
        out[0] = (s - r * r) / (2.0 * r)

    @numba.njit
    def jac(q, out):
        for i in range(q.shape[0]):
            out[0, i] = q[i] / r

    @numba.njit
    def rattle(q, p, inv_mass, work):
        qq = 0.0
        qp = 0.0
        for i in range(q.shape[0]):
            qq += q[i] * inv_mass[i] * q[i]
            qp += q[i] * inv_mass[i] * p[i]
        if not qq > 0.0:
            return False
        x = qp / qq
        for i in range(q.shape[0]):
            p[i] -= x * q[i]
        return True

    @numba.njit
    def shake(q_old, q, p, delta, inv_mass, work):
        a = 0.0
        b = 0.0
        c = 0.0
        for i in range(q.shape[0]):
            u = inv_mass[i] * q_old[i]
            a += u * u
            b += q[i] * u
            c += q[i] * q[i]
        c -= r * r
        disc = b * b - a * c
        if not (disc >= 0.0 and b > 0.0):
            return -1
        lam = c / (b + math.sqrt(disc))
        for i in range(q.shape[0]):
            q[i] -= lam * inv_mass[i] * q_old[i]
            p[i] -= lam * q_old[i] / delta
        return 1

    @numba.njit
    def project(q, work):
        s = 0.0
        for i in range(q.shape[0]):
            s += q[i] * q[i]
        if not s > 0.0:
            return -1
        s = r / math.sqrt(s)
        for i in range(q.shape[0]):
            q[i] *= s
        return 1

    return types.SimpleNamespace(g=g, jacobian=jac, rattle=rattle, shake=shake, project=project)


def _circle_functions(r):
    r"""One circle :math:`w_i^2 + s_i^2 = r^2` per pair :math:`(q_i, q_{n+i})`: the sphere
    formulas of :func:`_sphere_functions` in each plane (G is block diagonal)."""

    @numba.njit
    def g(q, out):
        n = q.shape[0] // 2
        for i in range(n):
            out[i] = (q[i] * q[i] + q[n + i] * q[n + i] - r * r) / (2.0 * r)

    @numba.njit
    def jac(q, out):
        n = q.shape[0] // 2
        for i in range(n):
            for k in range(2 * n):
                out[i, k] = 0.0
            out[i, i] = q[i] / r
            out[i, n + i] = q[n + i] / r

    @numba.njit
    def rattle(q, p, inv_mass, work):
        n = q.shape[0] // 2
        for i in range(n):
            j = n + i
            qq = q[i] * inv_mass[i] * q[i] + q[j] * inv_mass[j] * q[j]
            qp = q[i] * inv_mass[i] * p[i] + q[j] * inv_mass[j] * p[j]
            if not qq > 0.0:
                return False
            x = qp / qq
            p[i] -= x * q[i]
            p[j] -= x * q[j]
        return True

    @numba.njit
    def shake(q_old, q, p, delta, inv_mass, work):
        n = q.shape[0] // 2
        for i in range(n):
            j = n + i
            ui = inv_mass[i] * q_old[i]
            uj = inv_mass[j] * q_old[j]
            a = ui * ui + uj * uj
            b = q[i] * ui + q[j] * uj
            c = q[i] * q[i] + q[j] * q[j] - r * r
            disc = b * b - a * c
            if not (disc >= 0.0 and b > 0.0):
                return -1
            lam = c / (b + math.sqrt(disc))
            q[i] -= lam * ui
            q[j] -= lam * uj
            p[i] -= lam * q_old[i] / delta
            p[j] -= lam * q_old[j] / delta
        return 1

    @numba.njit
    def project(q, work):
        n = q.shape[0] // 2
        for i in range(n):
            s = q[i] * q[i] + q[n + i] * q[n + i]
            if not s > 0.0:
                return -1
            s = r / math.sqrt(s)
            q[i] *= s
            q[n + i] *= s
        return 1

    return types.SimpleNamespace(g=g, jacobian=jac, rattle=rattle, shake=shake, project=project)


def _stiefel_g_jacobian(n, p):
    r"""Stiefel constraints on the row-major flattening q of W (n x p), W[k, l] = q[k p + l]:
    for i <= j (in the order (0,0), (0,1), ..., (1,1), ...),
    :math:`g_{ij} = (W^TW)_{ij}` (i < j) and :math:`g_{ii} = ((W^TW)_{ii} - 1)/2`, so that
    :math:`\partial g_{ij}/\partial W_{kl} = \delta_{li}W_{kj} + \delta_{lj}W_{ki}` (i < j)
    and :math:`\partial g_{ii}/\partial W_{kl} = \delta_{li} W_{ki}`."""

    def g(q, out):
        c = 0
        for i in range(p):
            for j in range(i, p):
                acc = 0.0
                for k in range(n):
                    acc += q[k * p + i] * q[k * p + j]
                out[c] = 0.5 * (acc - 1.0) if i == j else acc
                c += 1

    def jacobian(q, out):
        c = 0
        for i in range(p):
            for j in range(i, p):
                for k in range(n * p):
                    out[c, k] = 0.0
                for k in range(n):
                    if i == j:
                        out[c, k * p + i] = q[k * p + i]
                    else:
                        out[c, k * p + i] = q[k * p + j]
                        out[c, k * p + j] = q[k * p + i]
                c += 1

    return g, jacobian


def _batch_functions(f):
    """Compiled loops over paths (rows) running the per-path functions ``f``."""
    rattle, shake, project, g, jac = f.rattle, f.shake, f.project, f.g, f.jacobian

    @numba.njit
    def rattle_batch(Q, P, inv_mass, work_len, status):
        work = np.empty(work_len)
        for n in range(Q.shape[0]):
            if not rattle(Q[n], P[n], inv_mass, work):
                status[n] = -1

    @numba.njit
    def drift_batch(Q, P, delta, inv_mass, n_sub, work_len, status):
        # K geodesic sub-steps per path: drift delta/K, SHAKE, RATTLE
        work = np.empty(work_len)
        d = Q.shape[1]
        q_old = np.empty(d)
        sub = delta / n_sub
        for n in range(Q.shape[0]):
            q = Q[n]
            p = P[n]
            for _ in range(n_sub):
                for i in range(d):
                    q_old[i] = q[i]
                    q[i] += sub * inv_mass[i] * p[i]
                it = shake(q_old, q, p, sub, inv_mass, work)
                if it < 0:
                    status[n] = -1
                    break
                if not rattle(q, p, inv_mass, work):
                    status[n] = -1
                    break

    @numba.njit
    def project_batch(Q, work_len, status):
        work = np.empty(work_len)
        for n in range(Q.shape[0]):
            status[n] = project(Q[n], work)

    @numba.njit
    def g_batch(Q, out):
        for n in range(Q.shape[0]):
            g(Q[n], out[n])

    @numba.njit
    def tangency_batch(Q, P, inv_mass, m, out):
        d = Q.shape[1]
        G = np.empty((m, d))
        for n in range(Q.shape[0]):
            jac(Q[n], G)
            s = 0.0
            for i in range(m):
                acc = 0.0
                for k in range(d):
                    acc += G[i, k] * inv_mass[k] * P[n, k]
                s += acc * acc
            out[n] = math.sqrt(s)

    return types.SimpleNamespace(rattle=rattle_batch, drift=drift_batch, project=project_batch,
                                 g=g_batch, tangency=tangency_batch)


_COMPILED = {}


def _compiled(key, make):
    """Per-path and batch functions, compiled once per (kind, parameters) in a process."""
    if key is None:
        f = make()
        return f, _batch_functions(f)
    if key not in _COMPILED:
        f = make()
        _COMPILED[key] = (f, _batch_functions(f))
    return _COMPILED[key]


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
