r"""B — kick: :math:`p \leftarrow p + \delta F(q)`, :math:`F = -\nabla U` (may be a stochastic gradient).

The force is evaluated lazily: only when a letter that moves q has run since the
last evaluation (:attr:`sdekit.schemes.Scheme.evaluations`, first-same-as-last), at
the letter's clock time for a force F(q, t).
"""
import numpy as np

from .base import Letter


class Kick(Letter):
    """B: momenta kicked by the force (``B0``, ``B1``, ...: by one force group, :class:`GroupKick`)."""

    name = "B"
    title = "kick"
    update = "p += ({f}) F(q)"
    moves = ("p",)
    needs_force = True
    constrained = True
    reversible = True
    grouped = True
    shadow = "work"
    reference = "Leimkuhler & Matthews, Appl. Math. Res. Express 2013"

    def in_group(self, group):
        """``B<group>``: the kick by force group ``group`` alone (one Letter per group)."""
        if group not in _GROUPS:
            _GROUPS[group] = GroupKick(group)
        return _GROUPS[group]

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


class GroupKick(Kick):
    r"""``B<g>``: :math:`p \leftarrow p + \delta F_g(q)`, the kick by force group g of a system
    :math:`U = \sum_g U_g` (:func:`sdekit.systems.split`), with its own lazily evaluated force.

    The letters of multiple time stepping (r-RESPA: Tuckerman, Berne & Martyna, J. Chem. Phys.
    97, 1992; openmmtools' ``V0``, ``V1``): ``"B1 (B0 A O A B0)^4 B1"`` kicks the slow group
    once per outer step and the fast one in an inner loop of four. Each group's force is
    cached on its own and evaluated only when q has moved since that group's last
    evaluation, so the slow force is evaluated once per outer step.
    """

    grouped = False
    builtin = True   # a built-in letter's form (not a user letter: no fingerprint of its code)

    def __init__(self, group):
        if isinstance(group, bool) or not isinstance(group, int) or group < 0:
            raise ValueError(f"group: a force group is an integer >= 0, got {group!r}")
        self.force_group = group
        self.name = f"B{group}"
        self.title = f"kick {group}"
        self.update = f"p += ({{f}}) F_{group}(q)"

    def numpy(self, x, k, delta, new_force):
        if new_force:
            x.group_force(self.force_group)
        x.w.p = x.ops.kick(x.w.p, x.force_of(self.force_group), delta)

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        r""":math:`T = [[I, 0], [-\delta K_g, I]]`, :math:`K_g` the Hessian of group g (``K.groups[g]``)."""
        groups = getattr(K, "groups", None)
        if groups is None or self.force_group >= len(groups):
            raise ValueError(f"hessian: letter {self.name!r} kicks with force group {self.force_group}; pass one "
                             f"Hessian per group (a list), got {len(groups) if groups else 1} group(s)")
        return Kick.linear_map(self, delta, groups[self.force_group], gamma, kT, mass, ops)

    def source(self, g, k, delta, new_force):
        g.comment(f"p += ({g.fraction(k)}) F_{self.force_group}(q)" + ("    [new force]" if new_force else ""))
        if new_force:
            g.force(k, self.force_group)
        g.each("p", "kick(p[{j}], {F}, {delta})", delta=delta, F=g.force_of(self.force_group))

    def torch(self, x, delta, t):
        raise ValueError(f"scheme: the torch optimizer has one gradient per step, not force groups; letter "
                         f"{self.name!r} kicks with group {self.force_group} (use B)")

    def diffusion(self, x, u, delta, t0, t1):
        raise ValueError(f"scheme: the diffusion samplers have one score, not force groups (letter {self.name!r})")


_GROUPS = {}
LETTER = Kick()
