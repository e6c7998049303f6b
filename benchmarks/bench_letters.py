"""Benchmark: what the new letters cost in the cpu kernel — a Metropolis test, and force groups.

1. **A brace word against the same word unadjusted.** ``O{BAB}O`` (GHMC) against ``OBABO``
   (the same velocity-Verlet step and O letters, no test), and MALA against EM, on the 1-D
   double well and on a 4-D Gaussian (register form) and a 16-D Gaussian (array form):
   path-steps per second and the ratio. The test adds two potential evaluations, one uniform
   (a slot of the normal stream), the copies of (q, p, F) and the branch. Target: <= 1.3x.

2. **Multiple time stepping costs what its force evaluations cost.** A cheap stiff harmonic
   part (fast, group 0) plus an expensive soft part (slow, group 1: a sum of 64 Gaussian
   bumps, about 64 exp per evaluation) in d = 2. ``B1 (B0 A O A B0)^k B1`` evaluates the slow
   force once and the fast one k times per outer step h; ``BAOAB`` on the whole force at
   step h/k evaluates both k times in the same simulated time. The table gives path-steps per
   second (outer steps), the time per unit of simulated time, and the slow evaluations per
   unit time, for k = 2, 4, 8 at h = 0.25 (0.8 of the fast half period, away from the resonance).

Usage::

    python benchmarks/bench_letters.py [--paths N] [--steps N] [--repeat R]
"""
import argparse
import math
import os
import platform

import numba
import numpy as np

import _report   # (this directory is on the path when run as a script)
import sdekit
from sdekit.systems import DoubleWell, Gaussian, Harmonic, custom, split


def best_of(f, repeat):
    """The best of ``repeat`` timed runs, after one that compiles (and warms the disk cache)."""
    f()
    return _report.best_of(f, repeat)


def run(word, system, h, n_paths, n_steps):
    return lambda: sdekit.ensemble(word, system, h=h, n_steps=n_steps, n_paths=n_paths, seed=1, backend="cpu",
                                   record_every=n_steps, q0=[0.5] * system.dim, progress=False,
                                   on_divergence="mask")


def gaussian(d):
    rng = np.random.default_rng(d)
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    return Gaussian(A @ A.T + np.eye(d))


def brace_table(n_paths, n_steps, repeat):
    rows = []
    for name, system, h in (("double well, d=1", DoubleWell(), 0.2), ("Gaussian, d=4", gaussian(4), 0.3),
                            ("Gaussian, d=16", gaussian(16), 0.2)):
        for adjusted, plain, hh in (("O{BAB}O", "OBABO", h), ("MALA", "EM", h / 3)):
            paths = n_paths if system.dim == 1 else max(1000, n_paths // system.dim)
            ta = best_of(run(adjusted, system, hh, paths, n_steps), repeat)
            tp = best_of(run(plain, system, hh, paths, n_steps), repeat)
            work = paths * n_steps
            rows.append((name, adjusted, plain, work / ta, work / tp, ta / tp))
    return rows


def bumps():
    """An expensive soft potential in d = 2: 64 Gaussian bumps, U = -sum_k a exp(-|q - c_k|^2 / 2)."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(-2, 2, (64, 2))

    def gradient(q, out):
        out[0] = 0.0
        out[1] = 0.0
        for k in range(centres.shape[0]):
            dx, dy = q[0] - centres[k, 0], q[1] - centres[k, 1]
            w = 0.05 * math.exp(-0.5 * (dx * dx + dy * dy))
            out[0] += w * dx
            out[1] += w * dy

    return custom(gradient, 2, name="bumps(64)")


def mts_table(n_paths, n_steps, repeat, h=0.25):
    system = split(Harmonic([10.0, 10.0]), bumps())
    total = split(Harmonic([10.0, 10.0]), bumps())
    rows = []
    for k in (2, 4, 8):   # h = 0.25 = 0.8 T_fast / 2: stable inner steps, away from the resonance
        word = f"B1 (B0 A O A B0)^{k} B1"
        t_mts = best_of(run(word, system, h, n_paths, n_steps), repeat)
        plain = h / k
        if plain * 10.0 < 2.0:   # BAOAB is stable only for h omega_fast < 2
            t_plain = best_of(run("BAOAB", total, plain, n_paths, n_steps * k), repeat)
        else:
            t_plain = math.nan
        per_time = lambda t, steps, dt: t / (n_paths * steps * dt)   # seconds per path per unit time
        rows.append((k, n_paths * n_steps / t_mts, per_time(t_mts, n_steps, h), 1 / h,
                     per_time(t_plain, n_steps * k, plain), k / h))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numba threads "
          f"{numba.get_num_threads()}, load {load:.2f}; {args.paths} paths x {args.steps} steps, best of {args.repeat}")
    print("\n## A Metropolis test against the same word unadjusted (cpu kernel, path-steps/s)\n")
    print("| system | adjusted | unadjusted | adjusted path-steps/s | unadjusted path-steps/s | cost ratio |")
    print("|---|---|---|---:|---:|---:|")
    for name, a, p, ra, rp, ratio in brace_table(args.paths, args.steps, args.repeat):
        print(f"| {name} | {a} | {p} | {ra:.3g} | {rp:.3g} | {ratio:.2f}x |")
    print("\n## Multiple time stepping: cost follows the slow-force evaluations (d = 2, stiff harmonic + 64 bumps)\n")
    print("| k inner | r-RESPA outer path-steps/s | r-RESPA s per path per unit time | slow evals per unit time"
          " | BAOAB at h/k: s per path per unit time | slow evals per unit time |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k, rate, t_mts, slow_mts, t_plain, slow_plain in mts_table(max(1000, args.paths // 10), args.steps,
                                                                   args.repeat):
        plain = "unstable" if math.isnan(t_plain) else f"{t_plain:.3g}"
        print(f"| {k} | {rate:.3g} | {t_mts:.3g} | {slow_mts:.3g} | {plain} | {slow_plain:.3g} |")


if __name__ == "__main__":
    main()
