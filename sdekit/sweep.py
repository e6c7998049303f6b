"""Sweeps: a grid of ensemble studies run as tasks on Dask distributed.

Every point of the grid (scheme x h x gamma x kT x seed x system parameters) is one
task: an :func:`~sdekit.ensemble` run whose seed is part of the point, so a task's
numbers do not depend on where, when or how often it runs. A lost worker's tasks are
simply run again elsewhere and give the same numbers, and the grid run on a cluster
equals the grid run in this process (``scheduler="serial"``).
"""
import csv
import io
import itertools
import json
import uuid
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from . import records
from ._checks import choice, integer
from .simulate import ensemble, ensemble_backend
from .systems import System

RUN_KEYS = ("scheme", "h", "gamma", "kT", "seed", "eps", "sigma_A")
OBSERVABLES = ("q", "q2", "p", "p2", "xi")  # final-state values (an Ensemble keeps no final p_O)


def grid_points(grid):
    """The cartesian product of ``grid`` (dict of name -> list), in a fixed order."""
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"grid: must be a non-empty dict of name -> list of values, got {grid!r}")
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
            raise ValueError(f"grid: {name!r} must be a non-empty list of values, got {values!r}")
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def run_point(point, system, n_steps, n_paths, observables, backend, fixed):
    """One task: an ensemble at ``point``; final-state averages over paths and coordinates,
    with standard errors from the independent paths."""
    run, sys = _run_arguments(point, system)
    e = ensemble(system=sys, n_steps=n_steps, n_paths=n_paths, backend=backend,
                 on_divergence="mask", **{**fixed, **run})
    alive = np.setdiff1d(np.arange(n_paths), e.diverged)
    finals = {"q": e.q, "q2": e.q ** 2, "xi": e.xi[:, None]}
    if e.p is not None:
        finals.update(p=e.p, p2=e.p ** 2)
    row = dict(point)
    for name in observables:
        if name not in finals:
            row[name] = row[name + "_se"] = float("nan")
            continue
        v = finals[name][alive].mean(axis=1)
        row[name] = float(v.mean())
        row[name + "_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    row["n_diverged"] = int(len(e.diverged))
    return row


def _run_arguments(point, system):
    """The ensemble arguments of ``point`` and its system."""
    run = {k: point[k] for k in RUN_KEYS if k in point}
    sys_params = {k: v for k, v in point.items() if k not in RUN_KEYS}
    return run, system if isinstance(system, System) else system(**sys_params)


def point_backend(point, system, fixed):
    """The backend a point runs on when the sweep names none: :func:`sdekit.ensemble`'s default
    for its arguments (:func:`sdekit.backends.default`), chosen here, where the sweep is
    started, so that a task's numbers do not depend on the worker it lands on."""
    run, sys = _run_arguments(point, system)
    kw = {**fixed, **run}
    return ensemble_backend(kw.pop("scheme"), sys, kw.pop("h"), **kw)


@dataclass
class SweepResult:
    """Rows of a sweep, one per grid point, in grid order."""

    rows: list

    def table(self):
        """The rows as aligned text."""
        cols = list(self.rows[0])
        fmt = lambda v: f"{v:.6g}" if isinstance(v, float) else str(v)
        cells = [[fmt(r[c]) for c in cols] for r in self.rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        line = lambda xs: "  ".join(x.rjust(w) for x, w in zip(xs, widths))
        return "\n".join([line(cols)] + [line(r) for r in cells])

    def to_csv(self, path=None):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.rows[0]))
        writer.writeheader()
        writer.writerows(self.rows)
        return _write(path, buf.getvalue())

    def to_json(self, path=None):
        return _write(path, json.dumps(self.rows, indent=1))


def _write(path, text):
    if path is not None:
        with open(path, "w") as f:
            f.write(text)
    return text


