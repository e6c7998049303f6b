"""Girsanov path weights: how their spread grows with the horizon and the step (sdekit.girsanov).

BAOAB and EM on the proposal U = q^2/2 (kT = 1, gamma = 1, q0 = 1, p0 = 0), weighted for the
change of drift to the target U = omega_t^2 q^2/2 (omega_t = 1.2, u = -0.44 q). Exact, from
the linear chain (sdekit.girsanov.log_weight_law): Var[log w] and the effective sample size
per path 1/E[w^2] against the horizon T = n h at several steps h, and against h at a fixed
T; simulated (cpu kernels): the same quantities from the paths' log-weights, and the
reweighted <q^2>, <p^2> against the target chain's exact moments
(sdekit.girsanov.target_moments), z-scores from the data. Writes
analysis/figures/girsanov_weights.png and a line in analysis/RESULTS.md.

Literature: Girsanov 1960; Kappen, J. Stat. Mech. 2005 (path-integral control: the weights'
variance limits importance sampling of paths); Liu et al. 2023 (bridge matching, where the
same path-space ratio debiases a learned drift). The variance of log w grows linearly in
the horizon once the chain has mixed (each step adds an independent increment), and tends
to the continuum Girsanov value as h -> 0.

    python analysis/girsanov_weights.py [--quick]
"""
import time

import matplotlib.pyplot as plt
import numpy as np

import sdekit
from sdekit import girsanov
from sdekit.systems import Harmonic

from _results import figure, parser, record

OMEGA_T = 1.2
KU = OMEGA_T ** 2 - 1.0
HS = (0.05, 0.1, 0.2, 0.4)
HORIZONS = (1.0, 2.0, 5.0, 10.0, 20.0)
T_FIXED = 5.0


def x0(word):
    return [1.0] if word == "EM" else [1.0, 0.0]


def law(word, h, n):
    kw = dict(kT=1.0) if word == "EM" else dict(gamma=1.0, kT=1.0)
    return girsanov.log_weight_law(word, 1.0, KU, h, n, x0=x0(word), **kw)


def simulate(word, h, n, n_paths, seed, backend):
    kw = dict(kT=1.0) if word == "EM" else dict(gamma=1.0, kT=1.0)
    ens = sdekit.ensemble(word, Harmonic(1.0), h=h, n_steps=n, n_paths=n_paths, q0=1.0, seed=seed,
                          backend=backend, drift_change=girsanov.difference(Harmonic(OMEGA_T), Harmonic(1.0)), **kw)
    lw = ens.log_weight
    c = lw - lw.mean()
    var, var_se = c.var(), np.sqrt((np.mean(c ** 4) - c.var() ** 2) / lw.size)
    ess = girsanov.effective_sample_size(lw) / lw.size
    exact = girsanov.target_moments(word, 1.0, KU, h, n, x0=x0(word), **kw)
    f = [ens.q[:, 0] ** 2] + ([] if word == "EM" else [ens.p[:, 0] ** 2])
    want = [exact.cov[0, 0] + exact.mean[0] ** 2] + ([] if word == "EM" else [exact.cov[1, 1] + exact.mean[1] ** 2])
    r = girsanov.reweight(np.c_[tuple(f)], lw)
    w = np.exp(lw)
    return dict(var=var, var_se=var_se, ess=ess, z=(r.mean - want) / r.stderr, mean_w=w.mean(),
                mean_w_se=w.std() / np.sqrt(w.size), mean_lw=lw.mean(), mean_lw_se=lw.std() / np.sqrt(lw.size))


