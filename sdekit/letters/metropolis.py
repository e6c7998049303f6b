r"""``{`` and ``}`` — a Metropolis-adjusted sub-word: the letters between them are a proposal.

``O{BAB}O`` is generalised hybrid Monte Carlo (GHMC; Horowitz, Phys. Lett. B 268,
1991): ``{`` remembers the state and its energy
:math:`H(q, p) = U(q) + \tfrac12 p^T M^{-1} p`; the reversible, volume-preserving letters
between the braces (A, B and the group kicks B0, B1, ...) move it; ``}`` accepts the move
with probability :math:`\min(1, e^{-\Delta H/k_BT})`, and on rejection restores q, p and
the force and negates p (the momentum flip that makes the chain reversible: openmmtools'
convention, and Horowitz's). The exact stationary law is then
:math:`\propto e^{-H/k_BT}` whatever the step, and the acceptance rate measures the
discretisation error of the sub-word.

The uniform of the test is one slot of the path's normal stream,
:math:`u = \Phi(z)` of the slot's normal z, read from its bits without computing z
(:func:`sdekit.kernels.philox.uniform_of`). The runs count the accepted
proposals of each path since the run's start (``accepted``; :attr:`Trajectory.accepted`,
``Ensemble.mean["accepted"]``, :func:`sdekit.acceptance_rate`).

A brace word needs the system's potential (``potential``: a compiled ``energy(q)`` for
the kernels, every built-in system has one) and constant kT. References: Horowitz 1991;
Duane, Kennedy, Pendleton & Roweth, Phys. Lett. B 195 (1987) (HMC); Metropolis et al.,
J. Chem. Phys. 21 (1953).
"""
import numpy as np

from .base import Letter


class Bracket(Letter):
    """What ``{`` and ``}`` share: no linear map, no torch form (refused with the reason)."""

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        raise ValueError("scheme: a Metropolis-adjusted sub-word { } makes the chain nonlinear (the accept/reject "
                         "step depends on the state), so sdekit.linear has no exact Gaussian law for it; its "
                         "stationary law is exactly exp(-H/kT) (simulate it for the acceptance rate)")

    def torch(self, x, delta, t):
        raise ValueError("scheme: the torch optimizer does not run Metropolis-adjusted sub-words { }: the test "
                         "needs the full-batch loss at two points of every step (use an unadjusted word)")


class Open(Bracket):
    """``{``: remember q, p, the force and the energy H(q, p) for the test at ``}``."""

    name = "{"
    title = "propose"
    update = "remember (q, p, F) and H(q, p) = U(q) + p.M^-1 p / 2"
    bracket = "open"
    constrained = False
    reference = "Horowitz, Phys. Lett. B 268 (1991)"

    def numpy(self, x, k, delta, new_force):
        w = x.w
        # F is copied: a group kick writes its columns in place (q and p are replaced, not written)
        w.saved = (w.q, w.p, w.F.copy(), x.ops.hamiltonian(x.potential(w.q), x.kinetic()))

    def source(self, g, k, delta, new_force):
        g.comment("remember (q, p, F) and H(q, p) for the Metropolis test")
        g.save(("q", "p", "F"))
        if g.scheme.potential_evaluations[k]:   # q moved since U was last known
            g.line(f"U = {g.potential()}")
        g.line("H0 = hamiltonian(U, kinetic(p, inv_mass))     # U: the path's U(q), carried")


class Close(Bracket):
    r"""``}``: the Metropolis test of the proposal on :math:`\Delta H`; on rejection q, p and F
    are restored and p negated."""

    name = "}"
    title = "accept"
    update = "accept if u < exp(-(H(q, p) - H0) / kT); else (q, p, F) = (q0, -p0, F0)"
    moves = ("q", "p")
    keeps_force = True
    uniforms = 1
    bracket = "close"
    constrained = False
    reference = "Horowitz, Phys. Lett. B 268 (1991); openmmtools GHMCIntegrator"

    def numpy(self, x, k, delta, new_force):
        w = x.w
        q0, p0, F0, H0 = w.saved
        H1 = x.ops.hamiltonian(x.potential(w.q), x.kinetic())
        u = x.uniform()   # Phi(z): one slot of the stream
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):   # kT = 0: dH / 0
            accept = x.ops.metropolis(u, H1 - H0, x.spec.kT)
        reject = ~accept
        w.q, w.p, w.F = (np.where(reject[:, None], old, new) for old, new in ((q0, w.q), (-p0, w.p), (F0, w.F)))
        w.accepted = w.accepted + accept
        w.saved = None

    def source(self, g, k, delta, new_force):
        g.comment("Metropolis test on H(q, p) - H0; rejected: (q, p, F) = (q0, -p0, F0)")
        g.uniform("u")
        g.line(f"U1 = {g.potential()}",
               "H1 = hamiltonian(U1, kinetic(p, inv_mass))")
        g.accept("metropolis(u, H1 - H0, kT)", ("q", "p", "F"), negate=("p",))


OPEN, CLOSE = Open(), Close()
