"""The ``sdekit`` command.

    sdekit study     the discretization-error study: BAOAB, ABOBA, OBABO, BABO on the
                     1-D double well; table of configurational and kinetic bias with
                     standard errors and fitted orders; study.png and study.csv
    sdekit schemes   the catalogue of named schemes: steps and force evaluations
    sdekit bias      stationary bias of one scheme on one system over a step grid;
                     with --kl the near-equilibrium KL divergence from shadow work instead
    sdekit weak      weak error at a fixed time of one scheme on one system
    sdekit reweight  moments under another harmonic force from Girsanov path weights
                     (sdekit.girsanov), against the target chain's exact ones
    sdekit train     training a network with a Langevin optimizer (sdekit.train)

Bad arguments give a one-line ``sdekit: error: ...`` naming the argument and a
non-zero exit status.
"""
import argparse
import math
import importlib
import os
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from . import analysis, backends, girsanov, kl, systems
from .schemes import Scheme, catalogue
from .simulate import ensemble

STUDY_SCHEMES = ("BAOAB", "ABOBA", "OBABO", "BABO")
# h >= 0.35 on the double well at kT = 1: 30-95 % of paths escape (|q| > 2 is unstable)
# within 200 time units, so the largest step of the default grid is 0.3.
STUDY_HS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
# paths per step size, by backend: about a minute on 2 cores (numpy: ~2e7 path-steps/s)
STUDY_PATHS = {"numpy": 16_000, "cpu": 16_000, "cuda": 1_000_000}
STUDY_STEPS = 700          # steps per path at the largest h: 210 time units at h = 0.3
BURN_IN_FRACTION = 0.1


def _systems():
    return {
        "doublewell": (lambda: systems.DoubleWell(1), 5.0),
        "harmonic": (lambda: systems.Harmonic(1.0), None),
        "gaussian": (lambda: systems.Gaussian([[4.0, 1.0], [1.0, 1.0]]), None),
    }


