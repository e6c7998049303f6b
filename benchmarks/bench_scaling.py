"""Benchmark: how the cost of sdekit's cpu and numpy backends grows.

Path-steps per second of ``sdekit.ensemble("BAOAB", ...)`` (and of ``simulate`` for the
record interval) against

1. the dimension d = 1, 4, 16, 64, 256, 1000 of two systems: the double well
   U = sum_i (q_i^2 - 1)^2 (O(d) gradient) and a Gaussian U = q^T K q / 2 with a dense
   precision K (O(d^2) gradient: a loop over K in the compiled kernel, ``q @ K`` by BLAS in
   numpy). K = Q diag(lambda) Q^T with Q a fixed random rotation and lambda evenly in [0.5, 2];
   h = 0.1, gamma = 1, kT = 1. The number of paths falls with d so that each run is about a
   second of work (it is stated in the table);
2. the number of paths n_paths = 10^3 ... 10^6 (10^7 with ``--max-paths 1e7``) on the 1-D
   double well, steps chosen so that each run is ~10^8 path-steps or fewer;
3. the record interval ``record_every`` for one long ``simulate`` trajectory (10^6 steps of
   the 1-D double well) and for an ensemble (10^5 paths x 1000 steps; records are means over paths).

Every rate is the best of ``--repeat`` runs after a compile run; the compile time is not in it.
Writes a markdown table (``--write``) and the figure ``--figure`` (benchmarks/scaling.png).

Usage::

    python benchmarks/bench_scaling.py [--write PATH] [--figure benchmarks/scaling.png] [--max-paths 1e6]
"""
import argparse
import os
import platform
import time

import numpy as np

import sdekit
from _report import Report, best_of as timed
from sdekit import systems

H = 0.1


