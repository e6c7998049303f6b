"""Benchmark: Lennard-Jones cluster throughput, sdekit against OpenMM.

Particle-steps per second (atoms x steps / wall second) of BAOAB on LJ-13 and LJ-38
(:class:`sdekit.clusters.LennardJones`: all pairs, no cut-off, a harmonic wall k = 100 beyond
R = 1.5 + N^(1/3)), reduced units, h = 0.005, gamma = 1, kT = 0.1 (solid clusters), started
at the global minimum:

* sdekit cpu, ensemble — ``sdekit.ensemble(backend="cpu")`` of many independent clusters
  (nogil numba over chunks of clusters on a thread pool, O(N^2) pair loop per cluster and step);
* sdekit cpu, one trajectory — ``sdekit.simulate(backend="cpu")`` (record every 100 steps);
* sdekit numpy, ensemble — the numpy backend (an (n_paths, N, N) pair table per step);
* OpenMM CPU and Reference platforms — one cluster, ``LangevinMiddleIntegrator`` (the same
  BAOAB), ``NonbondedForce`` with ``NoCutoff`` and the wall as a ``CustomExternalForce``,
  sigma = 1 nm, epsilon = 1 kJ/mol, m = 1 amu (reduced time unit = 1 ps),
  ``integrator.step(n)`` timed; the CPU platform with its default threads (all cores) and with
  ``Threads=1`` (for 13-38 atoms its per-step thread synchronisation outweighs the work). OpenMM runs one system per context: it has no
  ensemble-of-independent-systems mode.

Best of ``--repeat`` runs after a warm-up (compile) run. Usage::

    python benchmarks/bench_lj.py [--write PATH] [--repeat 2]
"""
import argparse
import os
import platform

import numpy as np

import sdekit
from _report import Report, best_of as best
from sdekit.clusters import LennardJones

H, GAMMA, KT = 0.005, 1.0, 0.1


def openmm_context(lj, x0, platform_name, seed=1, properties=None):
    """An OpenMM Context of the cluster ``lj`` at ``x0`` on ``platform_name`` (with platform ``properties``)."""
    import openmm
    from openmm import unit

    system = openmm.System()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    wall = openmm.CustomExternalForce("0.5*k*step(r-R)*(r-R)^2; r=sqrt(x*x+y*y+z*z)")
    wall.addGlobalParameter("k", lj.wall_stiffness)
    wall.addGlobalParameter("R", lj.wall_radius)
    for i in range(lj.n_atoms):
        system.addParticle(1.0)
        nb.addParticle(0.0, 1.0, 1.0)
        wall.addParticle(i, [])
    system.addForce(nb)
    system.addForce(wall)
    temperature = KT / unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    integrator = openmm.LangevinMiddleIntegrator(temperature, GAMMA, H)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform_name), properties or {})
    context.setPositions(x0.reshape(-1, 3))
    context.setVelocitiesToTemperature(temperature, seed)
    return context, integrator


def main(argv=None):
    import numba

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--write", default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    s = 0.01 if args.quick else 1.0
    say = Report()
    load = os.getloadavg()
    try:
        import openmm

        omm = f"OpenMM {openmm.__version__}"
    except ImportError:
        openmm, omm = None, "OpenMM not installed (its rows skipped)"
    say(f"sdekit bench_lj: BAOAB, h={H}, gamma={GAMMA}, kT={KT}; numba {numba.__version__} with "
        f"{numba.get_num_threads()} threads, numpy {np.__version__}, {omm}, {platform.machine()}, "
        f"{os.cpu_count()} cpus; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    say("")
    say("| cluster | implementation | work per run | particle-steps/s | sdekit cpu ensemble is x faster |")
    say("|---|---|---:|---:|---:|")
    for n in (13, 38):
        lj = LennardJones(n)
        x0 = lj.minimum()
        rows = {}
        paths = int((1024 if n == 13 else 256) * s) or 4
        steps = int(1000 * s) or 10
        ens = lambda backend, m, k: sdekit.ensemble("BAOAB", lj, h=H, n_steps=k, n_paths=m, gamma=GAMMA, kT=KT,
                                                    q0=x0, seed=1, backend=backend, progress=False)
        ens("cpu", 4, 2)
        rows[f"sdekit cpu, ensemble of {paths} clusters"] = (f"{paths} x {steps}", paths * n * steps /
                                                             best(lambda: ens("cpu", paths, steps), args.repeat))
        traj_steps = int(100_000 * s) or 100
        sim = lambda k: sdekit.simulate("BAOAB", lj, h=H, n_steps=k, gamma=GAMMA, kT=KT, q0=x0, seed=1,
                                        backend="cpu", record_every=100, progress=False)
        sim(200)
        rows["sdekit cpu, one trajectory"] = (f"1 x {traj_steps}", n * traj_steps / best(lambda: sim(traj_steps),
                                                                                          args.repeat))
        np_paths, np_steps = max(4, paths // 4), max(10, steps // 5)
        ens("numpy", 4, 2)
        rows[f"sdekit numpy, ensemble of {np_paths} clusters"] = (
            f"{np_paths} x {np_steps}", np_paths * n * np_steps / best(lambda: ens("numpy", np_paths, np_steps), 1))
        if openmm is not None:
            for plat, props, k in (("CPU", {}, traj_steps), ("CPU", {"Threads": "1"}, traj_steps),
                                   ("Reference", {}, traj_steps // 5)):
                context, integrator = openmm_context(lj, x0, plat, properties=props)
                integrator.step(100)
                threads = context.getPlatform().getPropertyValue(context, "Threads") if plat == "CPU" else "1"
                rows[f"OpenMM {plat} platform ({threads} thread{'s' * (threads != '1')}), one trajectory"] = (
                    f"1 x {k}", n * k / best(lambda: integrator.step(k), args.repeat))
                del context, integrator
        ref = rows[f"sdekit cpu, ensemble of {paths} clusters"][1]
        for name, (work, rate) in rows.items():
            say(f"| LJ-{n} | {name} | {work} | {rate:.3g} | {ref / rate:.2f} |")
    say.load_at_end()
    say.write(args.write)


if __name__ == "__main__":
    main()
