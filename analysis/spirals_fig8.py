"""Fig. 8 of the partitioned-integrators paper: test accuracy on the 2-turn spiral after 10K steps.

Settings (caption of Fig. 8): SGD h = 0.1, Adam h = 0.005, SGLD h = 0.1 sigma = 0.1,
AdLaLa h = 0.25, tau1 = tau2 = 1e-4, sigma_A = 0.01, eps = 0.1, gamma = 0.5 and 10.
Not in the caption, chosen from Figs 4 and 14 (same problem, 100 runs): a 20-node SHLP,
500 training and 1000 test points (c = 0.02), 2% subsampling (batch 10), torch's default
initialisation. Seed s gives every method the same data, initialisation and batches.

Paper (mean over 100 runs): SGD 79%, Adam 83.7%, SGLD 78%, AdLaLa 93.4% (gamma 0.5), 85.5% (gamma 10).

    python analysis/spirals_fig8.py [--quick] [--runs 20] [--plot-only] [--init-std S]
"""
import sys
import time

import numpy as np

import _training as tr
from _results import record

PAPER = {"SGD": 79.0, "Adam": 83.7, "SGLD": 78.0, "AdLaLa g=0.5": 93.4, "AdLaLa g=10": 85.5}
METHODS = {
    "SGD": dict(optimizer="sgd", lr=0.1),
    "Adam": dict(optimizer="adam", lr=0.005),
    "SGLD": dict(optimizer="sgld", lr=0.1, sigma_A=0.1),
    "AdLaLa g=0.5": dict(optimizer="adlala", lr=0.25, tau1=1e-4, tau2=1e-4, sigma_A=0.01, eps=0.1, gamma=0.5),
    "AdLaLa g=10": dict(optimizer="adlala", lr=0.25, tau1=1e-4, tau2=1e-4, sigma_A=0.01, eps=0.1, gamma=10.0),
}


def plot(data, path):
    import matplotlib.pyplot as plt

    res = data["results"]
    labels = list(res)
    acc = [np.array([r["test_accuracy"] for r in res[k]]) * 100 for k in labels]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x = np.arange(len(labels))
    for i, a in enumerate(acc):
        jitter = (np.random.default_rng(i).random(a.size) - 0.5) * 0.3
        ax.scatter(x[i] + jitter, a, s=9, color="0.6", zorder=1)
    means = [a.mean() for a in acc]
    ses = [a.std(ddof=1) / np.sqrt(a.size) if a.size > 1 else 0 for a in acc]
    ax.errorbar(x, means, yerr=ses, fmt="o", color="C0", capsize=5, ms=7, zorder=3, label="ours: mean +- SE")
    ax.scatter(x, [PAPER[k] for k in labels], marker="*", s=140, color="C3", zorder=4, label="paper (100 runs)")
    ax.set_xticks(x, labels)
    ax.set_ylabel("test accuracy after %d steps (%%)" % data["steps"])
    ax.set_title("2-turn spiral, %d-node SHLP, %d runs per method (grey: single runs)" % (data["hidden"], len(acc[0])),
                 fontsize=9)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


READING = (" Reading: the ranking agrees (AdLaLa gamma=0.5 first, gamma=10 and Adam next, SGD and SGLD last) and "
           "SGD and AdLaLa gamma=0.5 agree with the paper's numbers; Adam, SGLD and AdLaLa gamma=10 come out higher "
           "than the paper's. The initialisation (unstated) explains Adam's gap: with the Gaussian init of the "
           "paper's Figs 9/14 Adam drops to the paper's value, but SGD then drops below it and SGLD and AdLaLa "
           "gamma=10 stay ~3 SE above, so no single init matches all five; the other unstated settings (hidden "
           "width, the paper's SGLD noise convention) were not checked.")


def check(args):
    """The row's reading: the Gaussian-initialisation rerun (the most plausible unstated setting), if it was run."""
    if args.init_std is not None or args.quick:
        return ""
    try:
        other = tr.load("spirals_fig8_init0.01.json")
    except FileNotFoundError:
        return ""
    summ = tr.summary(other["results"])
    n = len(other["results"]["SGD"])
    return (READING + f" Check of the most plausible unstated setting, Gaussian init std 0.01 (the paper's Figs 9, 14), {n} runs "
            f"(seeds {other['seeds'][0]}..{other['seeds'][1]}): " + "; ".join(
                f"{k} {tr.fmt(m, s)}% (paper {PAPER[k]}%)" for k, (m, s, _, _) in summ.items()) + ".")


def main():
    args = tr.cli(__doc__.split("\n")[0], runs=20, steps=10_000)
    sys.argv[0] = "spirals_fig8.py"
    name = "spirals_fig8" + ("" if args.init_std is None else f"_init{args.init_std:g}")
    if args.plot_only:
        data = tr.load(name + ".json", args.quick)
    else:
        base = dict(data="spirals", turns=2.0, hidden=20, n_train=500, n_test=1000, batch_frac=0.02,
                    noise=0.02, steps=args.steps, init_std=args.init_std, quiet=True)
        t0 = time.perf_counter()
        results = tr.run_methods(METHODS, args.runs, base, desc="fig8", seed0=args.seed)
        data = {"steps": args.steps, "hidden": 20, "seeds": [args.seed, args.seed + args.runs - 1],
                "settings": {"base": base, "methods": METHODS}, "wall_s": time.perf_counter() - t0,
                "results": tr.strip(results)}
        tr.save(name + ".json", data, args.quick)
    plot(data, tr.path(name + ".png", args.quick))
    summ = tr.summary(data["results"])
    unit = tr.cost_unit(data["results"])
    parts = [f"{k} {tr.fmt(m, s)}% (paper {PAPER[k]}%, z = {(100 * m - PAPER[k]) / (100 * s):+.1f}; {sec:.1f} {unit})"
             for k, (m, s, n, sec) in summ.items()]
    init = "torch default init" if data["settings"]["base"].get("init_std") is None \
        else f"Gaussian init std {data['settings']['base']['init_std']:g}"
    text = (f"Fig. 8 setting: 2-turn spiral (c=0.02, 500 train / 1000 test), 20-node SHLP (width not in the caption; "
            f"Figs 4, 14), {init}, batch 10 (2%), {data['steps']} steps, {len(data['results']['SGD'])} runs "
            f"per method (seeds {data['seeds'][0]}..{data['seeds'][1]}, paired), total {data['wall_s']:.0f} s. "
            f"Test accuracy mean +- SE (z: our mean minus the paper's over our SE): " + "; ".join(parts) + "."
            + check(args) + " Figure: figures/" + name + ".png.")
    if not args.quick:
        record("spirals_fig8.py" if args.init_std is None else f"spirals_fig8.py --init-std {args.init_std:g}",
               text, quick=False)
    else:
        print(text)


if __name__ == "__main__":
    main()
