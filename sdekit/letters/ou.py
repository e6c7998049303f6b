r"""O — Ornstein–Uhlenbeck: :math:`p \leftarrow c\,p + s M^{1/2} R` over :math:`\delta`, friction :math:`\gamma + \xi`.

The exact flow of :math:`dp = -(\gamma + \xi) p\,dt + \sigma M^{1/2} dW` with
:math:`c = e^{-G\delta}`, :math:`s = \sigma\sqrt{(1 - c^2)/(2G)}`, :math:`G = \gamma + \xi`
(:func:`sdekit.operators.ou_coefficients`), :math:`\sigma = \sqrt{2\gamma k_BT}`
unless a driving noise :math:`\sigma_A` is set. One standard normal per coordinate.
The momentum right after the word's last O is recorded as ``p_O``.
"""
import numpy as np

import math

from .base import Letter


def ou_shift(friction, delta):
    r""":math:`b = (1 - e^{-G\delta})/G`: the shift of p per unit of a force held fixed over an O step
    of friction G (:math:`b = \delta` for G = 0), the target O of a change of drift
    :math:`p' = c p + b u(q) + s M^{1/2} z^*` (:mod:`sdekit.girsanov`). Scalar arithmetic, compiled
    for the kernels."""
    x = friction * delta
    if x == 0.0:
        return delta
    return -math.expm1(-x) / friction


def increment(u, z, s, sqrt_mass, b):
    r"""One coordinate's Girsanov increment :math:`m z - m^2/2`, :math:`m = b u/(s \sqrt{M})`: the log
    ratio of the target's to the proposal's density of the normal z the letter drew
    (:mod:`sdekit.girsanov`; EM: b = h, s = sqrt(2 h kT), M = 1)."""
    m = b * u / (s * sqrt_mass)
    return m * z - 0.5 * m * m


