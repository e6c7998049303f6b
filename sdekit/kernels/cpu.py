"""Backend "cpu": run the generated numba kernels and assemble the results.

``simulate`` runs one path in a compiled loop (``trajectory`` of the generated
module); ``ensemble`` runs all paths in parallel over fixed chunks (slices of them
through the generated ``ensemble``, which releases the GIL, on ``numba.get_num_threads()``
Python threads: no parfor to compile), streaming per-record sums. Results are bitwise the
same for any ``NUMBA_NUM_THREADS``.
"""
import concurrent.futures
import contextlib

import numpy as np

import numba

from .. import records
from ..records import check_paths, progress_bar
from ..reference import q_bound
from ..schedules import coefficient_tables
from . import PhiloxStream, abi, build, codegen, fill_normals  # noqa: F401  (fill_normals: kept here too)

PARTIAL_SUMS_BYTES = 64 * 2 ** 20
"""Memory allowed for the chunks' partial sums of one parallel sweep."""


def arguments(spec, state):
    """Working copies of the state's arrays and the run's scalar parameters."""
    dt = spec.dtype
    n, d = state.q.shape
    q = np.ascontiguousarray(state.q, dtype=dt).copy()
    p = np.zeros((1, d), dt) if state.p is None else np.ascontiguousarray(state.p, dtype=dt).copy()
    F = np.ascontiguousarray(state.force, dtype=dt).copy()
    R = np.zeros((1, d), dt) if state.noise is None else np.ascontiguousarray(state.noise, dtype=dt).copy()
    xi = np.ascontiguousarray(state.xi, dtype=dt).copy()
    stream = PhiloxStream.from_state(state.rng)
    # a time-dependent kernel reads gamma, kT and sigma from its table (see tables); 0 here is unused
    td = spec.time_dependent
    scalars = dict(h=float(spec.h), gamma=0.0 if td else float(spec.gamma), kT=0.0 if td else float(spec.kT),
                   eps=float(spec.eps), sigma=0.0 if td else float(spec.sigma),
                   max_abs=q_bound(spec))
    na = state.or_zeros("accepted")   # the paths' accepted Metropolis proposals, carried on
    lw = state.or_zeros("log_weight")   # their Girsanov log-weights (a change of drift), carried on
    return q, p, F, R, xi, na, lw, stream, scalars


def tables(spec, first_step, n_steps):
    """The kernel argument ``tab`` of a time-dependent spec: its coefficient tables
    (:func:`sdekit.schedules.coefficient_tables`) of steps first_step .. first_step + n_steps
    side by side (:func:`codegen.table_columns`; one row more than steps, for the overdamped
    schemes' force at t_n+1). None for a time-independent spec, whose kernel takes none
    (:mod:`sdekit.kernels.abi`). Memory: 8 (n_steps + 1) x width bytes."""
    if not spec.time_dependent:
        return None
    tab = coefficient_tables(spec, first_step, n_steps + 1)
    return np.ascontiguousarray(np.hstack([tab.t, tab.gamma, tab.sigma, tab.kT]), dtype=np.float64)


def kernel_values(spec, q, p, F, R, xi, na, lw, stream, scalars, **more):
    """``{argument: value}`` for a run's kernel calls, by the names of :mod:`sdekit.kernels.abi`
    (which orders them per kernel: :func:`abi.arguments`): the working arrays, the stream,
    the scalar parameters, the masses and ``more``."""
    return dict(scalars, q=q, p=p, F=F, R=R, xi=xi, na=na, lw=lw, key0=stream.key[0], key1=stream.key[1], ctr0=stream.counter,
                inv_mass=spec.inv_mass, sqrt_mass=spec.sqrt_mass, **more)


def shadow_arrays(spec, state):
    """``{"nw": work, "nh": heat}``: working copies of the paths' shadow work and heat (zeros at
    step 0; :mod:`sdekit.shadow`), empty for a spec without ``shadow_work``."""
    if not spec.shadow:
        return {}
    return dict(nw=state.or_zeros("work"), nh=state.or_zeros("heat"))


