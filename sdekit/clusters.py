r"""Many-particle systems: Lennard-Jones clusters in a spherical wall.

An N-atom cluster in reduced units (:math:`\epsilon = \sigma = 1`, unit masses) has the
d = 3N positions :math:`q = (x_1, y_1, z_1, \dots, x_N, y_N, z_N)` and the potential

.. math::

    U(q) = \sum_{i<j} 4\left(r_{ij}^{-12} - r_{ij}^{-6}\right)
         + \sum_i \frac{k}{2}\,\bigl(|x_i| - R\bigr)^2\,\mathbf 1\{|x_i| > R\},
    \qquad r_{ij} = |x_i - x_j|,

a pair sum over all :math:`N(N-1)/2` pairs (no cut-off) and a harmonic wall of stiffness
k beyond the radius R about the origin, which keeps atoms from evaporating at finite
temperature (the wall is zero inside the sphere, so minima well inside it are those of the
free cluster). The wall is about the origin, not the centre of mass, so that it acts on each
atom alone (an external force, as OpenMM's ``CustomExternalForce`` writes it).

:meth:`LennardJones.minimum` gives the global minima of LJ-13 (the Mackay icosahedron,
:math:`U = -44.326801`) and LJ-38 (the fcc truncated octahedron, :math:`U = -173.928427`)
of Wales & Doye (1997), the Cambridge Cluster Database structures, constructed here (not
downloaded) and relaxed by L-BFGS.

References
----------
D. J. Wales and J. P. K. Doye, "Global optimization by basin-hopping and the lowest energy
structures of Lennard-Jones clusters containing up to 110 atoms", J. Phys. Chem. A 101,
5111-5116 (1997).
"""
import numpy as np
from scipy import optimize

from ._checks import integer, real
from .systems import System

KNOWN_MINIMA = {13: -44.326801, 38: -173.928427}
"""Global-minimum energies of LJ-N (Wales & Doye 1997) for the clusters :meth:`LennardJones.minimum` builds."""


