r"""EM and LM — whole overdamped steps for :math:`dq = F(q)\,dt + \sqrt{2k_BT}\,dW`.

* EM (Euler–Maruyama): :math:`q' = q + h F(q) + \sqrt{2 h k_BT}\,R`.
* LM (Leimkuhler–Matthews): :math:`q' = q + h F(q) + \sqrt{h k_BT/2}\,(R_n + R_{n+1})`
  (Leimkuhler, Matthews & Stoltz, IMA J. Numer. Anal. 36, 2016): exact stationary
  variance on harmonic potentials; the pending normal :math:`R_{n+1}` is carried in
  the state (``R``).

Both are named, not spelled (``Scheme("EM")``), use :math:`k_BT(t_n)`, and end with
the force at the new positions, :math:`F(q_{n+1}, t_{n+1})`.
"""
import numpy as np

from .base import Letter


class OverdampedStep(Letter):
    """What EM and LM share: a whole step that moves q with the force, one normal per coordinate
    and :math:`k_BT(t_n)`."""

    moves = ("q",)
    needs_force = True
    normals = 1
    coefficients = ("kT",)
    whole_step = True

    @staticmethod
    def torch_kT(x, t):
        """The optimizer's temperature: :math:`k_BT(t)`, or :math:`\\sigma_A^2/2` if ``sigma_A`` is set."""
        kT, sigma_A = x.at("kT", t), x.group["sigma_A"]   # kT(t) checked at t either way
        return kT if sigma_A is None else 0.5 * sigma_A ** 2


class EulerMaruyama(OverdampedStep):
    """EM: one Euler–Maruyama step of overdamped Langevin dynamics."""

    name = "EM"
    title = "Euler-Maruyama"
    update = "q' = q + h F + sqrt(2 h kT) R"
    reference = "Kloeden & Platen, Numerical Solution of SDEs, Springer 1992"

    carries_weight = True

    def numpy(self, x, k, delta, new_force):
        R = x.normals(x.w.q.shape)
        kT = x.coefficient("kT", 0)
        x.add_log_weight(R, np.sqrt(2.0 * delta * kT), 1.0, delta)   # Girsanov: m = h u / sqrt(2 h kT)
        # astype: sqrt of Python floats is a float64 scalar, which would promote float32 paths
        x.w.q = x.ops.euler_maruyama(x.w.q, x.w.F, delta, x.coefficient("kT", 0), R).astype(x.spec.dtype, copy=False)
        x.w.F = x.end_force()

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        r""":math:`T = I - hK`, :math:`Q = 2 h k_BT` on q."""
        return np.eye(K.shape[0]) - delta * K, np.diag(2.0 * delta * kT)

    # --- source(): the generated kernel's lines (sdekit.kernels.codegen)

    def source(self, g, k, delta, new_force):
        g.comment("q' = q + h F(q) + sqrt(2 h kT) R            (Euler-Maruyama)")
        kT = g.coefficient("kT", k)
        # Girsanov (sdekit.girsanov): m = h u(q) / sqrt(2 h kT)
        weight, add = g.log_weight(f"girsanov_increment({{u}}, {{z}}, math.sqrt(2.0 * {delta} * {kT}), 1.0, {delta})")
        g.each_normal(([weight] if weight else []) + [("q", "euler_maruyama(q[{j}], F[{j}], {delta}, {kT}, {z})")],
                      cast=True, delta=delta, kT=kT)
        g.line(*add)
        g.end_force()

    # --- torch(): the optimizer's update (sdekit.torch)

    def torch(self, x, delta, t):
        """q -= h grad L + sqrt(2 h kT) R (SGLD); kT = sigma_A^2 / 2 if ``sigma_A`` is set."""
        import torch
        kT = self.torch_kT(x, t)
        torch._foreach_add_(x.params, x.grads, alpha=-x.ops.scalar.euler_maruyama(0.0, 1.0, delta, kT, 0.0))
        a = x.ops.scalar.euler_maruyama(0.0, 0.0, delta, kT, 1.0)
        if a != 0.0:
            torch._foreach_add_(x.params, x.normals(x.params), alpha=a)


class LeimkuhlerMatthews(OverdampedStep):
    """LM: one Leimkuhler–Matthews step (non-Markovian in q; Markovian in (q, R_n))."""

    name = "LM"
    title = "Leimkuhler-Matthews"
    update = "q' = q + h F + sqrt(h kT/2)(R_n + R_n+1)"
    reference = "Leimkuhler, Matthews & Stoltz, IMA J. Numer. Anal. 36 (2016)"

    def numpy(self, x, k, delta, new_force):
        R = x.normals(x.w.q.shape)
        x.w.q = x.ops.leimkuhler_matthews(x.w.q, x.w.F, delta, x.coefficient("kT", 0), x.w.R,
                                          R).astype(x.spec.dtype, copy=False)
        x.w.R = R
        x.w.F = x.end_force()

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        r"""On y = (q, R_n): :math:`T = [[I - hK, a], [0, 0]]`,
        :math:`Q = [[a a^T, a], [a^T, I]]`, :math:`a = \mathrm{diag}(\sqrt{h k_BT/2})`."""
        d = K.shape[0]
        I = np.eye(d)
        a = np.diag(np.sqrt(0.5 * delta * kT))
        T = np.block([[I - delta * K, a], [np.zeros((d, d)), np.zeros((d, d))]])
        Q = np.block([[a @ a.T, a], [a.T, I]])
        return T, Q

    # --- source(): the generated kernel's lines (sdekit.kernels.codegen)

    def source(self, g, k, delta, new_force):
        g.comment("q' = q + h F(q) + sqrt(h kT/2) (R_n + R_n+1)   (Leimkuhler-Matthews)")
        g.each_normal([("q", "leimkuhler_matthews(q[{j}], F[{j}], {delta}, {kT}, R[{j}], {z})"), ("R", "{z}")],
                      cast=True, delta=delta, kT=g.coefficient("kT", k))
        g.end_force()

    # --- torch(): the optimizer's update (sdekit.torch)

    def torch(self, x, delta, t):
        """q -= h grad L + sqrt(h kT/2)(R_n + R_n+1), R_n kept in ``state[p]["noise"]`` (drawn at
        the first step); kT = sigma_A^2 / 2 if ``sigma_A`` is set."""
        import torch
        kT = self.torch_kT(x, t)
        states = x.states
        if "noise" not in states[0]:
            for st, r in zip(states, x.normals(x.params)):
                st["noise"] = r.clone()
        previous = [st["noise"] for st in states]
        torch._foreach_add_(x.params, x.grads,
                            alpha=-x.ops.scalar.leimkuhler_matthews(0.0, 1.0, delta, kT, 0.0, 0.0))
        a = x.ops.scalar.leimkuhler_matthews(0.0, 0.0, delta, kT, 1.0, 0.0)
        noise = x.normals(x.params)
        torch._foreach_add_(x.params, previous, alpha=a)
        torch._foreach_add_(x.params, noise, alpha=a)
        torch._foreach_copy_(previous, noise)


EM = EulerMaruyama()
LM = LeimkuhlerMatthews()
