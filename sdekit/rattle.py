r"""SHAKE and RATTLE on one path, compiled: the solvers and the manifolds' functions.

The numba building blocks behind :mod:`sdekit.constraints`, which holds the
user-facing classes (:class:`~sdekit.constraints.Sphere`,
:class:`~sdekit.constraints.Circle`, :class:`~sdekit.constraints.Stiefel`,
:class:`~sdekit.constraints.Constraint`), the driver glue and, in its docstring, the
mathematics and the contract of the per-path functions (``g``, ``jacobian``,
``rattle``, ``shake``, ``project``). This module holds:

* :func:`_solve`: Gaussian elimination with partial pivoting for the small m x m
  systems :math:`G M^{-1} G^T x = b` of SHAKE and RATTLE;
* :func:`_newton_functions`: the per-path functions for any g with Jacobian G
  (SHAKE by Newton's method on the multipliers, RATTLE by one linear solve, projection
  by Gauss-Newton minimum-norm steps);
* the closed forms of the sphere :math:`|q| = r` (:func:`_sphere_functions`) and of one
  circle per weight-slack pair (:func:`_circle_functions`), and the Stiefel
  constraints :math:`W^TW = I` with their Jacobian (:func:`_stiefel_g_jacobian`, solved
  by :func:`_newton_functions`);
* :func:`_batch_functions`: compiled loops over paths (rows) running a set of per-path
  functions, and :func:`_compiled`, a per-process cache of the built sets.

:mod:`sdekit.constraints` re-exports every name here; import them from there.
"""
import math
import types

import numba
import numpy as np


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