def sweep(grid, system, *, n_steps, n_paths, observables=("q2", "p2"), backend=None,
          scheduler=None, n_workers=2, progress=None, **fixed):
    """Run an ensemble at every point of ``grid``, as Dask tasks.

    Parameters
    ----------
    grid : dict of name -> list
        Swept values. ``scheme``, ``h``, ``gamma``, ``kT``, ``seed``, ``eps``,
        ``sigma_A`` go to :func:`~sdekit.ensemble`; any other name is a parameter
        of ``system``.
    system : System, or a callable ``system(**params) -> System``
        E.g. ``sdekit.systems.Harmonic`` with ``grid={"omega": [1, 2], ...}``.
    n_steps, n_paths : int
        Per point.
    observables : names among q, q2, p, p2, xi
        Final-state averages (over paths, and over coordinates) reported with
        standard errors from the independent paths.
    backend : the ensemble backend each task uses. Default: what :func:`~sdekit.ensemble`
        takes (:func:`sdekit.backends.default`: the first available backend that runs the
        point), chosen per point in this process, not on the worker.
    scheduler : None, "serial", an address such as "tcp://host:8786", or a
        ``distributed.Client``. None starts a LocalCluster of ``n_workers``
        single-threaded processes; "serial" runs in this process.
    progress : bool or None
        A bar over the tasks (``tqdm.auto``). None: for 4 points or more, when stderr is a
        terminal or in a Jupyter kernel (:func:`sdekit.records.interactive`).
    **fixed : further ensemble arguments shared by all points (q0, dtype, ...).

    Returns
    -------
    SweepResult, rows in grid order: the point, each observable and its ``_se``,
    and ``n_diverged`` (paths that left the stable region; never averaged in).
    """
    points = grid_points(grid)
    if "scheme" not in grid and "scheme" not in fixed:  # every point has the grid's keys
        raise ValueError("grid: needs a 'scheme' (in the grid or as a keyword)")
    if not (isinstance(system, System) or callable(system)):
        raise ValueError(f"system: must be a System or a callable returning one, got {system!r}")
    system_keys = sorted(set(grid) - set(RUN_KEYS))
    if isinstance(system, System) and system_keys:  # they would label rows but change nothing
        raise ValueError(f"grid: {system_keys} are not run parameters {list(RUN_KEYS)} and system is a fixed "
                         f"{system!r}; pass a callable making the system from them")
    n_steps, n_paths = integer("n_steps", n_steps), integer("n_paths", n_paths, low=2)
    for name in observables:
        choice("observables", name, OBSERVABLES)
    if "h" not in grid and "h" not in fixed:
        raise ValueError("grid: needs an 'h' (in the grid or as a keyword)")
    chosen = [backend if backend is not None else point_backend(p, system, fixed) for p in points]
    args = [(p, system, n_steps, n_paths, tuple(observables), b, fixed) for p, b in zip(points, chosen)]
    if progress is None:  # the drivers' rule: shown where someone sees it (a terminal, a Jupyter kernel)
        progress = len(points) >= 4 and records.interactive()
    bar = tqdm(total=len(points), disable=not progress, desc="sweep", unit="task")
    if scheduler == "serial":
        rows = []
        for a in args:
            rows.append(run_point(*a))
            bar.update(1)
        bar.close()
        return SweepResult(rows)
    return SweepResult(_run_dask(args, scheduler, n_workers, bar))


def _run_dask(args, scheduler, n_workers, bar):
    from distributed import Client, LocalCluster, as_completed

    own = None
    if scheduler is None:
        own = LocalCluster(n_workers=integer("n_workers", n_workers, low=1), threads_per_worker=1,
                           processes=True, dashboard_address=None)
        client = Client(own)
    elif isinstance(scheduler, str):
        client = Client(scheduler)
    elif isinstance(scheduler, Client):
        client = scheduler
    else:
        raise ValueError(f"scheduler: must be None, 'serial', an address or a distributed.Client, got {scheduler!r}")
    try:
        # unique keys: a shared client must never hand back another sweep's result
        tag = uuid.uuid4().hex
        futures = [client.submit(run_point, *a, key=f"sdekit-sweep-{tag}-{i}", retries=2)
                   for i, a in enumerate(args)]
        for _ in as_completed(futures):
            bar.update(1)
        return client.gather(futures)
    finally:
        bar.close()
        if client is not scheduler:
            client.close()
        if own is not None:
            own.close()
