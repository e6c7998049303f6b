"""Fig. 10 of the partitioned-integrators paper: AdLaLa vs SGD, SGLD and Adam on the 4-turn spiral.

Settings (caption of Fig. 10): AdLaLa h = 0.25, tau1 = tau2 = 1e-4, gamma = 0.1, sigma_A = 0.01,
eps = 0.05; SGLD with sigma in {0 (= SGD), 0.005, 0.01, 0.05, 0.1}; Adam. Not in the caption,
chosen: SGD/SGLD h = 0.1 and Adam h = 0.005 (Figs 6-8), 100-node SHLP (Fig. 15's 4-turn
setting), 500 training and 1000 test points (c = 0.02), 2% subsampling, 10K steps (Fig. 7),
torch's default initialisation; seed s gives every method the same data, initialisation
and batches ("the same initial conditions were used for all runs"). Test accuracy and
loss recorded every 500 steps.

Paper: AdLaLa's accuracy above every other method's (bar chart, numbers not given).

    python analysis/spirals_fig10.py [--quick] [--runs 10] [--plot-only]
    python analysis/spirals_fig10.py --pair --steps 30000    # AdLaLa and Adam only, longer
"""
import time

import numpy as np

import _training as tr
from _results import record

ADLALA = dict(optimizer="adlala", lr=0.25, tau1=1e-4, tau2=1e-4, gamma=0.1, sigma_A=0.01, eps=0.05)
METHODS = {"AdLaLa": ADLALA, "SGD (sigma=0)": dict(optimizer="sgd", lr=0.1)}
METHODS.update({f"SGLD sigma={s:g}": dict(optimizer="sgld", lr=0.1, sigma_A=s) for s in (0.005, 0.01, 0.05, 0.1)})
METHODS["Adam"] = dict(optimizer="adam", lr=0.005)
HIDDEN = 100


