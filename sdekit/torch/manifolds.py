r"""The tensor forms of the core's constraints, for the torch optimizer.

The core's :mod:`sdekit.constraints` objects (:class:`~sdekit.constraints.Sphere`,
:class:`~sdekit.constraints.Circle`, :class:`~sdekit.constraints.Stiefel`) say *which*
manifold a parameter group lives on; their per-path numba functions integrate numpy
systems. This module holds what the optimizer does with them on tensors: one class per
constraint, made by :func:`tensor_form`. One parameter tensor's position is a tuple q of
tensors (the parameter, then its slacks for Circle) and its momentum a tuple p of the
same shapes (unit mass); the methods act in place with torch's tensor operations:

``check(t)``
    raise ValueError naming ``constraint`` unless the constraint applies to tensor t;
``start(w)``
    move parameter w onto the manifold (in place), return the extra position tensors;
``dof(t)``
    degrees of freedom of t on the manifold (its coordinates, with the extra ones, less
    its constraints: the N of a thermostat, the tangent dimension);
``rattle(q, p)``
    RATTLE: project the momenta onto the tangent space at q (in place);
``drift(q, p, delta)``
    A(delta) on the manifold (in place); returns the SHAKE iterations, -1 on failure;
``residual(q)``
    :math:`\max_i |g_i(q)|` (a Python float).

References
----------
B. Leimkuhler, T. Pouchon and T. Vlaar, "Better training using weight-constrained
stochastic dynamics", ICML 2021 (Circle, Stiefel). B. Leimkuhler and C. Matthews,
Proc. R. Soc. A 472 (2016) 20160138 (geodesic drifts).
"""
import math

import torch

from ..constraints import Circle, Manifold, Sphere, Stiefel

__all__ = ["tensor_form", "SphereTensors", "CircleTensors", "StiefelTensors"]


class _RoundTensors:
    r"""The sphere-like forms (Sphere, Circle): the geodesic flow and RATTLE on spheres of
    radius r in the space of the tuple q, with ``_dot(a, b)`` the inner product
    :math:`a\cdot b` over the tuple's tensors (per circle for Circle, per tensor for Sphere)."""

    def __init__(self, constraint):
        self.constraint = constraint
        self.radius = constraint.radius

    def geodesic(self, q, p, delta):
        r"""The exact geodesic flow over ``delta`` (tangent momenta p, unit mass), in place:
        with :math:`\omega = |p|/r`, :math:`\theta = \omega\delta`,

        .. math::

            q \leftarrow q\cos\theta + p\,\frac{\sin\theta}{\omega}, \qquad
            p \leftarrow p\cos\theta - q\,\omega\sin\theta,

        a rotation in the plane of q and p (Leimkuhler & Matthews 2016: the geodesic drift
        that g-BAOAB approximates with SHAKE sub-steps). Then q is rescaled to radius r, a
        change by rounding errors only, which keeps them from accumulating over long runs."""
        r = self.radius
        omega = torch.sqrt(self._dot(p, p)) * (1.0 / r)
        theta = omega * delta
        cos, sin_over = torch.cos(theta), torch.sinc(theta * (1.0 / math.pi)) * delta
        omega_sin = omega * torch.sin(theta)
        for x, v in zip(q, p):
            x_new = torch.addcmul(x * cos, v, sin_over)
            v.mul_(cos).addcmul_(x, omega_sin, value=-1.0)
            x.copy_(x_new)
        scale = r / torch.sqrt(self._dot(q, q))
        for x in q:
            x.mul_(scale)
        return 1

    def rattle(self, q, p):
        r""":math:`p \leftarrow p - q\,(q\cdot p)/r^2` (q on the sphere of radius r)."""
        x = self._dot(q, p)
        for a, b in zip(q, p):
            b.addcmul_(x, a, value=-1.0 / self.radius ** 2)