class OU(Letter):
    """O: exact Ornstein–Uhlenbeck flow of the momenta."""

    name = "O"
    title = "OU"
    update = "p = c p + s M^1/2 R,  c = exp(-(gamma + xi) ({f}))"
    moves = ("p",)
    normals = 1
    records = (("p_O", "p"),)
    coefficients = ("gamma", "sigma")
    constrained = True
    shadow = "heat"
    reference = "Leimkuhler & Matthews, Appl. Math. Res. Express 2013; Bussi & Parrinello, PRE 75, 2007"

    carries_weight = True

    def numpy(self, x, k, delta, new_force):
        gamma, sigma = x.coefficient("gamma", k), x.coefficient("sigma", k)
        c, s = x.ops.ou_coefficients(gamma + x.w.xi[:, None], delta, sigma)
        z = x.normals(x.w.p.shape)
        if x.spec.drift_change is not None:   # Girsanov: the target's O adds b u(q), b = (1 - c) / G
            G = np.asarray(gamma + x.w.xi, dtype=np.float64)[:, None]   # ou_shift on every path at once
            with np.errstate(divide="ignore", invalid="ignore"):
                b = np.where(G * delta == 0.0, delta, -np.expm1(-G * delta) / G)
            x.add_log_weight(z, s, x.spec.sqrt_mass, b)
        x.w.p = x.ops.ou(x.w.p, c, s, x.spec.sqrt_mass, z)

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        r""":math:`T = \mathrm{diag}(I, C)`, noise :math:`\mathrm{diag}(0, S M S)`, with C, S
        from :func:`sdekit.operators.ou_coefficients` per coordinate (gamma, kT may be (d,))."""
        d = K.shape[0]
        I, Z = np.eye(d), np.zeros((d, d))
        c, s = ops.ou_coefficients(gamma, delta, np.sqrt(2.0 * gamma * kT))
        c, s = np.broadcast_to(c, (d,)), np.broadcast_to(s, (d,))
        T = np.block([[I, Z], [Z, np.diag(c)]])
        Q = np.block([[Z, Z], [Z, np.diag(s * s * mass)]])
        return T, Q

    # --- source(): the generated kernel's lines (sdekit.kernels.codegen)

    def source(self, g, k, delta, new_force):
        g.comment(f"p = c p + s M^1/2 R over ({g.fraction(k)}), friction gamma + xi")
        if g.time_dependent or g.adaptive:  # gamma(t), sigma(t) at the letter's clock time; friction gamma + xi
            gamma, sigma = g.coefficient("gamma", k), g.coefficient("sigma", k)
            g.line(f"c, s = ou_coefficients({gamma} + xi, {delta}, {sigma})", "c, s = DT(c), DT(s)")
        else:  # fixed along a path: computed once per path (ou_constants)
            g.line(f"c, s = {g.path_constants(('c', 's'), f'ou_coefficients(gamma + xi, {delta}, sigma)')}")
        weight, add = None, []
        if g.drift_change:   # Girsanov (sdekit.girsanov): the target's O adds b u(q), b = (1 - c) / G
            g.function(ou_shift, "ou_shift")
            g.line(f"b = {g.path_constants(('b',), f'ou_shift(gamma + xi, {delta})')}")
            weight, add = g.log_weight("girsanov_increment({u}, {z}, s, sqrt_mass[{j}], b)")
        g.each_normal(([weight] if weight else []) + [("p", "ou(p[{j}], c, s, sqrt_mass[{j}], DT({z}))")])
        g.line(*add)

    # --- torch(): the optimizer's update (sdekit.torch)

    def torch(self, x, delta, t):
        r"""p = c p + s R on the momenta and slack momenta, R from one draw of normals
        (:meth:`~sdekit.torch.context.Letters.ou_update`).

        :math:`\sigma = \sqrt{2\gamma k_BT}` unless ``sigma_A`` is set; ``gamma = inf``
        redraws :math:`p = \sqrt{k_BT} R`. With thermostat variables (a D in the word)
        the friction is :math:`\gamma + \xi` per tensor: (c, s) are computed on the
        device and reused while xi is unchanged."""
        import math
        gamma, kT, sigma_A = x.at("gamma", t), x.at("kT", t), x.group["sigma_A"]
        moms = x.all_moms
        sigma = sigma_A if sigma_A is not None else math.sqrt(2.0 * gamma * kT) if math.isfinite(gamma) else None
        if x.xi is not None:
            def per_tensor():
                c, s = x.tops.ou_coefficients(gamma + x.xi, delta, sigma)
                return list(c.unbind()), list(s.unbind())

            c, s = x.xi_cached(self.name, (delta, gamma, sigma, x.ops.ou_coefficients), per_tensor)
            if len(moms) > len(c):  # slack momenta share their tensor's xi
                c, s = [c[i] for i in x.owner], [s[i] for i in x.owner]
            x.ou_update(moms, c, s)
            return

        def scalars():
            if math.isinf(gamma):
                # the limit gamma -> inf of O: p redrawn from N(0, kT). Its amplitude sqrt(kT) is
                # taken from ou_coefficients (the noise of a frictionless O with sigma = sqrt(kT)
                # over unit time, exactly sqrt(kT)), so that every random kick has one definition
                return 0.0, float(x.ops.ou_coefficients(0.0, 1.0, math.sqrt(kT))[1])
            return tuple(float(v) for v in x.ops.ou_coefficients(gamma, delta, sigma))

        c, s = x.memo((self.name, gamma, delta, sigma, kT, x.ops.ou_coefficients), scalars)
        x.ou_update(moms, c, s)

    # --- diffusion(): the sampler's piece (sdekit.diffusion.Splitting)

    diffusion_clock = True

    def diffusion(self, x, u, delta, t0, t1):
        """The exact flow of the forward SDE's linear piece from t0 down to t1 (``sde.o_letter``),
        with the letter's block of standard normals (none for the probability-flow ODE)."""
        return x.sde.o_letter(u, t0, t1, delta, x.normals(self.normals), x.w, x.lam)


LETTER = OU()