def main(argv=None):
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    n_paths = 4_000 if args.quick else 40_000
    horizons = HORIZONS[:3] if args.quick else HORIZONS
    started = time.perf_counter()
    seeds = iter(np.random.SeedSequence(args.seed).spawn(100))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    rows, zs, ew = [], [], []
    for word, style in (("BAOAB", "-"), ("EM", "--")):
        hs = HS if word == "BAOAB" else HS[:3]
        for i, h in enumerate(hs):
            color = f"C{i}"
            TT = np.linspace(h, max(horizons), 60 if not args.quick else 20)
            exact = [law(word, h, int(round(T / h))) for T in TT]
            axes[0].plot(TT, [e.var for e in exact], style, color=color, lw=1.2,
                         label=f"{word} h={h:g}")
            axes[1].semilogy(TT, [1.0 / e.mean_square_weight for e in exact], style, color=color, lw=1.2)
            for T in horizons:
                n = int(round(T / h))
                s = simulate(word, h, n, n_paths, next(seeds), args.backend)
                e = law(word, h, n)
                rows.append((word, h, T, s, e))
                zs += list(s["z"]) + [(s["var"] - e.var) / s["var_se"], (s["mean_lw"] - e.mean) / s["mean_lw_se"]]
                ew.append((s["mean_w"] - 1.0) / s["mean_w_se"])
                axes[0].errorbar(T, s["var"], 2 * s["var_se"], fmt="o", color=color, ms=4)
                axes[1].plot(T, s["ess"], "o", color=color, ms=4)
    # against h at a fixed horizon (exact), the simulated points at the grid's steps
    ns = np.unique(np.rint(np.geomspace(T_FIXED / 0.5, T_FIXED / 0.01, 40 if not args.quick else 12)).astype(int))
    hh = T_FIXED / ns[::-1]   # n h = T exactly
    for word, style in (("BAOAB", "-"), ("EM", "--")):
        top = hh if word == "BAOAB" else hh[hh <= 0.25]
        axes[2].plot(top, [law(word, h, int(round(T_FIXED / h))).var for h in top], style, color="k",
                     label=f"{word}, T = {T_FIXED:g} (exact)")
        pts = [(h, s["var"], s["var_se"]) for w_, h, T, s, e in rows if w_ == word and T == T_FIXED]
        if pts:
            h_, v_, se_ = zip(*pts)
            axes[2].errorbar(h_, v_, 2 * np.array(se_), fmt="o", color="k", ms=4)
    axes[0].set(xlabel="horizon T = n h", ylabel="Var[log w]", title=f"Var[log w], u = -{KU:.2f} q")
    axes[0].legend(fontsize=8)
    axes[1].set(xlabel="horizon T = n h", ylabel="ESS / n", title="effective sample size per path (lines: 1/E[w^2])")
    axes[2].set(xscale="log", xlabel="step h", ylabel="Var[log w]", title=f"Var[log w] at T = {T_FIXED:g}")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figure("girsanov_weights.png"), dpi=120)
    wall = time.perf_counter() - started

    print(f"{'word':>6} {'h':>5} {'T':>5} {'Var logw':>9} {'exact':>9} {'ESS/n':>7} {'1/E[w2]':>8} {'E[w]':>8} "
          f"{'z(q2,p2)':>14}")
    for word, h, T, s, e in rows:
        print(f"{word:>6} {h:5.2f} {T:5.1f} {s['var']:9.4f} {e.var:9.4f} {s['ess']:7.3f} {1 / e.mean_square_weight:8.3f} "
              f"{s['mean_w']:8.4f} {' '.join(f'{z:6.2f}' for z in s['z']):>14}")
    zs, ew = np.array(zs), np.array(ew)
    pick = [r for r in rows if r[0] == "BAOAB" and r[1] == 0.1]
    growth = ", ".join(f"T={T:g}: {e.var:.3f} (sim {s['var']:.3f} +- {s['var_se']:.3f})" for _, _, T, s, e in pick)
    at_t = [(h, e.var) for w_, h, T, s, e in rows if w_ == "BAOAB" and T == T_FIXED]
    Ts = [T for _, _, T, _, _ in pick]
    vs = [e.var for _, _, _, _, e in pick]
    rates = ", ".join(f"[{a:g}, {b:g}]: {(vb - va) / (b - a):.3f}" for a, b, va, vb in zip(Ts, Ts[1:], vs, vs[1:]))
    ess_text = ", ".join(f"T={T:g}: {s['ess']:.3f}" for _, _, T, s, _ in pick)
    ess_dev = max(abs(s["ess"] - 1 / e.mean_square_weight) for _, _, _, s, e in rows)
    text = (f"BAOAB (gamma=1) and EM on U = q^2/2 (kT=1, q0=1, p0=0) weighted to U = {OMEGA_T}^2 q^2/2 "
            f"(u = -{KU:.2f} q); h = {', '.join(map(str, HS))} (EM up to {HS[2]}), horizons T = "
            f"{', '.join(f'{T:g}' for T in horizons)}, {n_paths} paths per point, cpu kernels, {wall:.0f} s. "
            f"Reweighted <q^2>, <p^2> and the sample mean and variance of log w against the exact linear-chain "
            f"values: {zs.size} comparisons, max |z| = {np.abs(zs).max():.2f}, rms z = {np.sqrt(np.mean(zs ** 2)):.2f} "
            f"(1 expected); E[w] = 1 within {np.abs(ew).max():.2f} SE at every point (exact formula: 1 to rounding). "
            f"Var[log w] of BAOAB at h = 0.1: {growth}; its growth per unit time (exact) {rates}. At T = {T_FIXED:g}, "
            f"BAOAB: {', '.join(f'h={h:g}: {v:.3f}' for h, v in at_t)}. ESS/n of BAOAB at h = 0.1: {ess_text} "
            f"(simulated; exact 1/E[w^2] within {ess_dev:.3f}). Reading: once the chain has mixed Var[log w] grows "
            f"linearly in T (each step adds a nearly independent increment), so the ESS per path decays about "
            f"exponentially in T; at fixed T it has a finite limit as h -> 0 (the continuum Girsanov weight), "
            f"approached from below by BAOAB (its target O's shift b = (1 - e^(-gamma h))/gamma < h) and from above "
            f"by EM. Literature: Girsanov 1960; "
            f"Kappen 2005 (the weights' variance limits path importance sampling). Figure: figures/girsanov_weights.png.")
    print(text)
    record("girsanov_weights.py", text, args.quick)


if __name__ == "__main__":
    main()
