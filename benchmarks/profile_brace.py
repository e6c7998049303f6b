"""Profile: where a Metropolis test's cost goes in the cpu kernel at d = 1 (issue 15).

``bench_letters.py`` measures ``O{BAB}O`` (GHMC) against ``OBABO`` on the 1-D double well:
about 1.5x, against a target of 1.3x. This script takes the test apart. It builds the
kernel of ``O{BAB}O`` several times in one process, each a copy of the double well under
another name (so each gets its own kernel) whose generated step has one part of the test
edited out, and times them interleaved with ``OBABO`` on one thread:

* ``as generated``  — the kernel sdekit runs;
* ``no log``        — the test ``ln u < -dH/kT`` replaced by ``u - 1 < -dH/kT`` (no logarithm);
* ``no uniform``    — ``u = 0.5`` instead of a slot of the stream (no Philox work, no log);
* ``no potential``  — U(q) at the proposal not evaluated (the carried U reused).

The edited kernels compute wrong chains (the script says so and checks nothing but time); the
point is the difference each part makes. Measured 2026-12-01 (2-core AMD EPYC VM, one thread,
load 0.8-1.5, five runs): as generated 1.50-1.70x, no log 1.37-1.51x, no uniform 1.16-1.27x, no
potential no faster (1.6-1.7x; run-to-run spread about 0.1). Skipping the logarithm when
u - 1 < -dH/kT (then ln u <= u - 1 decides) measured no gain beyond the run-to-run noise.
Three slots per step instead of two
(1.5 Philox blocks instead of 1) is the largest part and is fixed by the stream's layout (one
64-bit slot per draw). A uniform drawn only when dH > 0 would not help: that is half the
tests in GHMC, and a lone uniform then costs a whole block.

Usage::

    python benchmarks/profile_brace.py [--paths N] [--steps N] [--repeat R]
"""
import os

import numba

from _report import interleaved_best, profile_arguments   # (this directory is on the path when run as a script)
import sdekit
import sdekit.kernels.codegen as codegen
from sdekit.systems import custom

TEST = "accept = metropolis(u, H1 - H0, kT)"
UNIFORM = "u, ctr, spare = uniform(key0, key1, path, ctr, spare)"
EDITS = {
    "as generated": [],
    "no log": [(TEST, "accept = (u - 1.0) < -(H1 - H0) / kT")],
    "no uniform": [(UNIFORM, "u = 0.5")],
    "no potential": [("U1 = potential(q, qa)", "U1 = U")],
}


def gradient(q, out):
    out[0] = 4.0 * q[0] * (q[0] * q[0] - 1.0)


def potential(q):
    return (q[0] * q[0] - 1.0) ** 2


def edited_generate(generate, systems, edited):
    """codegen.generate, with the edits of the system named in the text's first line applied
    (its name added to the set ``edited``)."""
    def generate_edited(*args, **kwargs):
        text = generate(*args, **kwargs)
        first = text.split("\n", 1)[0]
        for name, edits in systems.items():
            if f" on {name}" in first and edits:
                edited.add(name)
                for old, new in edits:
                    if old not in text:
                        raise RuntimeError(f"the generated step has no line {old!r}: update this script")
                    text = text.replace(old, new)
        return text
    return generate_edited


def main(argv=None):
    args = profile_arguments(__doc__, paths=50_000, steps=400, repeat=7, argv=argv)
    numba.set_num_threads(1)
    names = {label: f"dw{i}" for i, label in enumerate(EDITS)}
    edited = set()
    codegen.generate = edited_generate(codegen.generate, {names[k]: v for k, v in EDITS.items()}, edited)
    systems = {label: custom(gradient, 1, name=name, potential=potential) for label, name in names.items()}

    def run(word, system):
        return lambda: sdekit.ensemble(word, system, h=0.2, n_steps=args.steps, n_paths=args.paths, q0=[0.5],
                                       seed=1, backend="cpu", progress=False, record_every=args.steps)

    runs = {label: run("O{BAB}O", s) for label, s in systems.items()}
    runs["OBABO"] = run("OBABO", systems["as generated"])
    for f in runs.values():
        f()   # compiles
    if edited != {names[k] for k, v in EDITS.items() if v}:
        raise RuntimeError(f"edited {sorted(edited)} only (a kernel came from the disk cache? set SDEKIT_CACHE_DIR)")
    times = interleaved_best(runs, args.repeat)
    base = times["OBABO"]
    print(f"{args.paths} paths x {args.steps} steps, double well d = 1, h = 0.2, one thread, best of {args.repeat}")
    print("(the edited kernels compute wrong chains: only their times mean something)")
    for label in runs:
        print(f"{label:14s} {times[label] / base:5.2f}x OBABO")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
