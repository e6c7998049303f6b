"""Benchmark: peak memory of a 10^7-path ensemble against the size of its state.

Workload: 1-D double well U = (q^2 - 1)^2, BAOAB, backend "cpu", float64, h = 0.1,
gamma = 1, kT = 1, q0 = 1, p0 = 0; ``--paths`` paths (default 10^7) for ``--steps``
steps, streaming the across-path moments every ``record_every`` steps.

The state of one run is q, p, force (n_paths x d) and xi (n_paths), 8 bytes each:
4 x 80 MB = 320 MB at 10^7 paths. A streaming ensemble should need a small multiple
of that (the state, a copy made at the start, the returned final arrays) and nothing
per record: the moments are (n_records, d) numbers. Each configuration runs in its
own process (``ru_maxrss`` is a high-water mark per process); we report

* peak RSS of the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``),
* the same for a baseline process that imports sdekit and compiles the kernel on a
  tiny ensemble (interpreter, numba, LLVM),
* peak RSS - baseline, and its ratio to the state size,
* the tracemalloc peak of the run itself (numpy's allocations are traced),

for several ``record_every`` (so n_records doubles and more): the memory must not grow
with the number of records.

Usage::

    python benchmarks/bench_memory.py [--paths N] [--steps N] [--out benchmarks/RESULTS_memory.md]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
import sdekit
n_paths, n_steps, record_every = (int(x) for x in sys.argv[1:4])
sys_ = sdekit.systems.DoubleWell()
args = dict(gamma=1.0, kT=1.0, q0=1.0, p0=0.0, seed=0, backend="cpu", dtype="float64", progress=False)
# compile on a tiny ensemble first (the same generated kernel), so the baseline includes numba
sdekit.ensemble("BAOAB", sys_, 0.1, 2, 16, record_every=1, **args)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {"baseline": base}
if n_paths > 0:
    tracemalloc.start()
    t0 = time.perf_counter()
    e = sdekit.ensemble("BAOAB", sys_, 0.1, n_steps, n_paths, record_every=record_every, **args)
    out["seconds"] = time.perf_counter() - t0
    out["traced_peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out["n_records"] = len(e.t)
    out["finite"] = bool(np.isfinite(e.mean["q2"]).all())
    out["n_diverged"] = int(len(e.diverged))
out["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


def run_child(n_paths, n_steps, record_every):
    res = subprocess.run([sys.executable, "-c", CHILD, str(n_paths), str(n_steps), str(record_every)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paths", type=int, default=10**7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--record-every", type=int, nargs="+", default=[20, 10, 5, 2, 1])
    ap.add_argument("--long-steps", type=int, default=80,
                    help="one more row: this many steps, recorded every step (0: skip)")
    ap.add_argument("--out", default=None, help="write the table as Markdown here")
    args = ap.parse_args(argv)

    MB = 1e6
    state = 4 * args.paths * 8  # q, p, force (n_paths x 1) and xi (n_paths), float64
    run_child(0, 0, 1)  # warm numba's disk cache, so every row below loads the same compiled code
    rows = []
    configs = [(args.steps, k) for k in args.record_every] + ([(args.long_steps, 1)] if args.long_steps else [])
    for n_steps, k in configs:
        t0 = time.perf_counter()
        r = run_child(args.paths, n_steps, k)
        r["n_steps"] = n_steps
        r["wall"] = time.perf_counter() - t0
        r["record_every"] = k
        rows.append(r)
        print(f"record_every={k}: {r}", file=sys.stderr)

    lines = [
        f"# Peak memory of a streaming ensemble ({args.paths:.0e} paths)",
        "",
        f"1-D double well, BAOAB, backend \"cpu\", float64, h = 0.1; "
        f"each row a fresh process. State = q, p, force, xi = 4 x {args.paths:,} x 8 B = "
        f"{state / MB:.0f} MB. Baseline = the same process's peak RSS after importing sdekit and "
        f"running the kernel on 16 paths (interpreter, numba, LLVM): "
        f"{min(r['baseline'] for r in rows) / MB:.0f}-{max(r['baseline'] for r in rows) / MB:.0f} MB.",
        "",
        "| n_steps | record_every | n_records | state (MB) | baseline RSS (MB) | peak RSS (MB) | peak RSS - baseline (MB) "
        "| (peak - baseline) / state | tracemalloc peak (MB) | traced / state | run time (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        extra = r["peak"] - r["baseline"]
        lines.append(f"| {r['n_steps']} | {r['record_every']} | {r['n_records']} | {state / MB:.0f} | {r['baseline'] / MB:.0f} | {r['peak'] / MB:.0f} | "
                     f"{extra / MB:.0f} | {extra / state:.2f} | {r['traced_peak'] / MB:.0f} | "
                     f"{r['traced_peak'] / state:.2f} | {r['seconds']:.1f} |")
    extra = [r["peak"] - r["baseline"] for r in rows]
    by_records = sorted(zip((r["n_records"] for r in rows), extra))
    doubling = [f"{a}->{b} records: {(eb - ea) / MB:+.0f} MB" for (a, ea), (b, eb) in zip(by_records, by_records[1:])]
    lines += ["",
              f"n_records from {rows[0]['n_records']} to {rows[-1]['n_records']}: (peak RSS - baseline) spread "
              f"{(max(extra) - min(extra)) / MB:.1f} MB ({(max(extra) - min(extra)) / state:.3f} x state); "
              f"step by step: {'; '.join(doubling)}. "
              "The ~2 x state is the state itself plus copies made while setting up the start (the "
              "initial arrays are built, broadcast and cast before the kernel runs in place on them); "
              "it does not depend on n_steps. "
              "The moments stream, so memory is O(n_paths) + a bounded buffer: the cpu kernel keeps "
              "per-chunk partial sums (chunks of 256 paths x n_records x 3 sums x observables) for a "
              "group of chunks sized to stay under 64 MiB (sdekit.kernels.cpu.PARTIAL_SUMS_BYTES), so "
              "the extra memory grows with n_records only until that cap, then not at all.",
              "",
              f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}. All runs finite: {all(r['finite'] for r in rows)}; "
              f"diverged paths: {[r['n_diverged'] for r in rows]}.",
              "", "Reproduce: `python benchmarks/bench_memory.py --out benchmarks/RESULTS_memory.md`"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