def plot(data, path):
    import matplotlib.pyplot as plt

    res = data["results"]
    groups = [(title, g) for title, g in (("AdLaLa vs SGD / SGLD", [k for k in res if k.startswith(("SGD", "SGLD"))]),
                                          ("AdLaLa vs Adam", ["Adam"])) if g]
    colors = {k: f"C{i}" for i, k in enumerate(k for k in res if k.startswith(("SGD", "SGLD")))}
    colors.update({"AdLaLa": "0.2", "Adam": "C5"})
    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(4.7 * (len(groups) + 1), 4.2))
    for ax, (title, group) in zip(axes, groups):
        tr.band(ax, res["AdLaLa"], color="k", lw=2, ls=":", label="AdLaLa")
        for k in group:
            tr.band(ax, res[k], color=colors[k], lw=1.3, label=k)
        ax.set_xlabel("training step")
        ax.set_ylabel("test accuracy (%), mean +- SE")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize=9)
    labels = list(res)
    final = [100 * np.array([r["test_accuracy"] for r in res[k]]) for k in labels]
    x = np.arange(len(labels))
    ses = [f.std(ddof=1) / np.sqrt(f.size) if f.size > 1 else 0 for f in final]
    axes[-1].bar(x, [f.mean() for f in final], yerr=ses, capsize=4, color=[colors[k] for k in labels])
    axes[-1].axhline(final[0].mean(), color="k", ls=":", lw=1.5)
    axes[-1].set_xticks(x, [k.replace("SGLD sigma=", "SGLD\n").replace(" (", "\n(") for k in labels], fontsize=7)
    axes[-1].set_ylim(40, 100)
    axes[-1].set_ylabel("final test accuracy (%), mean +- SE")
    axes[-1].set_title(f"after {data['steps']} steps, {len(final[0])} runs each", fontsize=9)
    fig.suptitle(f"4-turn spiral, {data['hidden']}-node SHLP", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


READING = (" Reading: agrees for SGD and every SGLD sigma (AdLaLa ahead by 7-8 points, paired); disagrees for "
           "Adam: AdLaLa's lead over Adam is within one SE at 10K steps and reverses (also within the error) at 30K, "
           "so the run length is not the reason; unchecked candidates: the hidden width and the paper's Gaussian "
           "initialisations (Fig. 9: std 0.5 for Adam, 0.01 for AdLaLa).")


def check(args):
    """The row's reading: the longer AdLaLa-vs-Adam rerun (``--pair``), if it was run."""
    if args.quick or args.pair:
        return ""
    import glob
    import os

    found = sorted(glob.glob(os.path.join(tr.FIGURES, "spirals_fig10_pair*.json")))
    if not found:
        return ""
    other = tr.load(os.path.basename(found[-1]))
    res = other["results"]
    d = [a["test_accuracy"] - b["test_accuracy"] for a, b in zip(res["AdLaLa"], res["Adam"])]
    summ = tr.summary(res)
    return (READING + f" Check of the run length (curves still rising at 10K): AdLaLa vs Adam for {other['steps']} steps, "
            f"{len(d)} runs: AdLaLa {tr.fmt(*summ['AdLaLa'][:2])}%, Adam {tr.fmt(*summ['Adam'][:2])}%, "
            f"paired AdLaLa - Adam {tr.fmt(*tr.mean_se(d))} pts (figures/{os.path.basename(found[-1])[:-5]}.png).")


def main():
    args = tr.cli(__doc__.split("\n")[0], runs=10, steps=10_000,
                  extra={"--pair": dict(action="store_true", help="AdLaLa and Adam only (the longer check)")})
    pair = args.pair
    name = "spirals_fig10" + (f"_pair{args.steps}" if pair else "")
    methods = {k: METHODS[k] for k in ("AdLaLa", "Adam")} if pair else METHODS
    if args.plot_only:
        data = tr.load(name + ".json", args.quick)
    else:
        base = dict(data="spirals", turns=4.0, hidden=HIDDEN, n_train=500, n_test=1000, batch_frac=0.02,
                    noise=0.02, steps=args.steps, init_std=args.init_std, quiet=True)
        t0 = time.perf_counter()
        every = max(1, args.steps // 20)
        results = tr.run_methods(methods, args.runs, base, eval_every=every, desc="fig10", seed0=args.seed)
        data = {"steps": args.steps, "hidden": HIDDEN, "seeds": [args.seed, args.seed + args.runs - 1],
                "settings": {"base": base, "methods": methods}, "wall_s": time.perf_counter() - t0,
                "results": tr.strip(results)}
        tr.save(name + ".json", data, args.quick)
    plot(data, tr.path(name + ".png", args.quick))
    summ = tr.summary(data["results"])
    res = data["results"]
    ada = np.array([r["test_accuracy"] for r in res["AdLaLa"]])
    parts = []
    for k, (m, s, n, sec) in summ.items():
        part = f"{k} {tr.fmt(m, s)}% ({sec:.1f} {tr.cost_unit(res)})"
        if k != "AdLaLa":
            d = ada - np.array([r["test_accuracy"] for r in res[k]])
            part += f" [AdLaLa - it, paired: {tr.fmt(*tr.mean_se(d))} pts]"
        parts.append(part)
    text = (f"Fig. 10 setting: 4-turn spiral (c=0.02, 500 train / 1000 test), {data['hidden']}-node SHLP (width not "
            f"in the caption; Fig. 15), torch default init, batch 10 (2%), {data['steps']} steps, SGD/SGLD h=0.1, "
            f"Adam h=0.005 (Figs 6-8; the caption gives only AdLaLa's h=0.25, tau=1e-4, gamma=0.1, sigma_A=0.01, "
            f"eps=0.05), {len(ada)} runs per method (seeds {data['seeds'][0]}..{data['seeds'][1]}, paired), "
            f"total {data['wall_s']:.0f} s. Final test accuracy mean +- SE: " + "; ".join(parts)
            + ". Paper: AdLaLa above SGD, every SGLD sigma and Adam (bars, no numbers)." + check(args)
            + " Figure: figures/" + name + ".png (curves: mean +- SE band).")
    if args.quick:
        print(text)
    else:
        record("spirals_fig10.py" + (f" --pair --steps {args.steps}" if pair else ""), text, quick=False)


if __name__ == "__main__":
    main()