class SphereTensors(_RoundTensors):
    """:class:`~sdekit.constraints.Sphere` on a tensor: the whole tensor is one vector,
    :math:`|w| = r`; A is the exact great-circle rotation."""

    def check(self, t):
        dim = self.constraint.dim
        if t.numel() < 2 or (dim is not None and t.numel() != dim):
            raise ValueError(f"constraint: {self.constraint!r} needs a tensor with "
                             f"{dim if dim is not None else '>= 2'} elements, got shape {tuple(t.shape)}")

    def start(self, w):
        """Rescale w to radius r (in place); no extra coordinates."""
        norm = float(w.norm())
        if not norm > 0.0:
            raise ValueError(f"params: cannot put a zero tensor on {self.constraint!r}")
        w.mul_(self.radius / norm)
        return ()

    def dof(self, t):
        return t.numel() - 1

    @staticmethod
    def _dot(a, b):
        return (a[0] * b[0]).sum()

    def drift(self, q, p, delta):
        return self.geodesic(q, p, delta)

    def residual(self, q):
        w = q[0].detach()
        return abs(float(((w * w).sum() - self.radius ** 2) / (2.0 * self.radius)))


class CircleTensors(_RoundTensors):
    r""":class:`~sdekit.constraints.Circle` on a tensor: a slack tensor s of w's shape,
    :math:`w_i^2 + s_i^2 = r^2`; q = (w, s), p = (p_w, p_s), one circle per element."""

    def check(self, t):
        return None

    def start(self, w):
        r"""Clamp w to [-r, r] (in place) and return its slack :math:`s = \sqrt{r^2 - w^2} \ge 0`."""
        r = self.radius
        w.clamp_(-r, r)
        return (torch.sqrt((r * r - w * w).clamp_min(0.0)),)

    def dof(self, t):
        return t.numel()          # n weights + n slacks - n circles

    @staticmethod
    def _dot(a, b):
        return torch.addcmul(a[0] * b[0], a[1], b[1])

    def drift(self, q, p, delta):
        r"""The exact rotation of every pair (w, s) with its momenta: the geodesic flow of
        :meth:`geodesic` in the plane, by the angle :math:`\varphi = \delta\,(w p_s -
        s p_w)/r^2` (angular velocity times delta), then (w, s) rescaled to radius r (a
        rounding-level change that keeps rounding errors from accumulating)."""
        (w, s), (pw, ps) = q, p
        phi = torch.addcmul(w * ps, s, pw, value=-1.0).mul_(delta / self.radius ** 2)
        cos, sin = torch.cos(phi), torch.sin(phi)
        for x, y in ((w, s), (pw, ps)):
            x_new = torch.addcmul(x * cos, y, sin, value=-1.0)
            y.mul_(cos).addcmul_(x, sin)
            x.copy_(x_new)
        scale = torch.rsqrt(self._dot(q, q)).mul_(self.radius)
        w.mul_(scale)
        s.mul_(scale)
        return 1

    def residual(self, q):
        w, s = (x.detach() for x in q)
        return float(((w * w + s * s - self.radius ** 2) / (2.0 * self.radius)).abs().max())


