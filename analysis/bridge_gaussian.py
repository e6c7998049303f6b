"""Exact errors of Schrödinger-bridge (I2SB) samplers between Gaussian endpoints (no sampling).

Endpoints x0 ~ N(m0, A) (the target) and x1 ~ N(m1, B) in 2-D, paired by the closed-form
static Schrödinger bridge for I2SB's reference (its schedule, beta_min 0.1, beta_max 0.3:
beta 0.1 at both ends, 0.187 at t = 1/2; S = int beta):
the entropic OT plan with eps = 2S (Janati et al. 2020; Bunne et al. 2023). With the
perfect predictor E[x0 | x_t] each sampler's output law is Gaussian and follows from an
exact recursion (sdekit.bridges.exact_output_moments). Against the number of steps N we
report W2 and KL of the output to N(m0, A), and W2 of the output coupling (x_out, x1) to the
closed-form Schrödinger coupling, with fitted orders; and the same with an independent
pairing (I2SB's usual setting), where only the marginal is a target.

    python analysis/bridge_gaussian.py [--quick]

References: Liu et al., I2SB, ICML 2023; Bunne et al., AISTATS 2023; Janati et al., NeurIPS 2020.
"""
import time

import matplotlib.pyplot as plt
import numpy as np

import _results
from sdekit import bridges as SB

M0, A = np.array([0.5, -1.0]), np.array([[2.0, 0.6], [0.6, 0.5]])
M1, B = np.array([0.0, 0.3]), np.array([[1.0, -0.2], [-0.2, 0.7]])


def samplers(br):
    return [SB.Posterior(br), SB.OTODE(br), SB.EulerMaruyama(br), SB.Splitting(br, "OBO"),
            SB.Splitting(br, "OBO", kick="heun")]


def hlogh_fit(h, err):
    """Least squares of err/h = c1 log(1/h) + c2 (the posterior sampler's law); relative rms residual."""
    X = np.column_stack([np.log(1 / h), np.ones_like(h)])
    coef = np.linalg.lstsq(X, err / h, rcond=None)[0]
    return coef, float(np.sqrt(np.mean((X @ coef * h / err - 1) ** 2)))


