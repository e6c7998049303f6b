"""sdekit.clusters: Lennard-Jones clusters in a wall (issue 18).

Forces against central differences of the energy, the known global minima of LJ-13 and
LJ-38 (Wales & Doye 1997), numpy against the compiled gradient, energy conservation of
velocity Verlet (second order in h, both backends), bad input, and (slow, when OpenMM is
installed) the mean potential energy of BAOAB against OpenMM's LangevinMiddleIntegrator.
"""
import math

import numba
import numpy as np
import pytest

import sdekit
from sdekit.clusters import KNOWN_MINIMA, LennardJones, lennard_jones


@pytest.fixture(scope="module")
def minima():
    return {n: LennardJones(n).minimum() for n in (13, 38)}


def _perturbed(system, x, scale, seed, outside=True):
    """x plus noise; with ``outside``, atom 1 pushed beyond the wall so the wall term is tested too."""
    y = x + scale * np.random.default_rng(seed).standard_normal(system.dim)
    if outside:
        a = y[3:6]
        y[3:6] = a / np.linalg.norm(a) * (system.wall_radius + 0.3)
    return y


def _central_differences(energy, q, step=1e-6):
    g = np.empty_like(q)
    for a in range(q.size):
        e = np.zeros_like(q)
        e[a] = step
        g[a] = (energy(q + e) - energy(q - e)) / (2 * step)
    return g


# ---------------------------------------------------------------------------- structures, forces

@pytest.mark.parametrize("n", [13, 38])
def test_the_constructed_minima_have_the_known_global_minimum_energies(n, minima):
    lj = LennardJones(n)
    x = minima[n]
    assert x.shape == (3 * n,)
    assert abs(lj.potential(x) - KNOWN_MINIMA[n]) < 1e-5
    assert np.abs(lj.grad(x)).max() < 1e-6                       # a stationary point
    assert np.linalg.norm(x.reshape(-1, 3), axis=1).max() < lj.wall_radius   # the wall is zero there
    assert np.allclose(x.reshape(-1, 3).mean(axis=0), 0, atol=1e-12)


@pytest.mark.parametrize("n", [13, 38])
def test_forces_are_central_differences_of_the_energy(n, minima):
    lj = LennardJones(n)
    y = _perturbed(lj, minima[n], 0.05, seed=n)
    fd = _central_differences(lj.potential, y)
    assert np.abs(lj.grad(y) - fd).max() < 1e-5 * max(1.0, np.abs(fd).max())


def test_the_finite_difference_check_catches_a_wrong_gradient(minima):
    """The check above can fail: a gradient with the 24 r^-6 term off by 1% does not pass it."""
    lj = LennardJones(13)
    y = _perturbed(lj, minima[13], 0.05, seed=3)
    x = y.reshape(-1, 3)
    diff = x[:, None] - x[None]
    r2 = np.einsum("ijk,ijk->ij", diff, diff) + np.eye(13)
    ir6 = 1 / r2 ** 3
    np.fill_diagonal(ir6, 0)
    wrong = np.einsum("ij,ijk->ik", (24.24 * ir6 - 48 * ir6 ** 2) / r2, diff).ravel()
    right = lj.grad(y)
    fd = _central_differences(lj.potential, y)
    assert np.abs(right - fd).max() < 1e-5 * np.abs(fd).max()
    assert np.abs(wrong - fd).max() > 1e-3 * np.abs(fd).max()


@pytest.mark.parametrize("n", [13, 38])
def test_the_compiled_gradient_and_energy_agree_with_numpy(n, minima):
    lj = LennardJones(n)
    gradient, energy = numba.njit(lj.gradient), numba.njit(lj.energy)
    out = np.empty(lj.dim)
    for seed in range(3):
        y = _perturbed(lj, minima[n], 0.05, seed=seed, outside=seed > 0)
        gradient(y, out)
        assert np.allclose(out, lj.grad(y), rtol=1e-12, atol=1e-10)
        assert math.isclose(energy(y), float(lj.potential(y)), rel_tol=1e-12, abs_tol=1e-10)