class StiefelTensors:
    r""":class:`~sdekit.constraints.Stiefel` on a tensor: a tensor of shape (..., n, p) is a
    stack of W with :math:`W^TW = I`; one of shape (..., p, n) a stack of their transposes
    (:math:`WW^T = I`, rows orthonormal)."""

    def __init__(self, constraint):
        self.constraint = constraint
        self.n, self.p = constraint.n, constraint.p

    def _oriented(self, t):
        shape = t.shape[-2:]
        if len(shape) == 2 and shape[0] == self.n and shape[1] == self.p:
            return t
        if len(shape) == 2 and shape[0] == self.p and shape[1] == self.n:
            return t.mT
        return None

    def check(self, t):
        if self._oriented(t) is None:
            raise ValueError(f"constraint: {self.constraint!r} needs tensors of shape (..., {self.n}, {self.p}) "
                             f"or (..., {self.p}, {self.n}), got shape {tuple(t.shape)}")

    def start(self, w):
        """Replace each W by its polar factor :math:`UV^T` (W = U S V^T), the nearest point of the
        manifold in the Frobenius norm (in place); no extra coordinates."""
        W = self._oriented(w)
        U, _, Vh = torch.linalg.svd(W, full_matrices=False)
        W.copy_(U @ Vh)
        return ()

    def dof(self, t):
        return t.numel() - (t.numel() // (self.n * self.p)) * self.p * (self.p + 1) // 2

    def _g(self, W):
        r"""max over the stack of :math:`\max_{i \le j} |g_{ij}|`, g as in the core's
        ``_stiefel_g_jacobian``: :math:`g = W^TW - I` with the diagonal halved."""
        R = W.mT @ W - torch.eye(self.p, dtype=W.dtype, device=W.device)
        R.diagonal(dim1=-2, dim2=-1).mul_(0.5)
        return R.abs().max()

    def rattle(self, q, p):
        r""":math:`P \leftarrow P - W(W^TP + P^TW)/2` (the core's ``tangent_projection``), in place."""
        W, P = self._oriented(q[0]), self._oriented(p[0])
        WtP = W.mT @ P
        P.sub_(W @ (WtP + WtP.mT), alpha=0.5)

    def drift(self, q, p, delta):
        r"""Drift, SHAKE, RATTLE. SHAKE: :math:`W = \tilde W - W_0\Lambda`,
        :math:`P \leftarrow P - W_0\Lambda/\delta` with :math:`\Lambda` symmetric (the
        multipliers :math:`G(q_0)^T\lambda` of the core's SHAKE), found by the fixed-point
        sweeps :math:`\Lambda \leftarrow \Lambda + (W^TW - I)/2` (the reference code's
        iteration; it contracts at rate :math:`O(\delta|W_0^TP|)`) until
        :math:`\max|W^TW - I| \le` ``tol`` (so :math:`\max|g| \le` tol; at least 16 units
        of rounding of the dtype) or ``max_iter`` sweeps (then -1)."""
        con = self.constraint
        W, P = self._oriented(q[0]), self._oriented(p[0])
        tol = max(con.tol, 16.0 * torch.finfo(W.dtype).eps)
        eye = torch.eye(self.p, dtype=W.dtype, device=W.device)
        W0 = W.clone()
        W.add_(P, alpha=delta)
        for it in range(con.max_iter + 1):
            R = torch.matmul(W.mT, W).sub_(eye)
            err = float(torch.linalg.vector_norm(R, ord=math.inf))
            if err <= tol:
                break
            if it == con.max_iter or not math.isfinite(err):
                return -1
            correction = W0 @ R
            W.sub_(correction, alpha=0.5)
            P.sub_(correction, alpha=0.5 / delta)
        self.rattle(q, p)
        return it

    def residual(self, q):
        return float(self._g(self._oriented(q[0].detach())))


_FORMS = {Sphere: SphereTensors, Circle: CircleTensors, Stiefel: StiefelTensors}


def tensor_form(constraint):
    """The tensor form of a core constraint (Sphere, Circle or Stiefel, or a subclass);
    ValueError naming ``constraint`` for any other value (a user's
    :class:`~sdekit.constraints.Constraint` has numba per-path functions only)."""
    if isinstance(constraint, Manifold):
        for kind in type(constraint).__mro__:
            if kind in _FORMS:
                return _FORMS[kind](constraint)
        raise ValueError(f"constraint: {constraint!r} has no tensor version; the torch optimizer takes "
                         f"Sphere, Circle or Stiefel")
    raise ValueError(f"constraint: must be None or an sdekit.constraints Sphere, Circle or Stiefel, "
                     f"got {constraint!r}")
