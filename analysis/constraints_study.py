"""g-BAOAB study: configurational bias of constrained BAOAB against the step h, for
K = 1 and K = 5 geodesic sub-steps per A (Leimkuhler & Matthews, Proc. R. Soc. A 472,
20160138, 2016).

System: the unit sphere in R^3 with U(q) = -kappa e_z.q (von Mises-Fisher, kappa = 2,
kT = 1, gamma = 1), exact E[q_z] = coth(kappa) - 1/kappa. For each (h, K) an ensemble of
independent paths (numpy reference backend) is equilibrated for 10 time units and each
path's q_z is averaged over the next 20 time units; the bias is the mean over paths
minus the exact value, its error bar the standard error across paths. Paths whose
SHAKE fails (a drift longer than the radius, rare at the largest h) are counted and
reported, not hidden. A weighted least-squares fit of bias = c h^2 per K summarises
the second-order bias.

    python analysis/constraints_study.py            # full study (a few minutes on 2 cores)
    python analysis/constraints_study.py --quick    # smaller, for the test suite / CI

Writes analysis/figures/constraints_gbaoab.png and its line of analysis/RESULTS.md
(through analysis/_results.py, which adds or replaces this script's line).
Constrained runs use the numpy reference backend (the compiled kernels do not take
constraints yet).
"""
import math
import os
import time

from _results import figure, parser, record  # sets the Agg backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import sdekit  # noqa: E402
from sdekit.constraints import Sphere  # noqa: E402
from sdekit.systems import custom  # noqa: E402

KAPPA = 2.0


def vmf_gradient(q, out):
    out[0] = 0.0
    out[1] = 0.0
    out[2] = -KAPPA


def bias(system, constraint, h, K, n_paths, seed, burn_time=10.0, average_time=20.0, samples=20):
    """(bias of E[q_z], standard error, number of failed paths) for step h and K sub-steps."""
    scheme = sdekit.Scheme("BAOAB", geodesic_steps=K)
    kw = dict(h=h, n_paths=n_paths, gamma=1.0, kT=1.0, constraint=constraint, on_divergence="mask")
    e = sdekit.ensemble(scheme, system, n_steps=max(1, round(burn_time / h)), q0=[0.0, 0.0, 1.0],
                        seed=seed, **kw)
    every = max(1, round(average_time / samples / h))
    total = np.zeros(n_paths)
    for _ in range(samples):
        e = sdekit.ensemble(scheme, system, n_steps=every, resume=e.state, **kw)
        total += e.q[:, 2]
    failed = np.union1d(e.diverged, np.flatnonzero(~np.isfinite(total)))
    ok = np.setdiff1d(np.arange(n_paths), failed)
    values = total[ok] / samples
    exact = 1.0 / math.tanh(KAPPA) - 1.0 / KAPPA
    return values.mean() - exact, values.std(ddof=1) / math.sqrt(ok.size), failed.size


def fit_h2(hs, b, se):
    """Weighted least squares of b = c h^2: (c, standard error of c)."""
    hs, b, se = map(np.asarray, (hs, b, se))
    x, w = hs ** 2, 1.0 / se ** 2
    c = np.sum(w * x * b) / np.sum(w * x * x)
    return c, 1.0 / math.sqrt(np.sum(w * x * x))


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    if args.backend not in (None, "numpy"):
        raise SystemExit(f"--backend: constrained runs use the numpy backend only, got {args.backend!r}")

    hs = [0.2, 0.4] if args.quick else [0.1, 0.2, 0.3, 0.4, 0.5]
    n_paths = 5_000 if args.quick else 20_000
    Ks = (1, 5)
    system, constraint = custom(vmf_gradient, dim=3), Sphere(1.0)
    t0 = time.time()
    table = {}
    print(f"{'K':>2} {'h':>5} {'bias E[q_z]':>12} {'+- SE':>9} {'failed':>7}")
    for K in Ks:
        for i, h in enumerate(hs):
            b, se, failed = bias(system, constraint, h, K, n_paths, args.seed + 100 * K + i)
            table[K, h] = (b, se, failed)
            print(f"{K:>2} {h:>5.2f} {b:>12.5f} {se:>9.5f} {failed:>7d}", flush=True)
    fits = {K: fit_h2(hs, *zip(*[table[K, h][:2] for h in hs])) for K in Ks}
    for K, (c, sc) in fits.items():
        print(f"K = {K}: bias ~ c h^2 with c = {c:.4f} +- {sc:.4f}")
    print(f"({time.time() - t0:.0f} s, {n_paths} paths per point)")

    out = figure("constraints_gbaoab.png")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    hh = np.linspace(min(hs) * 0.9, max(hs) * 1.1, 50)
    for K, marker in zip(Ks, "os"):
        b = np.array([table[K, h][0] for h in hs])
        se = np.array([table[K, h][1] for h in hs])
        line = ax.errorbar(hs, -b, yerr=2 * se, fmt=marker, capsize=3, label=f"K = {K} (2 SE bars)")
        ax.plot(hh, -fits[K][0] * hh ** 2, "--", color=line[0].get_color(),
                label=f"fit {-fits[K][0]:.3f} h$^2$")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("step h")
    ax.set_ylabel(r"$-$bias of E[$q_z$]  (exact $\coth\kappa - 1/\kappa$)")
    ax.set_title(f"g-BAOAB on the unit sphere, von Mises–Fisher $\\kappa$ = {KAPPA:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")

    worst = max(hs)
    text = (f"constrained BAOAB vs g-BAOAB (K = 5 geodesic sub-steps per A) on the unit sphere in R^3, "
            f"U = -kappa e_z.q (von Mises-Fisher, kappa={KAPPA:g}), kT=1, gamma=1, h = {', '.join(map(str, hs))}, "
            f"{n_paths} paths x 20 time units per point ({time.time() - t0:.0f} s). Bias of E[q_z] "
            f"(exact coth(kappa) - 1/kappa = {1 / math.tanh(KAPPA) - 1 / KAPPA:.5f}) fitted as c h^2: "
            f"c = {fits[1][0]:.4f} +- {fits[1][1]:.4f} (K=1), {fits[5][0]:.4f} +- {fits[5][1]:.4f} (K=5); "
            f"at h={worst:g}: {table[1, worst][0]:.4f} +- {table[1, worst][1]:.4f} (K=1) vs "
            f"{table[5, worst][0]:.4f} +- {table[5, worst][1]:.4f} (K=5). Paths lost to SHAKE failure "
            f"(masked, all points): {sum(v[2] for v in table.values())}. Literature (Leimkuhler & Matthews, "
            f"Proc. R. Soc. A 472, 2016): second-order configurational bias, reduced by geodesic sub-steps. "
            f"Figure: figures/constraints_gbaoab.png.")
    record(os.path.basename(__file__), text, args.quick)
    return table, fits


if __name__ == "__main__":
    main()