def test_numpy_forms_are_vectorised_over_leading_axes(minima):
    lj = LennardJones(13)
    ys = np.stack([_perturbed(lj, minima[13], 0.05, seed=s) for s in range(6)]).reshape(2, 3, 39)
    assert lj.grad(ys).shape == (2, 3, 39) and lj.potential(ys).shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert np.allclose(lj.grad(ys)[i, j], lj.grad(ys[i, j]), rtol=1e-13, atol=1e-12)
            assert math.isclose(lj.potential(ys)[i, j], lj.potential(ys[i, j]), rel_tol=1e-13)
    assert np.allclose(lj.force(ys), -lj.grad(ys))


def test_lennard_jones_builds_the_system_and_reports_its_settings():
    lj = lennard_jones(38, wall_radius=3.0, wall_stiffness=10)
    assert isinstance(lj, LennardJones) and lj.dim == 114 and lj.n_atoms == 38
    assert repr(lj) == "LennardJones(n_atoms=38, wall_radius=3, wall_stiffness=10)"
    assert lj.escape_bound == 11.0
    assert LennardJones(13).wall_radius == pytest.approx(1.5 + 13 ** (1 / 3))
    assert sdekit.clusters.LennardJones is LennardJones               # lazy submodule of sdekit


# ---------------------------------------------------------------------------- dynamics

@pytest.mark.parametrize("word", ["BAB", "ABA"])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_velocity_verlet_conserves_energy_to_second_order(word, backend, minima):
    """No friction, no noise: max |H(t) - H(0)| / |H(0)| over 2 time units is small and falls
    like h^2 (ratio 4 when h halves, within 3.3-4.8)."""
    lj = LennardJones(13)
    p0 = 0.5 * np.random.default_rng(1).standard_normal(lj.dim).reshape(-1, 3)
    p0 = (p0 - p0.mean(axis=0)).ravel()
    drift = {}
    for h in (0.004, 0.002):
        n = int(round(2.0 / h))
        tr = sdekit.simulate(word, lj, h=h, n_steps=n, gamma=0.0, kT=0.0, q0=minima[13], p0=p0, seed=0,
                             backend=backend, record_every=n // 50, progress=False)
        H = lj.potential(tr.q) + 0.5 * np.sum(tr.p ** 2, axis=-1)
        drift[h] = np.abs(H - H[0]).max() / abs(H[0])
    assert drift[0.004] < 2e-4
    assert 3.3 < drift[0.004] / drift[0.002] < 4.8


@pytest.mark.slow
@pytest.mark.statistical
def test_an_ensemble_of_clusters_runs_on_cpu_and_numpy(minima):
    """Many independent LJ-13 clusters, BAOAB at kT = 0.1: the final mean potential energies of the
    two backends agree within 5 combined standard errors (independent paths; own streams)."""
    lj = LennardJones(13)
    means = {}
    for backend in ("cpu", "numpy"):
        ens = sdekit.ensemble("BAOAB", lj, h=0.005, n_steps=400, n_paths=200, gamma=2.0, kT=0.1,
                              q0=minima[13], seed=4, backend=backend, progress=False)
        u = lj.potential(ens.state.q)
        means[backend] = (u.mean(), u.std(ddof=1) / math.sqrt(len(u)))
    (a, sa), (b, sb) = means["cpu"], means["numpy"]
    assert abs(a - b) < 5 * math.hypot(sa, sb)
    assert KNOWN_MINIMA[13] < a < KNOWN_MINIMA[13] + 33 * 0.1 * 2    # ~ E_min + (3N - 6) kT / 2


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(n_atoms=1), r"^n_atoms: must be >= 2"),
    (dict(n_atoms=2.5), r"^n_atoms: must be an integer"),
    (dict(n_atoms=True), r"^n_atoms: must be an integer"),
    (dict(n_atoms=13, wall_radius=0.0), r"^wall_radius: must be > 0"),
    (dict(n_atoms=13, wall_radius="3"), r"^wall_radius: must be a real number"),
    (dict(n_atoms=13, wall_stiffness=-1.0), r"^wall_stiffness: must be >= 0"),
    (dict(n_atoms=13, wall_stiffness=float("nan")), r"^wall_stiffness: must be finite"),
])
def test_bad_settings_are_value_errors_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LennardJones(**kwargs)


