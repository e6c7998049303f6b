"""sdekit: splitting integrators for Langevin-type stochastic differential equations.

    import sdekit
    s = sdekit.Scheme("BAOAB")
    run = sdekit.simulate(s, sdekit.systems.DoubleWell(), h=0.1, n_steps=10_000, seed=0)
    ens = sdekit.ensemble(s, sdekit.systems.Harmonic(), h=0.5, n_steps=200, n_paths=10_000, seed=0)

Where things live (data flows one way: word -> Scheme -> backend -> records -> analysis)::

    operators.py      the letters' arithmetic: the one text every backend runs
    letters/          the alphabet: one module per letter (metadata + one hook per consumer),
                      the registry, CoordinateLetter (a user's letter from one function)
    schemes.py        words -> Scheme (fractions, lazy force, clock), read from the letters
    schedules.py      time-dependent gamma(t), kT(t), sigma_A(t): per-step coefficient tables
    systems.py        potentials (and their fingerprints); constraints.py: SHAKE/RATTLE
                      (the classes; rattle.py: the compiled per-path solvers)
    torch_systems.py  torch_module (a torch network as a system); system_base.py: System
    records.py        State, Trajectory, Ensemble and their assembly (below drivers and backends)
    reference.py      the numpy backend's step: a loop over the letters' numpy hooks
    kernels/          generated numba kernels: codegen.py (a loop over the letters' source
                      hooks), writer.py (what a hook writes with), storage.py (registers or
                      arrays), abi.py (every argument list, once), runtime.py, cpu.py, cuda.py
    backends.py       backends as objects (numpy, cpu, cuda): capabilities, refusals, default
    simulate.py       the drivers simulate() and ensemble(), checkpoints
    linear.py         exact Gaussian statistics: a product of the letters' linear maps
    analysis.py       stationary bias, weak error (and batch means); metrics.py, sweep.py
    fits.py           observed orders (fit_order), error curves (Curve, ErrorStudy) and their plot
    diagnostics.py    autocorrelation times, effective sample sizes, xarray/ArviZ export
    girsanov.py       path weights for a change of drift (drift_change=), reweighted averages, Kish ESS
    shadow.py kl.py   shadow work and heat of any word (shadow_work=); near-equilibrium KL from them
    torch/            the torch optimizer (optimizer.py: a loop over the letters' torch hooks),
                      its noise (noise.py, philox_normals.py), presets, manifolds, checkpoints
    diffusion.py      diffusion models, every name in one place: forward_sdes.py (VP, CLD,
                      marginals, scores), reverse_samplers.py (the samplers, through the
                      letters' diffusion hooks), diffusion_exact.py (exact Gaussian output
                      moments, distances, the convergence study)
    bridges.py        Schrödinger-bridge (I2SB) samplers, exact Gaussian errors, entropic OT
    clusters.py       many-particle systems: Lennard-Jones clusters (LJ-13, LJ-38 minima) in a wall
    cli.py train.py checkpoint.py datasets.py

sdekit.diffusion, .bridges, .clusters, .metrics, .datasets and .torch are imported on first access (torch only then).
"""
import importlib as _importlib

from . import (analysis, backends, constraints, diagnostics, girsanov, kernels, letters, linear, operators,
               records, schemes, systems)
from ._checks import DivergenceError
from .checkpoint import load, save
from .schemes import Scheme
from .simulate import Ensemble, State, Trajectory, ensemble, simulate
from .sweep import sweep

__version__ = "0.1.0"
__all__ = ["Scheme", "simulate", "ensemble", "Trajectory", "Ensemble", "State",
           "DivergenceError", "save", "load", "sweep", "operators", "schemes", "systems", "backends",
           "letters", "diagnostics", "constraints"]

_LAZY = ("diffusion", "bridges", "clusters", "metrics", "datasets", "torch")
"""Submodules imported on first access (``sdekit.diffusion``, ...), not by ``import sdekit``:
``torch`` needs PyTorch, the others are seldom needed."""


def __getattr__(name):
    """``sdekit.diffusion``, ``.bridges``, ``.clusters``, ``.metrics``, ``.datasets`` and ``.torch``, imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'sdekit' has no attribute {name!r}")
    try:
        return _importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if name == "torch" and err.name == "torch":
            raise ModuleNotFoundError("sdekit.torch needs PyTorch, which is not installed "
                                      "(pip install torch)", name="torch") from err
        raise


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
