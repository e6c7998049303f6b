r"""A — drift: :math:`q \leftarrow q + \delta M^{-1} p` (the exact flow of :math:`dq = M^{-1}p\,dt`).

The clock rides with A (:attr:`sdekit.schemes.Scheme.substep_times`); on a
constrained system A is followed by SHAKE and RATTLE, in ``geodesic_steps``
sub-steps (g-BAOAB; :mod:`sdekit.constraints`).
"""
import numpy as np

from .base import Letter


class Drift(Letter):
    """A: positions move with the momenta; the force goes stale."""

    name = "A"
    title = "drift"
    update = "q += ({f}) M^-1 p"
    moves = ("q",)
    clock = True
    constrained = True
    geodesic = True
    reversible = True
    shadow = "work"
    reference = "Leimkuhler & Matthews, Appl. Math. Res. Express 2013"

    def numpy(self, x, k, delta, new_force):
        if x.spec.constraint is None:
            x.w.q = x.ops.drift(x.w.q, x.w.p, delta, x.spec.inv_mass)
        else:
            x.constrained_drift(delta)

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        r""":math:`T = [[I, \delta M^{-1}], [0, I]]`, no noise."""
        d = K.shape[0]
        I, Z = np.eye(d), np.zeros((d, d))
        return np.block([[I, delta * np.diag(1.0 / mass)], [Z, I]]), np.zeros((2 * d, 2 * d))

    # --- source(): the generated kernel's lines (sdekit.kernels.codegen)

    def source(self, g, k, delta, new_force):
        g.comment(f"q += ({g.fraction(k)}) M^-1 p")
        if g.constraint is None:
            g.each("q", "drift(q[{j}], p[{j}], {delta}, inv_mass[{j}])", delta=delta)
            return
        # constrained (array form): drift, SHAKE onto g(q) = 0, RATTLE, in GEO geodesic sub-steps (g-BAOAB)
        geo = g.constraint.geodesic_steps
        sub = delta if geo == 1 else f"{delta} / GEO"
        body = [f"for j in range(D): qo[j] = q[j]; q[j] = drift(q[j], p[j], {sub}, inv_mass[j])",
                f"ok &= shake(qo, q, p, {sub}, inv_mass, work) >= 0     # SHAKE: q onto g(q) = 0",
                g.RATTLE]
        if geo == 1:
            g.line(*body)
        else:
            g.line("for _ in range(GEO):     # geodesic sub-steps (g-BAOAB)", *("    " + line for line in body))

    # --- torch(): the optimizer's update (sdekit.torch)

    def torch(self, x, delta, t):
        """q += delta p on the group's tensors (unit mass); on a manifold, the constraint's drift."""
        if x.constraint is None:
            import torch
            torch._foreach_add_(x.params, x.moms, alpha=x.ops.scalar.drift(0.0, 1.0, delta, 1.0))
        else:
            x.constrained_drift(delta)


LETTER = Drift()
