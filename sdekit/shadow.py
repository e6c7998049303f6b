r"""Shadow work, heat, and the near-equilibrium estimate of an integrator's KL divergence.

A Langevin splitting moves the total energy :math:`H(q, p) = U(q) + \tfrac12 p^T M^{-1} p`
in two ways. The O letters exchange heat with the bath,

.. math::

    Q = \sum_{\text{O letters}} \tfrac12\left(p'^T M^{-1} p' - p^T M^{-1} p\right),

and the deterministic letters (A, B, the Metropolis sub-word ``{ }``) would keep H
exactly if they were the exact Hamiltonian flow; the energy they do change is the
*shadow work*

.. math::

    W = H(x_n) - H(x_0) - Q,

(Sivak, Chodera & Crooks, "Using nonequilibrium fluctuation theorems to understand and
correct errors in equilibrium and nonequilibrium simulations of discrete Langevin
dynamics", Phys. Rev. X 3, 011007, 2013). Each letter says what its energy change counts
as (:attr:`sdekit.letters.Letter.shadow`: ``"heat"`` for O, ``"work"`` for A, B and the
brackets); ``shadow_work=True`` in :func:`sdekit.simulate` and :func:`sdekit.ensemble`
accumulates both per path, from step 0 of the chain (``State.work``, ``State.heat``;
``Trajectory.work``, ``.heat``; ``Ensemble.mean["work"]``, ``["heat"]``).

From work to KL divergence (Fass, Sivak, Crooks, Beauchamp, Leimkuhler & Chodera,
"Quantifying configuration-sampling error in Langevin simulations", Entropy 20, 318,
2018): start from equilibrium :math:`\pi \propto e^{-H/k_BT}`, run T steps (the forward
protocol, work :math:`w_F` in units of kT, arriving near the integrator's steady state
:math:`\rho`), then T more steps (the reverse protocol, :math:`w_R`) from that end state,
its momenta kept (phase space, :math:`\rho`) or redrawn from Maxwell–Boltzmann
(configuration space, :math:`\rho_q \, \pi(p)`). Near equilibrium

.. math::

    D_{KL}(\rho \,\|\, \pi) \approx \tfrac12\left(\langle w_F\rangle - \langle w_R\rangle\right),
    \qquad
    \sigma^2 = \frac{\mathrm{Var}\,w_F + \mathrm{Var}\,w_R - 2\,\mathrm{Cov}(w_F, w_R)}{4 N},

with N independent protocol pairs (their ``estimate_nonequilibrium_free_energy``, eqs. A1–A2
of Sivak et al.; :func:`sdekit.kl.near_equilibrium_kl`). On Gaussian targets the chain's stationary law is Gaussian with the
covariance of :func:`sdekit.linear.stationary_covariance`, so the KL divergence is known
exactly (:func:`~sdekit.kl.gaussian_kl`), which is how the estimate is tested. The estimate
lives in :mod:`sdekit.kl` (re-exported by :mod:`sdekit.analysis`); this module is the
bookkeeping the backends run, below the drivers.
"""
import numpy as np

from .system_base import potential_missing


def heat(kinetic_before, kinetic_after):
    r"""The heat of one O letter, :math:`\tfrac12(p'^T M^{-1} p' - p^T M^{-1} p)`, from the two
    :math:`p^T M^{-1} p` (the one place the bookkeeping is written: the ``--break-letter=W``
    test harness replaces it)."""
    return 0.5 * (kinetic_after - kinetic_before)


def check(spec):
    """ValueError naming what stops shadow work being defined for ``spec`` (None if it is)."""
    scheme = spec.scheme
    if scheme.overdamped:
        raise ValueError(f"shadow_work: the overdamped scheme {scheme.word} has no momenta, so no "
                         f"energy H(q, p) to split into work and heat")
    for letter in scheme.alphabet:
        if letter.shadow not in ("work", "heat"):
            raise ValueError(f"shadow_work: letter {letter.name!r} ({letter.title}) of {scheme.word} does not "
                             f"say whether its energy change is work or heat (Letter.shadow is "
                             f"{letter.shadow!r}: thermostat variables and user letters are not in the "
                             f"bookkeeping of Sivak, Chodera & Crooks)")
    if spec.constraint is not None:
        raise ValueError(f"shadow_work: on a constrained system RATTLE removes kinetic energy outside "
                         f"the letters' bookkeeping, got constraint={spec.constraint!r}")
    if spec.time_dependent:
        raise ValueError(f"shadow_work: needs a constant kT, gamma and force (a time-dependent spec "
                         f"does protocol work as well); {scheme.word} here depends on t")
    if spec.sigma_A is not None:
        raise ValueError(f"shadow_work: a driving noise sigma_A changes the temperature of O, so the "
                         f"heat is not exchanged with a bath at kT, got sigma_A={spec.sigma_A!r}")
    missing = potential_missing(spec.system)
    if missing is not None:
        raise ValueError(f"shadow_work: needs the system's potential U(q), and {spec.system!r} has none "
                         f"({missing}); pass custom(..., potential=...)")


def energy(spec, q, p):
    r""":math:`H = U(q) + \tfrac12 p^T M^{-1} p` of each path (float64, shape (n_paths,))."""
    U = np.asarray(spec.system.potential(q), dtype=np.float64).reshape(q.shape[0])
    return U + 0.5 * np.sum(np.asarray(p, dtype=np.float64) ** 2 / spec.mass, axis=1)