def main():
    args = _results.parser(__doc__.splitlines()[0]).parse_args()
    steps = [4, 8, 16, 32, 64, 128, 256, 512] if args.quick else [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    fit_from = 32 if args.quick else 64
    start = time.time()
    br = SB.Bridge()
    pairs = {"SB": SB.GaussianPair(br, M0, A, M1, B, coupling="schrodinger"),
             "indep": SB.GaussianPair(br, M0, A, M1, B, coupling="independent")}
    res = {}
    for name, pair in pairs.items():
        for sm in samplers(br):
            r = SB.convergence_study(sm, pair, steps, fit_from=fit_from)
            use = (r["steps"] >= fit_from) & (r["w2_coupling"] > 1e-6)   # W2 resolved to ~1e-8
            sl = np.polyfit(np.log(r["h"][use]), np.log(r["w2_coupling"][use]), 1)[0]
            r["order_coupling"] = sl
            res[(name, sm.label)] = r
            print(f"{name:5s} {sm.label:10s} W2 order {r['order']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] "
                  f"coupling slope {sl:.3f}  W2 " + " ".join(f"{e:.1e}" for e in r["w2"]) +
                  "  | coupling " + " ".join(f"{e:.1e}" for e in r["w2_coupling"]))
    pinned = {sm.label: SB.convergence_study(sm, pairs["SB"], steps, predictor="pinned", fit_from=fit_from)
              for sm in samplers(br)}
    for label, r in pinned.items():
        print(f"pinned {label:10s} W2 " + " ".join(f"{e:.1e}" for e in r["w2"]))
    post = res[("SB", "posterior")]
    use = post["steps"] >= fit_from
    coef, rel = hlogh_fit(post["h"][use], post["w2"][use])
    print(f"posterior W2 = h ({coef[0]:.4f} log(1/h) + {coef[1]:.4f}), relative rms residual {rel:.1e}")
    wall = time.time() - start

    def shown(e):   # W2 below 1e-7 is rounding (resolution ~1e-8): not drawn
        return np.where(e > 1e-7, e, np.nan)

    fig, axes = plt.subplots(1, 4, figsize=(21, 5))
    for (name, label), r in res.items():
        if name != "SB":
            continue
        axes[0].loglog(r["steps"], shown(r["w2"]), "o-", ms=3, label=f"{label} ({r['evals_per_step']}/step): {r['order']:.2f}")
        axes[1].loglog(r["steps"], shown(r["w2_coupling"]), "o-", ms=3, label=f"{label}: {r['order_coupling']:.2f}")
        axes[2].loglog(r["steps"], np.maximum(r["kl"], 1e-16), "o-", ms=3, label=label)
        ri = res[("indep", label)]
        axes[3].loglog(ri["steps"], shown(ri["w2"]), "o-", ms=3, label=f"{label}: {ri['order']:.2f}")
    titles = ["W2(output, N(m0, A)), SB pairing", "W2((x_out, x1), closed-form SB coupling)",
              "KL(output || N(m0, A)), SB pairing", "W2(output, N(m0, A)), independent pairing"]
    for ax, title in zip(axes, titles):
        ax.set_xlabel("steps N")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"I2SB bridge (I2SB schedule, beta 0.1 at the ends, {br.schedule.beta(0.5):.3f} at t = 1/2), 2-D Gaussian endpoints, perfect predictor E[x0|x_t]; "
                 "exact recursions (legend: fitted slope)")
    fig.tight_layout()
    path = _results.figure("bridge_gaussian.png")
    fig.savefig(path, dpi=110)
    print(f"figure: {path}; {wall:.1f} s")

    def at(r, key, n):
        return r[key][steps.index(n)]

    em = res[("SB", "EM")]
    orders = "; ".join(f"{label} {r['order']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] ({r['evals_per_step']} eval/step)"
                       for (name, label), r in res.items() if name == "SB")
    orders_c = "; ".join(f"{label} {r['order_coupling']:.2f}" for (name, label), r in res.items() if name == "SB")
    orders_i = "; ".join(f"{label} {r['order']:.2f}" for (name, label), r in res.items() if name == "indep")
    text = (f"I2SB bridge (I2SB's schedule, beta_min 0.1, beta_max 0.3: beta 0.1 at the ends, "
            f"{br.schedule.beta(0.5):.3f} at t = 1/2, S = {br.S:.4f}) between 2-D Gaussians, paired by the "
            f"closed-form Schrödinger coupling (entropic OT, eps = 2S), perfect predictor E[x0|x_t]; exact output "
            f"laws by moment recursions, N = {steps[0]}..{steps[-1]}, no sampling ({wall:.0f} s). Fitted order of "
            f"W2(output, N(m0, A)) (95% CI, N >= {fit_from} while W2 > 1e-6, its resolution being ~1e-8): {orders}. Slope of W2 of the coupling (x_out, x1) to the "
            f"closed-form SB coupling: {orders_c}. Independent pairing, W2 order: {orders_i}. EM from the exact "
            f"bridge: W2 to the target {at(em, 'w2', 16):.2e} / {at(em, 'w2', 128):.2e} / {at(em, 'w2', 1024 if not args.quick else 512):.2e} "
            f"at N = 16 / 128 / {1024 if not args.quick else 512}, to the SB coupling {at(em, 'w2_coupling', 16):.2e} / "
            f"{at(em, 'w2_coupling', 128):.2e} / {at(em, 'w2_coupling', 1024 if not args.quick else 512):.2e}. "
            f"Posterior: W2 = h ({coef[0]:.3f} log(1/h) + {coef[1]:.3f}) (relative residual {rel:.0e}): its step drops "
            f"(1 - s_n/s_(n+1))^2 Cov(x0|x_(n+1)) ~ h^2/t, which sums to h log(1/h). Given the true x0 (pinned) the "
            f"posterior and OT-ODE samplers are exact for every N (W2 = {max(pinned['posterior']['w2'].max(), pinned['OT-ODE']['w2'].max()):.1g} to rounding, every N). "
            f"Reading: EM and the OBO splitting (Euler kick) are first order, OBO with a Heun kick second order; the "
            f"OT-ODE reaches the target marginal at order 1 but its coupling stays "
            f"{res[('SB', 'OT-ODE')]['w2_coupling'][-1]:.2f} away from the SB's (a deterministic map of x1). "
            f"Literature: Liu et al. ICML 2023 (posterior, OT-ODE samplers); Bunne et al. AISTATS 2023 (closed-form "
            f"Gaussian SB). Figure: figures/bridge_gaussian.png.")
    _results.record("bridge_gaussian.py", text, args.quick)


if __name__ == "__main__":
    main()
