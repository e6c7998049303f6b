"""BAOAB's high-friction superconvergence of configurational averages.

Stationary bias of <q^2> for BAOAB on the 1-D double well (kT = 1) for frictions
gamma = 1, 4, 16, 64 over h = 0.1 ... 0.45: the configurational error falls as gamma
grows, and its observed order rises from 2 toward 4 (in the limit gamma -> infinity
BAOAB's positions follow the Leimkuhler-Matthews overdamped scheme with step h^2/2,
second order in that step, i.e. fourth order in h). Writes
analysis/figures/baoab_high_friction.png and a line in analysis/RESULTS.md.

Literature: Leimkuhler & Matthews, Appl. Math. Res. Express 2013, and
Leimkuhler, Matthews & Stoltz, IMA J. Numer. Anal. 36 (2016): BAOAB is second order
for configurational averages at every friction, with superconvergence (fourth order)
in the high-friction limit.

    python analysis/baoab_high_friction.py [--quick]
"""
import time

import matplotlib.pyplot as plt
import numpy as np

import sdekit
from sdekit import analysis

from _results import figure, parser, record

GAMMAS = (1.0, 4.0, 16.0, 64.0)
# At gamma = 1, h >= 0.35 loses several % of the paths to escapes (|q| > 2 is unstable);
# at higher friction BAOAB stays stable to h ~ 0.45, where the small errors become resolvable.
STEPS = {1.0: (0.1, 0.15, 0.2, 0.25, 0.3), "high": (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45)}


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    n_paths, duration = (2_000, 40.0) if args.quick else (32_000, 200.0)
    system = sdekit.systems.DoubleWell()
    started = time.perf_counter()
    curves = []
    for gamma, ss in zip(GAMMAS, np.random.SeedSequence(args.seed).spawn(len(GAMMAS))):
        hs = np.array(STEPS.get(gamma, STEPS["high"]))
        # the positions relax on the slower of 1/gamma and gamma/U'' (U'' = 8 in the wells)
        burn_time = max(0.15 * duration, 5 * max(1 / gamma, gamma / 8))
        run_time = duration * max(1.0, gamma / 32)   # longer runs where the positions relax slowly
        steps = [int(round((run_time + burn_time) / h)) for h in hs]
        burn = [int(round(burn_time / h)) for h in hs]
        res = analysis.stationary_bias("BAOAB", system, "q2", hs, gamma=gamma, kT=1.0, n_paths=n_paths,
                                       n_steps=steps, burn_in=burn, seed=ss, backend=args.backend,
                                       max_abs=5.0, progress=True)
        c = res.curve()
        c.scheme = f"gamma={gamma:g}"
        curves.append(c)
    wall = time.perf_counter() - started
    result = analysis.ErrorStudy(curves)
    print(result.table())
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    result.plot(ax1, slopes=(2, 4), title="BAOAB on the double well, kT=1: |bias in <q^2>|")
    for k, marker in ((2, "s"), (4, "o")):   # h = 0.2 and h = 0.3: in every curve
        err = np.array([abs(c.errors[k]) for c in curves])
        se = np.array([c.stderr[k] for c in curves])
        ax2.errorbar(GAMMAS, err, yerr=[np.minimum(se, 0.9 * err), se], fmt=marker + "-", capsize=3,
                     label=f"h = {curves[0].hs[k]:g}")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("friction gamma")
    ax2.set_ylabel("|bias in <q^2>| (configurational)")
    ax2.set_title("fixed step: the configurational error falls with gamma", fontsize=10)
    ax2.grid(True, which="both", alpha=0.25)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figure("baoab_high_friction.png"), dpi=120)
    result.to_csv(figure("baoab_high_friction.csv"))

    def order(c):
        return f"{c.fit.order:.2f} [{c.fit.ci[0]:.2f}, {c.fit.ci[1]:.2f}]" if c.fit else "unresolved"

    text = (f"BAOAB on the 1-D double well, kT=1, h = 0.1..0.3 (gamma=1), 0.1..0.45 (higher gamma), gamma = {', '.join(f'{g:g}' for g in GAMMAS)}, "
            f"{n_paths} paths x {duration:g} time units ({wall:.0f} s). Observed configurational order (95% CI): "
            + "; ".join(f"gamma={g:g}: {order(c)}" for g, c in zip(GAMMAS, curves))
            + ". Bias in <q^2> at h=0.3: "
            + ", ".join(f"gamma={g:g}: {c.errors[4]:+.1e} +- {c.stderr[4]:.0e}" for g, c in zip(GAMMAS, curves))
            + f". Escaped paths (masked): {[int(np.sum(c.diverged)) for c in curves]}. Reading: at fixed h <= 0.3 "
              f"the error falls with gamma, and at gamma >= 4 it is below the noise for h <= 0.25; the fitted "
              f"orders at gamma >= 4 are set by the steep growth near the stability edge (h >= 0.35), where "
              f"higher-order terms dominate, so they bound the order from below rather than measure the "
              f"asymptotic one (resolving h^4 at small h needs ~100x more samples). Literature "
              f"(Leimkuhler & Matthews 2013; Leimkuhler, Matthews & Stoltz 2016): second order at every gamma, "
              f"fourth order (superconvergence) as gamma -> infinity. Figure: figures/baoab_high_friction.png.")
    record("baoab_high_friction.py", text, args.quick)


if __name__ == "__main__":
    main()
