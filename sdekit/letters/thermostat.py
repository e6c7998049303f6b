r"""D — adaptive thermostat: :math:`\xi \leftarrow \xi + \delta\,\varepsilon\,(p^T M^{-1} p - N k_BT)`.

N is the number of degrees of freedom of the group (d, less the number of
constraints on a constrained system). The thermostat variable multiplies p in O,
so a word with D has no linear map (Jones & Leimkuhler, J. Chem. Phys. 135, 2011;
Leimkuhler & Shang, SIAM J. Sci. Comput. 38, 2016: BADODAB).
"""
from .base import Letter


class Thermostat(Letter):
    """D: the Nosé–Hoover–Langevin thermostat variable."""

    name = "D"
    title = "thermostat"
    update = "xi += ({f}) eps (p.M^-1 p - N kT)"
    moves = ("xi",)
    coefficients = ("kT",)
    constrained = True
    reference = "Leimkuhler & Shang, SIAM J. Sci. Comput. 38 (2016)"

    def numpy(self, x, k, delta, new_force):
        x.w.xi = x.ops.thermostat(x.w.xi, x.kinetic(), x.n_dof, x.coefficient("kT", k), x.spec.eps, delta)

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        raise ValueError("scheme: a D letter makes the chain nonlinear: the thermostat variable xi "
                         "multiplies p, so the chain has no exact Gaussian law")

    # --- source(): the generated kernel's lines (sdekit.kernels.codegen)

    def source(self, g, k, delta, new_force):
        g.comment(f"xi += ({g.fraction(k)}) eps (p.M^-1 p - N kT)")
        g.line(f"xi = DT(thermostat(xi, kinetic(p, inv_mass), {g.n_dof}, {g.coefficient('kT', k)}, eps, {delta}))"
               "   # in the storage type")

    # --- torch(): the optimizer's update (sdekit.torch)

    def torch(self, x, delta, t):
        """xi += delta eps (p.p - N kT), one xi per tensor (slack momenta count with their tensor)."""
        x.xi = x.ops.thermostat(x.xi, x.kinetic(), x.ndof, x.at("kT", t), x.group["eps"], delta)


LETTER = Thermostat()