class LennardJones(System):
    r"""An N-atom Lennard-Jones cluster in a harmonic spherical wall (d = 3N).

    .. math::

        U(q) = \sum_{i<j} 4\left(r_{ij}^{-12} - r_{ij}^{-6}\right)
             + \frac{k}{2}\sum_i \max(|x_i| - R, 0)^2,

    with :math:`\nabla_{x_i} U = \sum_{j\ne i} \bigl(24 r_{ij}^{-6} - 48 r_{ij}^{-12}\bigr)
    r_{ij}^{-2}\,(x_i - x_j) + k\,\max(|x_i| - R, 0)\,x_i/|x_i|`. ``gradient`` and ``energy``
    are plain loops over the pairs, O(N^2) per configuration, compiled by numba for the CPU
    kernels; ``grad`` and ``potential`` are numpy, vectorised over leading axes (an
    (..., N, N) pair table).

    Parameters
    ----------
    n_atoms : int
        N >= 2.
    wall_radius : float, optional
        R > 0; default :math:`1.5 + N^{1/3}` (3.85 for LJ-13, 4.86 for LJ-38: the minima,
        of radius 1.1 and 1.8, sit well inside).
    wall_stiffness : float
        k >= 0 (default 100; 0: no wall).

    Attributes
    ----------
    escape_bound : float
        2 R + 5: an atom that far out carries a wall energy :math:`k (R + 5)^2 / 2`, far
        above any temperature at which the cluster is simulated; a coordinate beyond it means
        the step blew up (typically two atoms stepped into each other's core).

    References
    ----------
    D. J. Wales and J. P. K. Doye, J. Phys. Chem. A 101, 5111 (1997).

    Examples
    --------
    >>> lj = LennardJones(13)
    >>> round(float(lj.potential(lj.minimum())), 6)
    -44.326801
    """

    def __init__(self, n_atoms, wall_radius=None, wall_stiffness=100.0):
        n = integer("n_atoms", n_atoms, low=2)
        R = 1.5 + n ** (1.0 / 3.0) if wall_radius is None else real("wall_radius", wall_radius, low=0.0, low_open=True)
        k = real("wall_stiffness", wall_stiffness, low=0.0)
        self.n_atoms, self.wall_radius, self.wall_stiffness = n, R, k
        self.dim = 3 * n
        self.escape_bound = 2.0 * R + 5.0
        self.name = f"LennardJones(n_atoms={n}, wall_radius={R:.6g}, wall_stiffness={k:.6g})"

        def gradient(q, out):
            for a in range(3 * n):
                out[a] = 0.0
            for i in range(n):
                xi = q[3 * i]
                yi = q[3 * i + 1]
                zi = q[3 * i + 2]
                for j in range(i + 1, n):
                    dx = xi - q[3 * j]
                    dy = yi - q[3 * j + 1]
                    dz = zi - q[3 * j + 2]
                    ir2 = 1.0 / (dx * dx + dy * dy + dz * dz)
                    ir6 = ir2 * ir2 * ir2
                    f = (24.0 * ir6 - 48.0 * ir6 * ir6) * ir2   # (dU/dr) / r
                    out[3 * i] += f * dx
                    out[3 * i + 1] += f * dy
                    out[3 * i + 2] += f * dz
                    out[3 * j] -= f * dx
                    out[3 * j + 1] -= f * dy
                    out[3 * j + 2] -= f * dz
                r = (xi * xi + yi * yi + zi * zi) ** 0.5
                if r > R:
                    c = k * (r - R) / r
                    out[3 * i] += c * xi
                    out[3 * i + 1] += c * yi
                    out[3 * i + 2] += c * zi

        def energy(q):
            acc = 0.0
            for i in range(n):
                xi = q[3 * i]
                yi = q[3 * i + 1]
                zi = q[3 * i + 2]
                for j in range(i + 1, n):
                    dx = xi - q[3 * j]
                    dy = yi - q[3 * j + 1]
                    dz = zi - q[3 * j + 2]
                    ir2 = 1.0 / (dx * dx + dy * dy + dz * dz)
                    ir6 = ir2 * ir2 * ir2
                    acc += 4.0 * (ir6 * ir6 - ir6)
                r = (xi * xi + yi * yi + zi * zi) ** 0.5
                if r > R:
                    acc += 0.5 * k * (r - R) * (r - R)
            return acc

        self.gradient, self.energy = gradient, energy

    # ------------------------------------------------------------------ numpy, vectorised

    def _atoms(self, q):
        q = np.asarray(q, dtype=float)
        if q.ndim < 1 or q.shape[-1] != self.dim:
            raise ValueError(f"q: must have last axis 3 * n_atoms = {self.dim} for {self.name}, got shape {q.shape}")
        return q.reshape(q.shape[:-1] + (self.n_atoms, 3))

    def _pairs(self, x):
        """Differences x_i - x_j (..., N, N, 3) and 1/r_ij^2 (..., N, N), zero on the diagonal."""
        diff = x[..., :, None, :] - x[..., None, :, :]
        r2 = np.einsum("...k,...k->...", diff, diff)
        eye = np.eye(self.n_atoms, dtype=bool)
        r2[..., eye] = 1.0
        ir2 = 1.0 / r2
        ir2[..., eye] = 0.0
        return diff, ir2

    def _wall(self, x):
        """Radii |x_i| (..., N) and the excess max(|x_i| - R, 0)."""
        r = np.sqrt(np.einsum("...k,...k->...", x, x))
        return r, np.maximum(r - self.wall_radius, 0.0)

    def potential(self, q):
        x = self._atoms(q)
        _, ir2 = self._pairs(x)
        ir6 = ir2 ** 3
        pair = 2.0 * np.sum(ir6 * ir6 - ir6, axis=(-2, -1))   # 4 (...) summed over i<j = half of all i != j
        _, excess = self._wall(x)
        return pair + 0.5 * self.wall_stiffness * np.sum(excess ** 2, axis=-1)

    def grad(self, q):
        x = self._atoms(q)
        diff, ir2 = self._pairs(x)
        ir6 = ir2 ** 3
        f = (24.0 * ir6 - 48.0 * ir6 * ir6) * ir2
        g = np.einsum("...ij,...ijk->...ik", f, diff)
        r, excess = self._wall(x)
        c = np.where(excess > 0, self.wall_stiffness * excess / np.where(r > 0, r, 1.0), 0.0)   # r > R > 0 there
        g = g + c[..., None] * x
        return g.reshape(np.shape(q))

    # ------------------------------------------------------------------ structures

    def minimum(self):
        r"""The global minimum of LJ-13 or LJ-38 (Wales & Doye 1997), shape (3N,), centred at the origin.

        LJ-13: the Mackay icosahedron, a centre atom and the 12 vertices
        :math:`(0, \pm 1, \pm\phi)` and their cyclic permutations, scaled to the best radius;
        LJ-38: the fcc truncated octahedron, the 6 + 8 + 24 fcc sites nearest an octahedral
        hole (shells at :math:`a/2`, :math:`\sqrt3\,a/2`, :math:`\sqrt5\,a/2`), scaled to the
        nearest-neighbour distance :math:`2^{1/6}`. Each is then relaxed by L-BFGS on the pair
        potential (gradient norm < 1e-10); the energies are -44.326801 and -173.928427
        (:data:`KNOWN_MINIMA`). The wall is zero there if R exceeds the cluster's radius
        (1.1 and 1.8), as the default does.

        Raises ValueError (naming ``n_atoms``) for other N.
        """
        if self.n_atoms not in KNOWN_MINIMA:
            raise ValueError(f"n_atoms: minimum() knows the global minima of LJ-13 and LJ-38, "
                             f"got n_atoms={self.n_atoms}")
        x = _icosahedron() if self.n_atoms == 13 else _truncated_octahedron()
        return _relax(x)


