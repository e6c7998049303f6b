"""sdekit: splitting integrators for Langevin-type stochastic differential equations.

    import sdekit
    s = sdekit.Scheme("BAOAB")
    run = sdekit.simulate(s, sdekit.systems.DoubleWell(), h=0.1, n_steps=10_000, seed=0)
    ens = sdekit.ensemble(s, sdekit.systems.Harmonic(), h=0.5, n_steps=200, n_paths=10_000, seed=0)
"""
from . import analysis, kernels, linear, operators, schemes, systems
from ._checks import DivergenceError
from .checkpoint import load, save
from .schemes import Scheme
from .simulate import Ensemble, State, Trajectory, ensemble, simulate
from .sweep import sweep

__version__ = "0.1.0"
__all__ = ["Scheme", "simulate", "ensemble", "Trajectory", "Ensemble", "State",
           "DivergenceError", "save", "load", "sweep", "operators", "schemes", "systems"]
