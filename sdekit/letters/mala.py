r"""MALA — the Metropolis-adjusted Langevin algorithm: an Euler–Maruyama proposal, then a test.

.. math::

    y = q + h F(q) + \sqrt{2 h k_BT}\,R, \qquad
    \text{accept with probability}\ \min\Big(1,\ \frac{e^{-U(y)/k_BT}\, g(q \mid y)}
    {e^{-U(q)/k_BT}\, g(y \mid q)}\Big),

:math:`g(y \mid q) \propto e^{-|y - q - hF(q)|^2/(4hk_BT)}` the proposal density
(:func:`sdekit.operators.mala_correction`); on rejection q and F stay. The chain is then
exactly reversible with respect to :math:`e^{-U/k_BT}` at any h (Roberts & Tweedie,
Bernoulli 2, 1996; Rossky, Doll & Friedman, J. Chem. Phys. 69, 1978, "smart Monte Carlo").

Named, not spelled (``Scheme("MALA")``). Draws d normals and then one uniform (one slot of
the normal stream, :func:`sdekit.kernels.philox.uniform`) per step, and needs the system's
potential. The accepted proposals are counted as for ``{ }`` (:mod:`sdekit.letters.metropolis`).
"""
import numpy as np

from .overdamped import OverdampedStep


class MALA(OverdampedStep):
    """MALA: one Euler–Maruyama proposal and its Metropolis–Hastings test."""

    name = "MALA"
    title = "MALA"
    update = "y = q + h F + sqrt(2 h kT) R; accept on U(y) - U(q) and g(q|y)/g(y|q)"
    uniforms = 1
    coefficients = ()
    reference = "Roberts & Tweedie, Bernoulli 2 (1996)"

    def numpy(self, x, k, delta, new_force):
        w, kT = x.w, x.spec.kT
        q0, F0, U0 = w.q, w.F, x.potential(w.q)
        R = x.normals(q0.shape)
        w.q = x.ops.euler_maruyama(q0, F0, delta, kT, R).astype(x.spec.dtype, copy=False)
        w.F = x.end_force()
        u = x.uniform()   # one slot of the stream, as Phi(z)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):   # kT = 0: dH / 0
            S = np.sum(x.ops.mala_correction(q0, w.q, F0, w.F, delta), axis=1)
            accept = x.ops.metropolis(u, x.potential(w.q) - U0 + S / (4.0 * delta), kT)
        reject = ~accept[:, None]
        w.q, w.F = np.where(reject, q0, w.q), np.where(reject, F0, w.F)
        w.accepted = w.accepted + accept

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        raise ValueError("scheme: MALA's accept/reject step makes the chain nonlinear, so sdekit.linear has no "
                         "exact Gaussian law for it; its stationary law is exactly exp(-U/kT)")

    def source(self, g, k, delta, new_force):
        g.comment("y = q + h F(q) + sqrt(2 h kT) R, then the Metropolis-Hastings test")
        g.save(("q", "F"))
        g.line("U0 = U     # the path's U(q), carried")
        g.each_normal([("q", "euler_maruyama(q[{j}], F[{j}], {delta}, kT, {z})")], cast=True, delta=delta)
        g.end_force()
        g.uniform("u")
        g.line(f"U1 = {g.potential()}")
        g.reduce("S", "mala_correction(q0[{j}], q[{j}], F0[{j}], F[{j}], {delta})", delta=delta)
        g.accept(f"metropolis(u, U1 - U0 + S / (4.0 * {delta}), kT)", ("q", "F"))

    def torch(self, x, delta, t):
        raise ValueError("scheme: the torch optimizer does not run MALA: its test needs the full-batch loss at "
                         "two points of every step (use 'EM' or 'LM')")


MALA = MALA()