def final_state(spec, state, q, p, F, R, xi, stream, n_steps, na=None, lw=None, shadow=None):
    """The state after ``n_steps`` steps from ``state`` (:func:`sdekit.records.final_state`),
    the Philox stream advanced by the steps' draws; ``na`` the paths' Metropolis counts, ``lw``
    their Girsanov log-weights, ``shadow`` their :func:`shadow_arrays`."""
    used = n_steps * spec.scheme.draws(spec.dim)
    rng = PhiloxStream(stream.key, stream.counter + used).state()
    shadow = shadow or {}
    return records.final_state(state, n_steps, rng, q, p, xi, F, R, na if spec.scheme.tests else None, lw,
                               work=shadow.get("nw"), heat=shadow.get("nh"))


def summaries(spec, S, counts):
    """mean/meansq dicts of the built-in observables from the per-record sums S (n_rec, 3, K)."""
    cols, K = codegen.columns(spec.scheme, spec.dim, spec.drift_change is not None, spec.shadow)
    n = counts.astype(np.float64)[:, None]
    mean, meansq = {}, {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, (a, b) in cols.items():
            m1, m2, m4 = S[:, 0, a:b] / n, S[:, 1, a:b] / n, S[:, 2, a:b] / n
            if name in ("xi", "accepted", "log_weight", "work", "heat"):
                m1, m2 = m1[:, 0], m2[:, 0]
                dt = spec.dtype if name == "xi" else np.float64   # counts stay exact; the others float64
                mean[name], meansq[name] = m1.astype(dt), m2.astype(dt)
                continue
            square = {"q": "q2", "p": "p2", "p_O": "p2_O"}[name]
            mean[name], meansq[name] = m1.astype(spec.dtype), m2.astype(spec.dtype)
            mean[square], meansq[square] = m2.astype(spec.dtype), m4.astype(spec.dtype)
    return mean, meansq


def simulate(spec, state, n_steps, record_every, progress):
    """One trajectory; returns a :class:`sdekit.Trajectory` like the numpy backend."""
    kernel = build(spec.scheme, spec.system, np.dtype(spec.dtype).name, "cpu", spec.constraint, spec.time_dependent,
                   spec.drift_change, spec.shadow)
    q, p, F, R, xi, na, lw, stream, s = arguments(spec, state)
    sw = shadow_arrays(spec, state)
    d = spec.dim
    n_rec = 1 + n_steps // record_every
    rec_q, rec_p, rec_pO = (np.empty((n_rec, d), spec.dtype) for _ in range(3))
    rec_xi = np.empty(n_rec, spec.dtype)
    rec_na, rec_lw, rec_nw, rec_nh = np.empty(n_rec), np.empty(n_rec), np.empty(n_rec), np.empty(n_rec)
    with progress_bar(progress, n_steps, n_steps * d, spec.scheme.word) as bar:
        values = kernel_values(spec, q, p, F, R, xi, na, lw, stream, s, n_steps=n_steps, record_every=record_every,
                               rec_q=rec_q, rec_p=rec_p, rec_pO=rec_pO, rec_xi=rec_xi, rec_na=rec_na, rec_lw=rec_lw,
                               rec_nw=rec_nw, rec_nh=rec_nh, tab=tables(spec, state.step, n_steps), **sw)
        ctr, bad = kernel.trajectory(*abi.arguments(kernel, "trajectory", values))
        bar.update(n_steps)
    check_paths(spec, state.step, [bad])
    return records.trajectory(spec, state, record_every, rec_q, rec_p, rec_pO, rec_xi, {},
                              final_state(spec, state, q, p, F, R, xi, stream, n_steps, na, lw, sw), rec_na, rec_lw,
                              (rec_nw, rec_nh) if spec.shadow else None)


def ensemble(spec, state, n_steps, record_every, on_divergence, progress):
    """All paths in parallel; returns an :class:`sdekit.Ensemble` like the numpy backend."""
    kernel = build(spec.scheme, spec.system, np.dtype(spec.dtype).name, "cpu", spec.constraint, spec.time_dependent,
                   spec.drift_change, spec.shadow)
    q, p, F, R, xi, na, lw, stream, s = arguments(spec, state)
    sw = shadow_arrays(spec, state)
    n_paths = q.shape[0]
    n_rec = 1 + n_steps // record_every
    _, K = codegen.columns(spec.scheme, spec.dim, spec.drift_change is not None, spec.shadow)
    S = np.zeros((n_rec, 3, K))
    counts = np.zeros(n_rec, np.int64)
    bad = np.zeros(n_paths, np.int64)
    values = kernel_values(spec, q, p, F, R, xi, na, lw, stream, s, n_steps=n_steps, record_every=record_every, bad=bad,
                           tab=tables(spec, state.step, n_steps), **sw)
    n_chunks = -(-n_paths // codegen.CHUNK)
    # chunks per parallel sweep: bounded memory, enough chunks for every thread (any value gives the same sums)
    group = max(4 * numba.get_num_threads(), PARTIAL_SUMS_BYTES // (8 * n_rec * (3 * K + 1)))
    group = int(min(max(group, 1), n_chunks))
    with progress_bar(progress, n_steps, n_steps * n_paths * spec.dim, spec.scheme.word) as bar, \
            _threads() as pool:
        for g0 in range(0, n_chunks, group):
            g = min(group, n_chunks - g0)
            part = np.zeros((g, n_rec, 3, K))
            cnt = np.zeros((g, n_rec), np.int64)
            run = lambda a, b: kernel.ensemble(*abi.arguments(
                kernel, "ensemble", dict(values, first_chunk=g0 + a, part=part[a:b], cnt=cnt[a:b])))
            _in_parallel(pool, run, g)
            for c in range(g):   # in chunk order, whatever the threads (numpy adds elementwise, as a loop would)
                S += part[c]
                counts += cnt[c]
        bar.update(n_steps)
    return finish(spec, state, n_steps, record_every, on_divergence, q, p, F, R, xi, stream, S, counts, bad, na, lw,
                  sw)


def _threads():
    """A pool of ``numba.get_num_threads()`` threads for the chunks (none for one thread)."""
    n = numba.get_num_threads()
    return concurrent.futures.ThreadPoolExecutor(n) if n > 1 else contextlib.nullcontext()


def _in_parallel(pool, run, n_chunks):
    """``run(a, b)`` on slices of the chunks 0 .. n_chunks - 1, four per thread, on ``pool``'s threads
    (the generated ``ensemble`` runs without the GIL). Each chunk writes its own rows of the
    partial sums, so the result does not depend on the threads or the slicing."""
    if pool is None:
        run(0, n_chunks)
        return
    step = max(1, -(-n_chunks // (4 * numba.get_num_threads())))
    tasks = [pool.submit(run, a, min(a + step, n_chunks)) for a in range(0, n_chunks, step)]
    try:
        for task in tasks:
            task.result()   # re-raises a task's exception
    except BaseException:   # an interrupt (or a failed task): the slices not started are not run
        for task in tasks:
            task.cancel()
        raise


def finish(spec, state, n_steps, record_every, on_divergence, q, p, F, R, xi, stream, S, counts, bad, na, lw=None,
           shadow=None):
    """Raise or mask divergences; build the Ensemble (shared with the cuda backend)."""
    if on_divergence == "raise":
        check_paths(spec, state.step, bad)
    mean, meansq = summaries(spec, S, counts)
    return records.ensemble(spec, state, record_every, mean, meansq, counts.copy(), np.flatnonzero(bad != 0),
                            final_state(spec, state, q, p, F, R, xi, stream, n_steps, na, lw, shadow))
