r"""``sdekit train``: a single-hidden-layer perceptron on planar data, with any optimizer.

Reproduces the setting of Leimkuhler, Matthews & Vlaar, "Partitioned integrators for
thermodynamic parameterization of neural networks" (Found. Data Sci. 2019), Sec. 4:
a 2-H-1 network (ReLU hidden layer, sigmoid output, binary cross-entropy, mean over
the batch), 500 training and 1000 test points, mini-batches of 2% of the training
set drawn afresh each step, trained by AdLaLa, LOL, BAOAB (multi-layer Langevin),
SGLD, SGD, Adam, or constrained SGD/SGLD (``csgd``/``csgld``: every weight kept in
[-r, r] by the circle constraint of Leimkuhler, Pouchon & Vlaar, ICML 2021). Prints
train/test accuracy and saves the classifier's decision regions over the data as a PNG::

    sdekit train --data spirals --turns 4 --optimizer adlala --steps 10000 --out runs/
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch  # here, so that `sdekit train` without torch says so at once

from . import datasets
from .constraints import Circle
from .datasets import as_tensors
from .torch import LOL, SGLD, AdLaLa, ConstrainedSGLD, MultiLayerLangevin, layers

OPTIMIZERS = ("adlala", "lol", "baoab", "sgld", "sgd", "adam", "csgd", "csgld")
DEFAULT_LR = {"adlala": 0.25, "lol": 0.25, "baoab": 0.25, "sgld": 0.1, "sgd": 0.1, "adam": 0.005,
              "csgd": 0.1, "csgld": 0.1}
"""Step sizes: AdLaLa/LOL as the reference code and Fig. 14; SGD, SGLD, Adam as Fig. 8;
csgd/csgld (weights on circles |w| <= --radius, sdekit.torch.ConstrainedSGLD) as SGD/SGLD."""


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to every help text, except where there is no default to show
    (None, a flag) or the text already states it."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def parser():
    p = _Parser(prog="sdekit train", description=__doc__.split("\n\n")[0],
                formatter_class=_Defaults)
    p.add_argument("--data", choices=("spirals", "trig"), default="spirals",
                   help="planar data set: two interleaved spirals, or a trigonometric boundary")
    p.add_argument("--turns", type=float, default=4.0, help="spirals: number of turns b")
    p.add_argument("--freq", type=float, default=3.0, help="trig: frequency a of the boundary")
    p.add_argument("--noise", type=float, default=0.02, help="data noise c")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adlala",
                   help="training method (Langevin samplers, SGD/Adam, or constrained csgd/csgld)")
    p.add_argument("--steps", type=int, default=10_000, help="optimizer steps (one mini-batch each)")
    p.add_argument("--hidden", type=int, default=100, help="hidden-layer width H of the 2-H-1 network")
    p.add_argument("--batch-frac", type=float, default=0.02,
                   help="mini-batch size as a fraction of the training set, in (0, 1]")
    p.add_argument("--n-train", type=int, default=500, help="training points")
    p.add_argument("--n-test", type=int, default=1000, help="test points")
    p.add_argument("--lr", type=float, default=None, help="step h (default per optimizer)")
    p.add_argument("--gamma", type=float, default=None, help="friction (adlala: 0.1; lol: gamma1 0.01; baoab: 0.1)")
    p.add_argument("--tau1", type=float, default=None, help="first-layer temperature")
    p.add_argument("--tau2", type=float, default=None, help="other layers' temperature")
    p.add_argument("--sigma-A", type=float, default=0.01, help="adlala driving noise; sgld/csgld noise sigma")
    p.add_argument("--radius", type=float, default=1.0, help="csgd/csgld: bound r of every weight (circle constraint)")
    p.add_argument("--eps", type=float, default=0.05, help="adlala thermostat coupling")
    p.add_argument("--init-std", type=float, default=None,
                   help="Gaussian initialisation of weights with this std (default: torch's own)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data, the initial weights, the batches and the optimizer's noise")
    p.add_argument("--out", default=None, help="directory for DATA_OPTIMIZER_seedSEED.png (decision regions) and "
                        "DATA_OPTIMIZER_seedSEED.json (arguments and accuracies)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1 is fastest for these small networks; 0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _check(args):
    for name, value, low in (("--steps", args.steps, 1), ("--hidden", args.hidden, 1),
                             ("--n-train", args.n_train, 2), ("--n-test", args.n_test, 2),
                             ("--seed", args.seed, 0), ("--threads", args.threads, 0)):
        if value < low:
            raise ValueError(f"{name}: must be >= {low}, got {value!r}")
    if not (0.0 < args.batch_frac <= 1.0):
        raise ValueError(f"--batch-frac: must be in (0, 1], got {args.batch_frac!r}")
    for name in ("turns", "freq", "lr", "tau1", "tau2", "gamma", "sigma_A", "eps", "init_std", "noise", "radius"):
        value = getattr(args, name)
        flag = "--" + name.replace("_", "-")
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError(f"{flag}: must be finite and >= 0, got {value!r}")
    for name in ("turns", "freq", "lr", "radius"):
        if getattr(args, name) == 0:
            raise ValueError(f"--{name}: must be > 0, got 0")


def make_data(args):
    maker = (lambda n, s: datasets.spirals(n, turns=args.turns, c=args.noise, seed=s)) if args.data == "spirals" \
        else (lambda n, s: datasets.trig(n, a=args.freq, b=2.0, c=args.noise, seed=s))
    Xtr, ytr = maker(args.n_train, args.seed)
    Xte, yte = maker(args.n_test, args.seed + 10_000)
    return Xtr, ytr, Xte, yte


def make_model(hidden, init_std=None, seed=0):
    """The 2-H-1 perceptron (ReLU; the sigmoid is in the loss, BCE with logits)."""

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    if init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, init_std)
    return model


def make_optimizer(name, model, args):
    lr = args.lr if args.lr is not None else DEFAULT_LR[name]
    given = lambda **kw: {k: v for k, v in kw.items() if v is not None}  # unset: the preset's default
    if name == "adlala":
        return AdLaLa(model, lr=lr, sigma_A=args.sigma_A, eps=args.eps, seed=args.seed,
                      **given(tau1=args.tau1, tau2=args.tau2, gamma=args.gamma))
    if name == "lol":
        return LOL(model, lr=lr, seed=args.seed, **given(gamma1=args.gamma, tau1=args.tau1, tau2=args.tau2))
    if name == "baoab":  # the CLI's own defaults (the preset's are gamma 1, kT 1e-4 everywhere)
        tau1 = 1e-4 if args.tau1 is None else args.tau1
        tau2 = 1e-4 if args.tau2 is None else args.tau2
        return MultiLayerLangevin(model, lr=lr, gamma=0.1 if args.gamma is None else args.gamma,
                                  kT=[tau1] + [tau2] * (len(layers(model)) - 1), seed=args.seed)
    if name in ("csgd", "csgld"):
        return ConstrainedSGLD(model, Circle(args.radius), lr=lr, sigma=args.sigma_A if name == "csgld" else 0.0,
                               seed=args.seed)
    if name == "sgld":
        return SGLD(model, lr=lr, sigma=args.sigma_A, seed=args.seed)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr)
    return torch.optim.Adam(model.parameters(), lr=lr)


def fit(model, opt, data, steps, batch, seed, eval_every=None, progress=False, desc=""):
    """The training loop: ``steps`` optimizer steps on fresh mini-batches; one place for it.

    Each step draws ``batch`` training indices with replacement from a generator seeded
    with ``seed + 1`` and calls ``opt.step(closure)`` with the mean binary cross-entropy
    of the batch. ``data`` is (Xtr, ytr, Xte, yte) as tensors. Every ``eval_every`` steps
    (and after the first) the test loss and accuracy are recorded, without touching any
    random stream. Returns a dict: ``seconds``, ``cpu_seconds``, ``last_loss`` and, with
    ``eval_every``, ``curve_steps``, ``curve_test_loss``, ``curve_test_accuracy``.
    """
    from tqdm import tqdm

    Xtr, ytr, Xte, yte = data
    gen = torch.Generator().manual_seed(seed + 1)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    current = {}

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(current["X"]).squeeze(-1), current["y"])
        loss.backward()
        return loss

    curves = {"curve_steps": [], "curve_test_loss": [], "curve_test_accuracy": []}
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(range(steps), disable=not progress, desc=desc, mininterval=0.5)
    loss = None
    for k in bar:
        idx = torch.randint(0, Xtr.shape[0], (batch,), generator=gen)
        current["X"], current["y"] = Xtr[idx], ytr[idx]
        loss = opt.step(closure)
        if progress and k % 500 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if eval_every and ((k + 1) % eval_every == 0 or k == 0):
            test_loss, test_acc = loss_and_accuracy(model, Xte, yte)
            curves["curve_steps"].append(k + 1)
            curves["curve_test_loss"].append(test_loss)
            curves["curve_test_accuracy"].append(test_acc)
    out = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
           "last_loss": None if loss is None else float(loss.detach())}
    return {**out, **curves} if eval_every else out


def loss_and_accuracy(model, X, y):
    """Mean binary cross-entropy and accuracy (logit > 0 means class 1) on (X, y)."""

    with torch.no_grad():
        logits = model(X).squeeze(-1)
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, y))
        return loss, float(((logits > 0).to(y.dtype) == y).float().mean())


def accuracy(model, X, y):
    return loss_and_accuracy(model, X, y)[1]


def train(args):
    """Train as the parsed ``args`` say; returns a dict of results (accuracies, seconds, model)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    Xtr, ytr, Xte, yte = make_data(args)
    tensors = (*as_tensors(Xtr, ytr), *as_tensors(Xte, yte))
    model = make_model(args.hidden, args.init_std, args.seed)
    opt = make_optimizer(args.optimizer, model, args)
    batch = max(1, int(round(args.batch_frac * args.n_train)))
    run = fit(model, opt, tensors, args.steps, batch, args.seed, progress=not args.quiet, desc=args.optimizer)
    if run["last_loss"] is not None and not math.isfinite(run["last_loss"]):
        raise FloatingPointError(f"training diverged: loss {run['last_loss']} at step {args.steps}")
    return {"train_accuracy": accuracy(model, *tensors[:2]), "test_accuracy": accuracy(model, *tensors[2:]),
            "seconds": run["seconds"], "steps": args.steps, "batch": batch, "model": model,
            "data": (Xtr, ytr, Xte, yte)}


