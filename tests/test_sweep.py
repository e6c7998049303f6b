"""Sweeps on Dask: a LocalCluster gives the grid's local numbers, even when a worker dies."""
import os
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("distributed")
from distributed import Client, LocalCluster

import sdekit
from sdekit.sweep import grid_points, sweep
from sdekit.systems import Harmonic

GRID = {"scheme": ["BAOAB", "OBABO"], "h": [0.5, 1.0], "seed": [0, 1], "omega": [1.0]}
KW = dict(n_steps=200, n_paths=20_000, observables=("q2", "p2"), gamma=1.0, kT=1.0)


def test_grid_points_order_and_bad_grids():
    pts = grid_points({"a": [1, 2], "b": ["x"]})
    assert pts == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    for bad in ({}, {"a": []}, {"a": "xy"}, [1, 2]):
        with pytest.raises(ValueError, match="^grid"):
            grid_points(bad)
    with pytest.raises(ValueError, match="^observables"):
        sweep({"scheme": ["BAOAB"]}, Harmonic, n_steps=1, n_paths=2, observables=("nope",), scheduler="serial")


def test_serial_sweep_matches_exact_values():
    """BAOAB's <q^2> = kT / omega^2 and OBABO's <p^2> = kT at every h (independent-path errors)."""
    res = sweep(GRID, Harmonic, scheduler="serial", **KW)
    assert len(res.rows) == 8 and "q2_se" in res.table()
    for r in res.rows:
        exact, got, se = (1.0, r["q2"], r["q2_se"]) if r["scheme"] == "BAOAB" else (1.0, r["p2"], r["p2_se"])
        assert abs(got - exact) < 4.5 * se, r
    assert res.to_csv().splitlines()[0].startswith("scheme,h,seed,omega,q2,q2_se")


def test_local_cluster_equals_serial_even_when_a_worker_is_killed():
    serial = sweep(GRID, Harmonic, scheduler="serial", **KW).rows
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)
        out = {}
        worker = threading.Thread(target=lambda: out.update(rows=sweep(GRID, Harmonic, scheduler=client, **KW).rows))
        worker.start()
        killed = None
        deadline = time.time() + 60
        while killed is None and time.time() < deadline:
            busy = [addr for addr, tasks in client.processing().items() if tasks]
            if busy and worker.is_alive():
                killed = pids[busy[0]]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        worker.join(120)
        assert killed is not None, "no worker was busy: the sweep finished before the kill"
        assert not worker.is_alive()
        assert killed not in client.run(os.getpid).values()  # the worker really died (and was replaced)
    assert out["rows"] == serial  # complete, in order, bit for bit


def test_sweep_refuses_what_it_would_silently_ignore():
    """p2_O has no final per-path value (it was an all-NaN column), and grid keys meant for a
    fixed System instance would label rows while changing nothing."""
    fixed = dict(h=0.1, seed=0)
    with pytest.raises(ValueError, match="^observables:.*p2_O"):
        sweep({"scheme": ["BAOAB"]}, sdekit.systems.Harmonic(), n_steps=2, n_paths=2,
              observables=("p2_O",), scheduler="serial", **fixed)
    with pytest.raises(ValueError, match=r"^grid: \['omega'\]"):
        sweep({"scheme": ["BAOAB"], "omega": [1.0, 2.0]}, sdekit.systems.Harmonic(), n_steps=2, n_paths=2,
              scheduler="serial", **fixed)


def test_sweep_defaults_to_the_default_backend():
    """Issue 16: sweep took numpy by default while ensemble takes sdekit.backends.default()."""
    from sdekit import backends
    grid = {"scheme": ["BAOAB"], "h": [0.5], "seed": [0]}
    kw = dict(n_steps=20, n_paths=50, scheduler="serial", progress=False)
    rows = sweep(grid, Harmonic(), **kw).rows
    want = sweep(grid, Harmonic(), backend=backends.default().name, **kw).rows
    other = sweep(grid, Harmonic(), backend="numpy", **kw).rows
    assert rows == want and rows != other


def test_sweep_progress_default_follows_the_drivers_rule(monkeypatch):
    """progress=None: a bar only where someone sees it (a terminal or a Jupyter kernel), as
    sdekit.records.progress_bar; tests stay quiet."""
    import importlib
    from sdekit import records
    sw = importlib.import_module("sdekit.sweep")  # the module (sdekit.sweep is the function)
    seen = []

    class Bar:
        def __init__(self, **kw):
            seen.append(kw["disable"])

        def update(self, n):
            pass

        def close(self):
            pass

    monkeypatch.setattr(sw, "tqdm", Bar)
    grid = {"scheme": ["BAOAB"], "h": [0.5], "seed": [0, 1, 2, 3]}
    kw = dict(n_steps=2, n_paths=4, scheduler="serial", backend="numpy")
    sweep(grid, Harmonic(), **kw)
    monkeypatch.setattr(records, "in_notebook", lambda: True)
    sweep(grid, Harmonic(), **kw)
    sweep({"scheme": ["BAOAB"], "h": [0.5]}, Harmonic(), **kw)  # a short sweep: no bar
    assert seen == [True, False, True]
