r"""B — kick: :math:`p \leftarrow p + \delta F(q)`, :math:`F = -\nabla U` (may be a stochastic gradient).

The force is evaluated lazily: only when a letter that moves q has run since the
last evaluation (:attr:`sdekit.schemes.Scheme.evaluations`, first-same-as-last), at
the letter's clock time for a force F(q, t).
"""
import numpy as np

from .base import Letter


class Kick(Letter):
    """B: momenta kicked by the force."""

    name = "B"
    title = "kick"
    update = "p += ({f}) F(q)"
    moves = ("p",)
    needs_force = True
    constrained = True
    reference = "Leimkuhler & Matthews, Appl. Math. Res. Express 2013"

    def numpy(self, x, k, delta, new_force):
        if new_force:
            x.w.F = x.force(k)
        x.w.p = x.ops.kick(x.w.p, x.w.F, delta)

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        r""":math:`T = [[I, 0], [-\delta K, I]]` on :math:`U = q^T K q / 2`, no noise."""
        d = K.shape[0]
        I, Z = np.eye(d), np.zeros((d, d))
        return np.block([[I, Z], [-delta * K, I]]), np.zeros((2 * d, 2 * d))

    # --- source(): the generated kernel's lines (sdekit.kernels.codegen)

    def source(self, g, k, delta, new_force):
        g.comment(f"p += ({g.fraction(k)}) F(q)" + ("    [new force]" if new_force else ""))
        if new_force:
            g.force(k)
        g.each("p", "kick(p[{j}], F[{j}], {delta})", delta=delta)

    # --- torch(): the optimizer's update (sdekit.torch)

    def torch(self, x, delta, t):
        """p -= delta grad L, with the gradient of the step's shared evaluation (``x.grads``)."""
        import torch
        torch._foreach_add_(x.moms, x.grads, alpha=-x.ops.scalar.kick(0.0, 1.0, delta))

    # --- diffusion(): the sampler's piece (sdekit.diffusion.Splitting)

    def diffusion(self, x, u, delta, t0, t1):
        """The score kick u += delta F(u, t0) at frozen time, by one Euler step (the letter) or
        Heun's rule (``kick="heun"``: two score evaluations)."""
        F0 = x.sde.force(u, t0, x.score(u, t0), x.w, x.lam)
        if x.kick == "euler":
            return x.sde.kick(u, F0, delta)
        u1 = x.sde.kick(u, F0, delta)
        F1 = x.sde.force(u1, t0, x.score(u1, t0), x.w, x.lam)
        return x.sde.kick(u, 0.5 * (F0 + F1), delta)


LETTER = Kick()