def _icosahedron():
    """Centre + 12 icosahedron vertices with the centre-vertex distance 1 (to be scaled and relaxed)."""
    phi = (1.0 + 5.0 ** 0.5) / 2.0
    v = []
    for s1 in (-1.0, 1.0):
        for s2 in (-1.0, 1.0):
            base = (0.0, s1, s2 * phi)
            for shift in range(3):
                v.append(base[-shift:] + base[:-shift] if shift else base)
    v = np.array(v) / np.hypot(1.0, phi)
    return np.vstack([np.zeros(3), v])


def _truncated_octahedron():
    """The 38 fcc sites nearest an octahedral hole, nearest neighbours at distance 1."""
    m = np.arange(-3, 4)
    pts = np.array(np.meshgrid(m, m, m, indexing="ij")).reshape(3, -1).T
    pts = pts[pts.sum(axis=1) % 2 == 0].astype(float)      # fcc in units of a/2
    pts -= np.array([1.0, 0.0, 0.0])                      # an octahedral hole at the origin
    r2 = np.einsum("ik,ik->i", pts, pts)
    pts = pts[r2 <= 5.0 + 1e-9]                           # shells r^2 = 1 (6), 3 (8), 5 (24)
    if len(pts) != 38:
        raise AssertionError(f"the truncated octahedron has {len(pts)} sites, not 38")
    return pts / 2.0 ** 0.5                               # nearest-neighbour distance a/sqrt2 -> 1


def _pair_energy_grad(flat):
    """Pair energy and gradient of a flat configuration (no wall), for the relaxation."""
    x = flat.reshape(-1, 3)
    n = len(x)
    diff = x[:, None, :] - x[None, :, :]
    r2 = np.einsum("ijk,ijk->ij", diff, diff) + np.eye(n)
    ir6 = (1.0 / r2) ** 3
    np.fill_diagonal(ir6, 0.0)
    e = 2.0 * np.sum(ir6 * ir6 - ir6)
    f = (24.0 * ir6 - 48.0 * ir6 * ir6) / r2
    return e, np.einsum("ij,ijk->ik", f, diff).ravel()


def _relax(x):
    """Scale ``x`` to its best size, relax it by L-BFGS and centre it at the origin: (3N,)."""
    x = np.asarray(x, dtype=float)
    scale = optimize.minimize_scalar(lambda s: _pair_energy_grad(s * x.ravel())[0], bounds=(0.8, 1.4),
                                     method="bounded").x
    res = optimize.minimize(_pair_energy_grad, scale * x.ravel(), jac=True, method="L-BFGS-B",
                            options=dict(gtol=1e-12, ftol=1e-16, maxiter=5000))
    y = res.x.reshape(-1, 3)
    y -= y.mean(axis=0)
    return y.ravel()


def lennard_jones(n_atoms, wall_radius=None, wall_stiffness=100.0):
    """An N-atom Lennard-Jones cluster in a spherical wall: :class:`LennardJones` (see there).

    >>> lj = lennard_jones(38)
    >>> lj.dim
    114
    """
    return LennardJones(n_atoms, wall_radius=wall_radius, wall_stiffness=wall_stiffness)