def test_bad_configurations_and_unknown_minima_name_the_argument():
    lj = LennardJones(13)
    with pytest.raises(ValueError, match=r"^q: must have last axis 3 \* n_atoms = 39 .*shape \(38,\)"):
        lj.grad(np.zeros(38))
    with pytest.raises(ValueError, match=r"^q: .*shape \(\)"):
        lj.potential(1.0)
    with pytest.raises(ValueError, match=r"^n_atoms: minimum\(\) knows .*n_atoms=7"):
        LennardJones(7).minimum()


# ---------------------------------------------------------------------------- against OpenMM

@pytest.mark.slow
@pytest.mark.statistical
def test_mean_potential_energy_agrees_with_openmm_langevin_middle(minima):
    """LJ-13 at kT = 0.15, gamma = 1, h = 0.005: sdekit's BAOAB and OpenMM's
    LangevinMiddleIntegrator (the same BAOAB chain) sample the same mean potential energy, within
    4.5 combined standard errors (OpenMM: 20 batch means of one trajectory; sdekit: independent paths).

    Units: sigma = 1 nm, epsilon = 1 kJ/mol, m = 1 amu make the reduced time unit 1 ps and
    kT (kJ/mol) = R T, so both programs run the same equations in the same numbers.
    """
    openmm = pytest.importorskip("openmm")
    from openmm import unit

    lj = LennardJones(13)
    kT, gamma, h = 0.15, 1.0, 0.005
    ens = sdekit.ensemble("BAOAB", lj, h=h, n_steps=4000, n_paths=400, gamma=gamma, kT=kT, q0=minima[13],
                          seed=11, backend="cpu", progress=False)
    u = lj.potential(ens.state.q)
    ours, ours_se = u.mean(), u.std(ddof=1) / math.sqrt(len(u))

    system = openmm.System()
    for _ in range(lj.n_atoms):
        system.addParticle(1.0)
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for _ in range(lj.n_atoms):
        nb.addParticle(0.0, 1.0, 1.0)
    system.addForce(nb)
    wall = openmm.CustomExternalForce("0.5*k*step(r-R)*(r-R)^2; r=sqrt(x*x+y*y+z*z)")
    wall.addGlobalParameter("k", lj.wall_stiffness)
    wall.addGlobalParameter("R", lj.wall_radius)
    for i in range(lj.n_atoms):
        wall.addParticle(i, [])
    system.addForce(wall)
    temperature = kT / unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    integrator = openmm.LangevinMiddleIntegrator(temperature, gamma, h)
    integrator.setRandomNumberSeed(7)
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, integrator, platform)
    context.setPositions(minima[13].reshape(-1, 3))
    context.setVelocitiesToTemperature(temperature, 3)
    integrator.step(2000)                                     # 10 time units to equilibrate
    samples = []
    for _ in range(4000):
        integrator.step(25)
        samples.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    batches = np.asarray(samples).reshape(20, -1).mean(axis=1)
    theirs, theirs_se = batches.mean(), batches.std(ddof=1) / math.sqrt(len(batches))
    print(f"mean U: sdekit {ours:.4f} +- {ours_se:.4f}, OpenMM {theirs:.4f} +- {theirs_se:.4f}, "
          f"z = {(ours - theirs) / math.hypot(ours_se, theirs_se):.2f}")
    assert abs(ours - theirs) < 4.5 * math.hypot(ours_se, theirs_se), (ours, ours_se, theirs, theirs_se)