def plot_decision_regions(model, Xtr, ytr, Xte, yte, path, title=""):
    """Save a PNG of the classifier's regions (P(class 1) > 1/2) with the data on top."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X = np.concatenate([Xtr, Xte])
    lo, hi = X.min(axis=0) - 0.2, X.max(axis=0) + 0.2
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
    grid = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.get_default_dtype())
    with torch.no_grad():
        prob = torch.sigmoid(model(grid)).reshape(gx.shape).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.contourf(gx, gy, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
    ax.contour(gx, gy, prob, levels=[0.5], colors="k", linewidths=1)
    ax.scatter(Xte[:, 0], Xte[:, 1], c=yte, cmap="RdBu_r", s=6, edgecolors="none", alpha=0.8, label="test")
    ax.scatter(Xtr[:, 0], Xtr[:, 1], c=ytr, cmap="RdBu_r", s=14, edgecolors="k", linewidths=0.3, label="train")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    """Entry point of ``sdekit train``; bad arguments raise ValueError naming the argument."""
    args = parser().parse_args(argv)
    _check(args)
    res = train(args)
    print(f"{args.optimizer} on {args.data} ({'turns=%g' % args.turns if args.data == 'spirals' else 'a=%g' % args.freq}), "
          f"H={args.hidden}, {args.steps} steps, batch {res['batch']}: "
          f"train accuracy {res['train_accuracy']:.3f}, test accuracy {res['test_accuracy']:.3f} "
          f"({res['seconds']:.1f} s)")
    if args.out is not None:
        os.makedirs(args.out, exist_ok=True)
        stem = f"{args.data}_{args.optimizer}_seed{args.seed}"
        png = plot_decision_regions(
            res["model"], *res["data"], os.path.join(args.out, stem + ".png"),
            title=f"{args.optimizer}, {args.steps} steps: train {res['train_accuracy']:.3f}, "
                  f"test {res['test_accuracy']:.3f}")
        summary = {k: v for k, v in vars(args).items()}
        summary.update({k: res[k] for k in ("train_accuracy", "test_accuracy", "seconds", "batch")})
        with open(os.path.join(args.out, stem + ".json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(f"wrote {png}")
    return 0