def dense_gaussian(d, seed=0):
    """Gaussian with a dense SPD precision K = Q diag(linspace(0.5, 2, d)) Q^T (fixed seed)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))
    K = (q * np.linspace(0.5, 2.0, d)) @ q.T
    return systems.Gaussian(0.5 * (K + K.T))


def ensemble_rate(system, backend, n_paths, n_steps, repeat, record_every=None, q0=None):
    run = lambda n, s: sdekit.ensemble("BAOAB", system, h=H, n_steps=s, n_paths=n, seed=1, backend=backend,
                                       q0=q0, record_every=record_every, progress=False)
    t = time.perf_counter()
    run(8, 2)                       # compile (or load the kernel)
    compile_s = time.perf_counter() - t
    return n_paths * n_steps / timed(lambda: run(n_paths, n_steps), repeat), compile_s


def simulate_rate(system, backend, n_steps, record_every, repeat):
    run = lambda s: sdekit.simulate("BAOAB", system, h=H, n_steps=s, seed=1, backend=backend, q0=[1.0],
                                    record_every=record_every, progress=False)
    run(10)
    return n_steps / timed(lambda: run(n_steps), repeat)


def main(argv=None):
    import numba

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[1, 4, 16, 64, 256, 1000])
    ap.add_argument("--max-paths", type=float, default=1e6)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--budget", type=float, default=2e7,
                    help="coordinate-steps (double well) or d^2-steps (Gaussian) per run on cpu")
    ap.add_argument("--write", default=None)
    ap.add_argument("--figure", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = ap.parse_args(argv)
    scale = 1e-3 if args.quick else 1.0
    say = Report()
    load = os.getloadavg()
    say(f"sdekit bench_scaling: BAOAB, h={H}, gamma=1, kT=1; numba {numba.__version__} with "
        f"{numba.get_num_threads()} threads, numpy {np.__version__}, {platform.machine()}, {os.cpu_count()} cpus; "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    say("")

    # ---------------------------------------------------------------- 1. dimension
    dim_rows = []
    say("### Against the dimension d (path-steps/s; n_paths x n_steps per run)")
    say("")
    say("| system | d | n_paths x n_steps | cpu | numpy | cpu / numpy | cpu coordinate-steps/s | cpu compile s |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("DoubleWell", "Gaussian (dense K)"):
        for d in args.dims:
            system = systems.DoubleWell(d) if name == "DoubleWell" else dense_gaussian(d)
            cost = d if name == "DoubleWell" else d * d
            n_steps = 100
            n_paths = int(max(64, min(100_000, args.budget * scale / (n_steps * cost))))
            q0 = np.ones(d) if name == "DoubleWell" else np.zeros(d)
            cpu, comp = ensemble_rate(system, "cpu", n_paths, n_steps, args.repeat, q0=q0)
            npy, _ = ensemble_rate(system, "numpy", n_paths, n_steps, args.repeat, q0=q0)
            dim_rows.append((name, d, cpu, npy))
            say(f"| {name} | {d} | {n_paths} x {n_steps} | {cpu:.3g} | {npy:.3g} | {cpu / npy:.2f} | "
                f"{cpu * d:.3g} | {comp:.1f} |")
    say("")

    # ---------------------------------------------------------------- 2. n_paths
    path_rows = []
    say("### Against n_paths (1-D double well)")
    say("")
    say("| n_paths | n_steps | cpu | numpy | cpu / numpy |")
    say("|---:|---:|---:|---:|---:|")
    dw = systems.DoubleWell()
    n_paths = 1000
    while n_paths <= args.max_paths:
        n = max(8, int(n_paths * scale))
        n_steps = int(max(20, min(1000, 1e8 * scale / n)))
        cpu, _ = ensemble_rate(dw, "cpu", n, n_steps, args.repeat, q0=[1.0])
        npy, _ = ensemble_rate(dw, "numpy", n, n_steps, 1 if n >= 10 ** 6 else args.repeat, q0=[1.0])
        path_rows.append((n, cpu, npy))
        say(f"| {n} | {n_steps} | {cpu:.3g} | {npy:.3g} | {cpu / npy:.2f} |")
        n_paths *= 10
    say("")

    # ---------------------------------------------------------------- 3. record_every
    rec_rows = []
    say("### Against record_every (1-D double well)")
    say("")
    say("| run | record_every | cpu | numpy | cpu / numpy |")
    say("|---|---:|---:|---:|---:|")
    n_steps = int(1_000_000 * scale) or 1000
    for k in (1, 10, 100, 1000):
        cpu = simulate_rate(dw, "cpu", n_steps, k, args.repeat)
        npy = simulate_rate(dw, "numpy", n_steps // 10, k, 1)
        rec_rows.append(("simulate", k, cpu, npy))
        say(f"| simulate, 1 path x {n_steps} steps (numpy {n_steps // 10}) | {k} | {cpu:.3g} | {npy:.3g} | {cpu / npy:.2f} |")
    m = max(8, int(100_000 * scale))
    for k in (1, 10, 100, 1000):
        cpu, _ = ensemble_rate(dw, "cpu", m, 1000, args.repeat, record_every=k, q0=[1.0])
        npy, _ = ensemble_rate(dw, "numpy", m, 1000, 1, record_every=k, q0=[1.0])
        rec_rows.append(("ensemble", k, cpu, npy))
        say(f"| ensemble, {m} paths x 1000 steps | {k} | {cpu:.3g} | {npy:.3g} | {cpu / npy:.2f} |")
    say.load_at_end()
    say.write(args.write)
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
        for name, marker in (("DoubleWell", "o"), ("Gaussian (dense K)", "s")):
            rows = [r for r in dim_rows if r[0] == name]
            d = [r[1] for r in rows]
            ax[0].loglog(d, [r[2] for r in rows], marker + "-", label=f"{name}, cpu")
            ax[0].loglog(d, [r[3] for r in rows], marker + "--", label=f"{name}, numpy")
        ax[0].set(xlabel="dimension d", ylabel="path-steps / s", title="ensemble, BAOAB")
        ax[0].legend(fontsize=8)
        ax[1].loglog([r[0] for r in path_rows], [r[1] for r in path_rows], "o-", label="cpu")
        ax[1].loglog([r[0] for r in path_rows], [r[2] for r in path_rows], "o--", label="numpy")
        ax[1].set(xlabel="n_paths", ylabel="path-steps / s", title="1-D double well")
        ax[1].legend(fontsize=8)
        for run, marker in (("simulate", "o"), ("ensemble", "s")):
            rows = [r for r in rec_rows if r[0] == run]
            ax[2].loglog([r[1] for r in rows], [r[2] for r in rows], marker + "-", label=f"{run}, cpu")
            ax[2].loglog([r[1] for r in rows], [r[3] for r in rows], marker + "--", label=f"{run}, numpy")
        ax[2].set(xlabel="record_every", ylabel="path-steps / s", title="1-D double well")
        ax[2].legend(fontsize=8)
        fig.suptitle(f"sdekit cost growth ({os.cpu_count()} cores, numba {numba.get_num_threads()} threads, "
                     f"shared machine)")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=110)


if __name__ == "__main__":
    main()