def _floats(text):
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _names(text):
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _int_at_least(low, what):
    """argparse type: an integer >= ``low`` ("expected a {what} integer" otherwise)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_nonnegative_int = _int_at_least(0, "non-negative")


def _paths(text):
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"need at least 2 paths (standard errors), got {text!r}")
    return value


SYSTEM_HELP = ("test system: doublewell U = (q^2 - 1)^2, harmonic U = q^2/2, gaussian "
               "U = q^T K q/2 with K = [[4, 1], [1, 1]] (default: %(default)s)")


def _common(p, *, hs_default, paths_help, system_default="doublewell"):
    p.add_argument("--system", choices=sorted(_systems()), default=system_default, help=SYSTEM_HELP)
    p.add_argument("--hs", type=_floats, default=list(hs_default),
                   help="comma-separated step sizes (default: %(default)s)")
    p.add_argument("--gamma", type=float, default=1.0, help="friction (default 1)")
    p.add_argument("--kT", type=float, default=1.0, help="temperature (default 1)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed (default 0)")
    p.add_argument("--paths", type=_paths, default=None, help=paths_help)
    p.add_argument("--backend", choices=tuple(backends.REGISTRY), default=None,
                   help="simulation backend (default: the fastest available)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser():
    parser = argparse.ArgumentParser(prog="sdekit", description="Splitting integrators for Langevin SDEs: "
                                     "discretization-error studies from the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("study", help="configurational and kinetic bias of BAOAB, ABOBA, OBABO, BABO",
                       description="Stationary bias of <q^2> (configurational) and <p^2> (kinetic, on-step) "
                                   "for several schemes over a step grid, with standard errors from the data "
                                   "and fitted orders; writes study.png, study.csv and study.json.")
    p.add_argument("--schemes", type=_names, default=list(STUDY_SCHEMES),
                   help="comma-separated schemes (default: %(default)s)")
    _common(p, hs_default=STUDY_HS,
            paths_help="independent paths per step size (default: 16000; 1000000 on a GPU)")
    p.add_argument("--steps", type=_positive_int, default=STUDY_STEPS,
                   help="steps per path at the largest h; every h covers the same time, "
                        "the first 10%% discarded (default: %(default)s)")
    p.add_argument("--out", default="sdekit-study", help="output directory (default: ./sdekit-study)")
    p.add_argument("--quick", action="store_true", help="a fast smoke run (1/8 of the paths, 1/4 of the steps)")

    p = sub.add_parser("schemes", help="the catalogue of named schemes",
                       description="Each named scheme's steps, sub-steps and force evaluations per step.")
    p.add_argument("names", nargs="*", type=_names, metavar="NAMES",
                   help="schemes or words to describe, space- or comma-separated (default: the catalogue)")

    p = sub.add_parser("bias", help="stationary bias of one scheme",
                       description="Stationary bias of built-in observables for one scheme over a step grid.")
    p.add_argument("--scheme", default="BAOAB", help="scheme name or word (default BAOAB)")
    p.add_argument("--observable", type=_names, default=["q2", "p2"],
                   help="comma-separated built-in observables: q2, p2, p2_O, q, p, p_O (default q2,p2)")
    _common(p, hs_default=STUDY_HS, paths_help="independent paths (default 10000)")
    p.add_argument("--time", type=float, default=200.0, help="simulated time per path (default 200)")
    p.add_argument("--burn-in", type=float, default=20.0, help="discarded initial time (default 20)")
    p.add_argument("--out", default=None, help="directory for bias.csv, bias.json, bias.png (optional)")
    p.add_argument("--kl", action="store_true",
                   help="instead: the near-equilibrium estimate of the KL divergence of the sampled "
                        "configuration and phase-space laws from the target, from shadow work (Fass et al. "
                        "2018); exact values alongside for the harmonic and gaussian systems")
    p.add_argument("--protocol-steps", type=_positive_int, default=50,
                   help="with --kl: steps of each of the two protocols (default 50)")

    p = sub.add_parser("weak", help="weak error at a fixed time of one scheme",
                       description="Weak error E[f(X_N)] - E[f(X(T))] of one scheme from a fixed start; "
                                   "exact reference for linear systems, else a fine-step reference.")
    p.add_argument("--scheme", default="BAOAB", help="scheme name or word (default BAOAB)")
    p.add_argument("--observable", default="q2", help="one built-in observable: q, q2, p, p2 (default q2)")
    _common(p, hs_default=(0.05, 0.1, 0.2, 0.25, 0.5), system_default="harmonic",
            paths_help="independent paths per step size (default 100000)")
    p.add_argument("--T", type=float, default=1.0, help="final time; T/h must be integers (default 1)")
    p.add_argument("--q0", type=float, default=1.0, help="initial position, every coordinate (default 1)")
    p.add_argument("--coordinate", type=_nonnegative_int, default=None, help="coordinate (needed when d > 1)")
    p.add_argument("--out", default=None, help="directory for weak.csv, weak.json, weak.png (optional)")

    p = sub.add_parser("reweight", help="moments under another harmonic force from Girsanov path weights",
                       description="Run a scheme on U = omega^2 q^2/2 with the path weights of the change of drift "
                                   "to U = target^2 q^2/2 (sdekit.girsanov) and compare the reweighted moments "
                                   "at the final step with the target chain's exact ones.")
    p.add_argument("--scheme", default="BAOAB", help="scheme name or word with O letters, or EM (default BAOAB)")
    p.add_argument("--omega", type=float, default=1.0, help="the proposal's frequency (default 1)")
    p.add_argument("--target", type=float, default=1.2, help="the target's frequency (default 1.2)")
    p.add_argument("--h", type=float, default=0.1, help="step size (default 0.1)")
    p.add_argument("--steps", type=_positive_int, default=50, help="steps per path (default 50)")
    p.add_argument("--q0", type=float, default=1.0, help="initial position (default 1; p0 = 0)")
    p.add_argument("--gamma", type=float, default=1.0, help="friction (default 1)")
    p.add_argument("--kT", type=float, default=1.0, help="temperature (default 1)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed (default 0)")
    p.add_argument("--paths", type=_paths, default=100_000, help="paths (default 100000)")
    p.add_argument("--backend", choices=tuple(backends.REGISTRY), default=None,
                   help="numpy, cpu or cuda (default: the fastest available)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    sub.add_parser("train", help="train a network with a Langevin optimizer (see: sdekit train --help)",
                   add_help=False)
    return parser


# ----------------------------------------------------------------------------- commands

def _check_backend(name):
    """Refuse an unavailable ``--backend`` before anything runs or is printed."""
    if name is not None and not backends.get(name).available():
        message = backends.get(name).unavailable()
        raise ValueError("--" + message if message.startswith("backend:") else f"--backend: {message}")


def _backend_name(backend):
    return backend or backends.default().name


def _system(name):
    factory, max_abs = _systems()[name]
    return factory(), max_abs


_SHORT = {"q2": "configurational", "p2": "kinetic"}


def _order_cell(fit):
    """'p [low,high]', with '^' when the data say it is not an asymptotic order."""
    if fit is None:
        return "unresolved"
    return f"{fit.order:.2f} [{fit.ci[0]:.2f},{fit.ci[1]:.2f}]" + ("" if fit.asymptotic else "^")


def study_table(result, schemes, observables=("q2", "p2")):
    """Rows h, columns schemes: 'error (SE)' per observable, then the fitted orders."""
    lines = []
    for obs in observables:
        curves = [result.curve(s, obs) for s in schemes]
        c0 = curves[0]
        label = {"q2": "configurational <q^2>", "p2": "kinetic <p^2> (on-step)"}.get(obs, obs)
        lines.append(f"bias in {label}, exact {c0.exact:.6f}: error (standard error)")
        lines.append("  " + f"{'h':>6}" + "".join(f"{c.scheme:>23}" for c in curves))
        for k, h in enumerate(c0.hs):
            cells = []
            for c in curves:
                cell = f"{c.errors[k]:+.2e} ({c.stderr[k]:.1e})"
                cells.append(cell + ("*" if c.diverged[k] else " "))
            lines.append("  " + f"{h:6.3g}" + "".join(f"{cell:>23}" for cell in cells))
        lines.append("  " + f"{'order':>6}" + "".join(f"{_order_cell(c.fit):>23}" for c in curves))
        lines.append("")
    lost = {c.scheme: int(np.sum(c.diverged)) for c in result.curves if c.observable == observables[0]}
    if any(lost.values()):
        lines.append("* paths diverged (escaped past |q| > max_abs) and were masked: "
                     + ", ".join(f"{s}: {n}" for s, n in lost.items() if n)
                     + " (counts per scheme over all h; see study.csv)")
    caveats = [(c, obs) for obs in observables for c in (result.curve(s, obs) for s in schemes)
               if c.fit is not None and not c.fit.asymptotic]
    if caveats:
        lines.append("^ not an asymptotic order (the data say so; no fit line in study.png):")
        lines.extend(f"    {c.scheme} {_SHORT.get(obs, obs)}: {c.fit.caveat}" for c, obs in caveats)
    lines.append(f"standard errors: {result.curves[0].method}; orders: 95% CI of a weighted "
                 f"least-squares fit of log|error| vs log h over errors resolved at >= 2 SE")
    return "\n".join(lines)


def run_study(args):
    schemes = [Scheme(s).word for s in args.schemes]
    system, max_abs = _system(args.system)
    backend = _backend_name(args.backend)
    n_paths = args.paths or STUDY_PATHS.get(backend, STUDY_PATHS["numpy"])
    steps = args.steps
    if args.quick:
        n_paths, steps = max(n_paths // 8, 2), max(steps // 4, 20)
    hs = sorted(args.hs)
    duration = steps * max(hs)
    n_steps = [int(round(duration / h)) for h in hs]
    burn_in = [int(round(BURN_IN_FRACTION * n)) for n in n_steps]
    os.makedirs(args.out, exist_ok=True)
    print(f"sdekit study: {', '.join(schemes)} on {system!r}, kT={args.kT}, gamma={args.gamma}; "
          f"h = {', '.join(f'{h:g}' for h in hs)}; {n_paths} paths x {duration:g} time units per h "
          f"(burn-in {BURN_IN_FRACTION * duration:g}); backend {backend}", flush=True)
    started = time.perf_counter()
    bar = tqdm(total=len(schemes) * sum(n_steps), desc="study", unit="step", unit_scale=True,
               disable=args.no_progress, mininterval=1.0)
    result = None
    seeds = np.random.SeedSequence(args.seed).spawn(len(schemes))
    for scheme, ss in zip(schemes, seeds):
        part = analysis.stationary_bias(scheme, system, ["q2", "p2"], hs, gamma=args.gamma, kT=args.kT,
                                        n_paths=n_paths, n_steps=n_steps, burn_in=burn_in, seed=ss,
                                        backend=args.backend, max_abs=max_abs, progress=bar)
        result = part if result is None else result + part
    bar.close()
    result.settings.update(schemes=schemes, seed=args.seed, wall_s=time.perf_counter() - started)
    print(study_table(result, schemes))
    png = os.path.join(args.out, "study.png")
    result.plot(png, title=f"stationary bias: {system!r}, kT={args.kT}, gamma={args.gamma}")
    result.to_csv(os.path.join(args.out, "study.csv"))
    result.to_json(os.path.join(args.out, "study.json"))
    print(f"wrote {png}, study.csv, study.json in {args.out} ({time.perf_counter() - started:.1f} s)")
    return 0


def run_schemes(args):
    if args.names:
        described = [Scheme(n) for group in args.names for n in group]  # every name checked first
        for scheme in described:
            print(scheme.describe())
        return 0
    for name, (scheme, text) in catalogue().items():
        print(f"{name}: {text}")
        if not scheme.overdamped:
            print(scheme.describe())
        print()
    return 0


def _write(result, out, stem):
    if out is None:
        return
    os.makedirs(out, exist_ok=True)
    result.to_csv(os.path.join(out, f"{stem}.csv"))
    result.to_json(os.path.join(out, f"{stem}.json"))
    if any(c.errors is not None for c in result.curves):
        result.plot(os.path.join(out, f"{stem}.png"))
    print(f"wrote {stem}.csv, {stem}.json, {stem}.png in {out}")


def kl_table(rows, exact):
    """Rows h: the configuration and phase-space estimates 'KL (SE)', and the exact values if known."""
    head = f"{'h':>6}{'configuration':>24}{'phase space':>24}" + (f"{'exact conf.':>14}{'exact phase':>14}"
                                                               if exact else "")
    lines = [head]
    for h, est, ex in rows:
        c, p = est["configuration"], est["phase space"]
        line = f"{h:6.3g}{f'{c.estimate:+.3e} ({c.stderr:.1e})':>24}{f'{p.estimate:+.3e} ({p.stderr:.1e})':>24}"
        if exact:
            line += f"{ex[0]:14.3e}{ex[1]:14.3e}"
        lost = max(c.n_diverged, p.n_diverged)
        lines.append(line + (f"  ({lost} pairs diverged, dropped)" if lost else ""))
    return "\n".join(lines)


def run_kl(args, system, max_abs):
    hs = sorted(args.hs)
    gaussian = args.system in ("harmonic", "gaussian")
    print(f"sdekit bias --kl: {Scheme(args.scheme).word} on {system!r}, kT={args.kT}, gamma={args.gamma}; "
          f"{args.paths or 10_000} protocol pairs of {args.protocol_steps} steps per h "
          f"(near-equilibrium estimate, Fass et al. 2018; D_KL in nats, standard errors from the pairs)")
    rows = []
    hessian = system.hessian() if hasattr(system, "hessian") else getattr(system, "precision", None)
    for k, h in enumerate(hs):
        est = kl.kl_estimate(args.scheme, system, h, gamma=args.gamma, kT=args.kT, n_paths=args.paths or 10_000,
                             protocol_steps=args.protocol_steps, seed=args.seed + k,
                             backend=args.backend, on_divergence="mask", max_abs=max_abs)
        ex = [kl.gaussian_kl(args.scheme, hessian, h, gamma=args.gamma, kT=args.kT, marginal=m)
              for m in kl.MARGINALS] if gaussian else None
        rows.append((h, est, ex))
    print(kl_table(rows, gaussian))
    if args.out is not None:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "kl.csv")
        with open(path, "w") as f:
            f.write("h,marginal,estimate,stderr,n_pairs,n_diverged,exact\n")
            for h, est, ex in rows:
                for i, m in enumerate(kl.MARGINALS):
                    e = est[m]
                    f.write(f"{h!r},{m},{e.estimate!r},{e.stderr!r},{len(e.w_forward)},{e.n_diverged},"
                            f"{'' if ex is None else repr(ex[i])}\n")
        print(f"wrote kl.csv in {args.out}")
    return 0


def run_bias(args):
    system, max_abs = _system(args.system)
    if args.kl:
        return run_kl(args, system, max_abs)
    if not (math.isfinite(args.time) and args.time > 0):
        raise ValueError(f"--time: must be finite and positive, got {args.time!r}")
    if not 0 <= args.burn_in < args.time:
        raise ValueError(f"--burn-in: must be in [0, time), got {args.burn_in!r}")
    hs = sorted(args.hs)
    result = analysis.stationary_bias(
        args.scheme, system, args.observable, hs, gamma=args.gamma, kT=args.kT,
        n_paths=args.paths or 10_000, n_steps=[int(round(args.time / h)) for h in hs],
        burn_in=[int(round(args.burn_in / h)) for h in hs], seed=args.seed, backend=args.backend,
        max_abs=max_abs, progress=not args.no_progress)
    print(result.table())
    _write(result, args.out, "bias")
    return 0


def run_weak(args):
    system, max_abs = _system(args.system)
    result = analysis.weak_error(args.scheme, system, args.observable, args.T, sorted(args.hs),
                                 gamma=args.gamma, kT=args.kT, n_paths=args.paths or 100_000,
                                 seed=args.seed, q0=args.q0, backend=args.backend, max_abs=max_abs,
                                 coordinate=args.coordinate, progress=not args.no_progress)
    print(result.table())
    _write(result, args.out, "weak")
    return 0


def run_train(rest):
    try:
        train = importlib.import_module("sdekit.train")
    except ModuleNotFoundError as err:
        if err.name not in ("sdekit.train", "torch"):
            raise
        missing = "sdekit.train is not available in this version" if err.name == "sdekit.train" \
            else 'it needs torch: pip install torch (from a clone of sdekit: pip install ".[torch]")'
        print(f"sdekit: error: train: {missing}", file=sys.stderr)
        return 2
    code = train.main(rest)
    return 0 if code is None else code


def run_reweight(args):
    for name in ("omega", "target"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name}: must be finite and positive, got {v!r}")
    proposal, target = systems.Harmonic(args.omega), systems.Harmonic(args.target)
    scheme = Scheme(args.scheme)
    overdamped = scheme.overdamped is not None
    kw = dict(kT=args.kT, q0=args.q0, seed=args.seed, backend=args.backend, progress=not args.no_progress)
    if not overdamped:
        kw["gamma"] = args.gamma
    ens = ensemble(scheme, proposal, h=args.h, n_steps=args.steps, n_paths=args.paths,
                   drift_change=girsanov.difference(target, proposal), **kw)
    K, Ku = args.omega ** 2, args.target ** 2 - args.omega ** 2
    x0 = [args.q0] if overdamped else [args.q0, 0.0]
    law_kw = dict(kT=args.kT) if overdamped else dict(gamma=args.gamma, kT=args.kT)
    exact = girsanov.target_moments(scheme, K, Ku, args.h, args.steps, x0=x0, **law_kw)
    names = ["q", "q2"] + ([] if overdamped else ["p", "p2"])
    values = np.c_[ens.q[:, 0], ens.q[:, 0] ** 2] if overdamped else \
        np.c_[ens.q[:, 0], ens.q[:, 0] ** 2, ens.p[:, 0], ens.p[:, 0] ** 2]
    want = [exact.mean[0], exact.cov[0, 0] + exact.mean[0] ** 2]
    if not overdamped:
        want += [exact.mean[1], exact.cov[1, 1] + exact.mean[1] ** 2]
    r = girsanov.reweight(values, ens.log_weight)
    print(f"{scheme.word} on omega={args.omega:g} reweighted to omega={args.target:g}: h={args.h:g}, "
          f"{args.steps} steps, {ens.n_paths} paths, effective sample size {r.ess:.0f}")
    print(f"{'observable':<11}{'reweighted':>12}{'stderr':>11}{'exact':>12}{'z':>7}")
    for name, m, se, x in zip(names, r.mean, r.stderr, want):
        print(f"{name:<11}{m:>12.5f}{se:>11.5f}{x:>12.5f}{(m - x) / se:>7.2f}")
    law = girsanov.log_weight_law(scheme, K, Ku, args.h, args.steps, x0=x0, **law_kw) if args.steps <= 200 else None
    lw = ens.log_weight
    exact_text = "" if law is None else f" (exact {law.mean:.4f}, {law.var:.4f})"
    print(f"log w: mean {lw.mean():.4f}, variance {lw.var():.4f}{exact_text}")
    return 0


COMMANDS = {"study": run_study, "schemes": run_schemes, "bias": run_bias, "weak": run_weak,
            "reweight": run_reweight}


def main(argv=None):
    """Entry point of the ``sdekit`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        try:
            return run_train(argv[1:])
        except SystemExit as stop:  # --help
            return stop.code if isinstance(stop.code, int) else 2
        except ValueError as err:  # sdekit.train reports bad arguments as ValueError naming them
            print(f"sdekit: error: train: {err}", file=sys.stderr)
            return 2
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse has printed the usage, the message or --help
        return stop.code if isinstance(stop.code, int) else 2
    try:
        _check_backend(getattr(args, "backend", None))
        return COMMANDS[args.command](args)
    except ValueError as err:
        print(f"sdekit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
