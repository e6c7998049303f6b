"""Shared by the training reproductions (Figs 8, 10, 11-12 of the partitioned-integrators paper).

One training run = ``sdekit.train``'s setting (data, model, optimizer built by its
``make_data``, ``make_model``, ``make_optimizer``), with the test accuracy and loss
recorded along the way so that curves can be drawn. Runs are sequential, one torch
thread, so that wall times are comparable. Raw per-run numbers go to a JSON file
next to the figure (``--plot-only`` redraws from it).
"""
import json
import math
import os
import tempfile
import time

import numpy as np
import torch

from sdekit import train as T
from sdekit.datasets import as_tensors

from _results import FIGURES


def settings(**overrides):
    """``sdekit train``'s default arguments with ``overrides`` (names as attributes: sigma_A, n_train)."""
    args = T.parser().parse_args([])
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise ValueError(f"{key}: not an sdekit train setting")
        setattr(args, key, value)
    T._check(args)
    return args


def run(args, eval_every=None, model=None, keep_model=False, make_optimizer=None):
    """Train once with :func:`sdekit.train.fit`; returns per-run numbers (final and, every
    ``eval_every`` steps, test loss/accuracy).

    ``model`` (optional) replaces the seeded initialisation, e.g. to start two optimizers
    from the same parameters; ``make_optimizer(model, args)`` replaces
    ``sdekit.train.make_optimizer`` (``args.optimizer`` is then only a label).
    """
    torch.set_num_threads(1)
    Xtr, ytr, Xte, yte = T.make_data(args)
    data = (*as_tensors(Xtr, ytr), *as_tensors(Xte, yte))
    model = T.make_model(args.hidden, args.init_std, args.seed) if model is None else model
    opt = make_optimizer(model, args) if make_optimizer else T.make_optimizer(args.optimizer, model, args)
    batch = max(1, int(round(args.batch_frac * args.n_train)))
    fitted = T.fit(model, opt, data, args.steps, batch, args.seed, eval_every=eval_every)
    test_loss, test_acc = T.loss_and_accuracy(model, *data[2:])
    train_loss, train_acc = T.loss_and_accuracy(model, *data[:2])
    out = {"seed": args.seed, "optimizer": args.optimizer, "test_accuracy": test_acc, "test_loss": test_loss,
           "train_accuracy": train_acc, "train_loss": train_loss, "diverged": not math.isfinite(test_loss),
           **{k: v for k, v in fitted.items() if k != "last_loss"}}
    if keep_model:
        out["model"], out["opt"] = model, opt
    return out


def mean_se(values):
    """Mean and standard error over independent runs (SE = sample std / sqrt(n))."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


QUICK_DIR = os.path.join(tempfile.gettempdir(), "sdekit_analysis_quick")


def path(name, quick):
    """Where a script's output goes: analysis/figures/, or a temporary folder for --quick runs."""
    folder = QUICK_DIR if quick else FIGURES
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


def save(name, payload, quick=False):
    path_ = path(name, quick)
    with open(path_, "w") as fh:
        json.dump(payload, fh, indent=1)
    return path_


def load(name, quick=False):
    with open(path(name, quick)) as fh:
        return json.load(fh)


def run_methods(methods, runs, base, eval_every=None, desc="", seed0=0):
    """All ``methods`` (label -> settings overrides) for seeds seed0..seed0+runs-1; label -> list of runs.

    Seed s gives every method the same data and initialisation (paired comparison). A method's
    overrides may hold ``make_optimizer`` (see :func:`run`) and ``after`` (``after(result)`` ->
    dict of extra numbers, called with the trained model in ``result["model"]``).
    """
    from tqdm import tqdm

    results = {label: [] for label in methods}
    bar = tqdm(total=runs * len(methods), desc=desc, mininterval=2.0)
    for seed in range(seed0, seed0 + runs):
        for label, over in methods.items():
            over = dict(over)
            make, after = over.pop("make_optimizer", None), over.pop("after", None)
            args = settings(**{**base, **over, "seed": seed})
            r = run(args, eval_every=eval_every, make_optimizer=make, keep_model=after is not None)
            if after is not None:
                r.update(after(r))
            r["label"] = label
            if r["diverged"]:
                print(f"warning: {label} seed {seed} diverged (kept, counted as its accuracy)")
            results[label].append(r)
            bar.update()
    bar.close()
    return results


def summary(results, key="test_accuracy"):
    """label -> (mean, se, n, mean seconds per run): CPU seconds (process time, evaluations included)
    where recorded, else wall seconds; the wall time of the shared machine varies with its load."""
    def cost(r):
        return r.get("cpu_seconds", r["seconds"])

    return {label: (*mean_se([r[key] for r in rs]), len(rs), float(np.mean([cost(r) for r in rs])))
            for label, rs in results.items()}


def cli(description, runs, steps, extra=None):
    """The scripts' flags: _results' (--quick, --seed) plus --runs, --steps, --plot-only, and a
    script's own (``extra``: flag -> argparse.add_argument keywords)."""
    from _results import parser

    p = parser(description)
    for flag, spec in (extra or {}).items():
        p.add_argument(flag, **spec)
    p.set_defaults(seed=0)
    p.add_argument("--runs", type=int, default=runs, help="independent runs per method (seeds seed..seed+runs-1)")
    p.add_argument("--steps", type=int, default=steps, help="training steps per run")
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from the saved JSON")
    p.add_argument("--init-std", type=float, default=None,
                   help="Gaussian initialisation of the weights with this std (default: torch's)")
    args = p.parse_args()
    if args.quick:
        args.runs, args.steps = min(args.runs, 2), min(args.steps, 200)
    if args.runs < 1 or args.steps < 1:
        raise ValueError(f"--runs/--steps: must be >= 1, got {args.runs!r}/{args.steps!r}")
    return args


def fmt(mean, se, scale=100.0, digits=1):
    return f"{scale * mean:.{digits}f} +- {scale * se:.{digits}f}"


def strip(results):
    """Per-run records without the torch model (JSON-ready)."""
    return {label: [{k: v for k, v in r.items() if k not in ("model", "opt")} for r in rs]
            for label, rs in results.items()}


def band(ax, runs, key="curve_test_accuracy", scale=100.0, **style):
    """Mean +- SE over runs of a recorded curve, as a line and a shaded band."""
    steps = np.asarray(runs[0]["curve_steps"])
    values = scale * np.array([r[key] for r in runs], dtype=float)
    mean = values.mean(axis=0)
    se = values.std(axis=0, ddof=1) / math.sqrt(len(runs)) if len(runs) > 1 else np.zeros_like(mean)
    line, = ax.plot(steps, mean, **style)
    ax.fill_between(steps, mean - se, mean + se, color=line.get_color(), alpha=0.2, lw=0)
    return line


def cost_unit(results):
    """'CPU s/run' or 'wall s/run': what :func:`summary`'s seconds are for these results."""
    first = next(iter(results.values()))[0]
    return "CPU s/run" if "cpu_seconds" in first else "wall s/run"
