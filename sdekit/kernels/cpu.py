"""Backend "cpu": run the generated numba kernels and assemble the results.

``simulate`` runs one path in a compiled loop (``trajectory`` of the generated
module); ``ensemble`` runs all paths in parallel over fixed chunks (``ensemble``
of the generated module, ``numba.prange``), streaming per-record sums. Results are
bitwise the same for any ``NUMBA_NUM_THREADS``.
"""
import numpy as np

from ..reference import divergence_error, q_bound
from . import PhiloxStream, build, codegen, runtime

PARTIAL_SUMS_BYTES = 64 * 2 ** 20
"""Memory allowed for the chunks' partial sums of one parallel sweep."""

_FILL = None


def fill_normals(key0, key1, ctr, out):
    """out[i, j] = normal number ctr + j of path i (the per-path Philox stream)."""
    global _FILL
    if _FILL is None:
        import numba

        f = runtime.functions("cpu")
        normal, first_spare = f["normal"], f["first_spare"]

        # serial: n_paths x d normals once per run; a parallel loop costs ~3 s more to compile
        # (and cannot be cached on disk) than it ever saves
        @numba.njit
        def fill(key0, key1, ctr, out):
            for i in range(out.shape[0]):
                c = ctr
                spare = first_spare(key0, key1, i, c)
                for j in range(out.shape[1]):
                    z, c, spare = normal(key0, key1, i, c, spare)
                    out[i, j] = z

        _FILL = fill
    _FILL(key0, key1, ctr, out)


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
    return q, p, F, R, xi, stream, scalars


def tables(spec, first_step, n_steps):
    """The extra kernel arguments of a time-dependent spec: ``(tab,)``, its coefficient tables
    (:func:`sdekit.schedules.coefficient_tables`) of steps first_step .. first_step + n_steps
    side by side (:func:`codegen.table_columns`; one row more than steps, for the overdamped
    schemes' force at t_n+1). ``()`` for a time-independent spec, whose kernel takes none.
    Memory: 8 (n_steps + 1) x width bytes."""
    if not spec.time_dependent:
        return ()
    from ..schedules import coefficient_tables

    tab = coefficient_tables(spec, first_step, n_steps + 1)
    return (np.ascontiguousarray(np.hstack([tab.t, tab.gamma, tab.sigma, tab.kT]), dtype=np.float64),)


def final_state(spec, state, q, p, F, R, xi, stream, n_steps):
    from ..simulate import State

    used = n_steps * codegen.draws_per_step(spec.scheme, spec.dim)
    return State(q=q, p=None if state.p is None else p, xi=xi, force=F,
                 noise=None if state.noise is None else R, step=state.step + n_steps,
                 rng=PhiloxStream(stream.key, stream.counter + used).state(), spec=state.spec,
                 backend=state.backend)


def divergence(spec, step, path):
    """The DivergenceError of a kernel's ``bad`` entry: ``step`` > 0 a non-finite or
    out-of-bound state, ``step`` < 0 a SHAKE/RATTLE failure at step -step (worded by
    :func:`sdekit.reference.divergence_error`, as on the numpy backend)."""
    return divergence_error(spec, abs(step), path, shake_failed=step < 0)


def first_divergence(bad):
    """(signed step, path) of the earliest divergence, SHAKE/RATTLE failures (bad < 0) before
    other divergences at the same step (as the numpy backend checks them), then the lowest
    path index; None if none."""
    hit = np.flatnonzero(bad != 0)
    if hit.size == 0:
        return None
    first = int(np.abs(bad[hit]).min())
    for signed in (-first, first):
        at = hit[bad[hit] == signed]
        if at.size:
            return signed, int(at[0])


def summaries(spec, S, counts):
    """mean/meansq dicts of the built-in observables from the per-record sums S (n_rec, 3, K)."""
    cols, K = codegen.columns(spec.scheme, spec.dim)
    n = counts.astype(np.float64)[:, None]
    mean, meansq = {}, {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, (a, b) in cols.items():
            m1, m2, m4 = S[:, 0, a:b] / n, S[:, 1, a:b] / n, S[:, 2, a:b] / n
            if name == "xi":
                m1, m2 = m1[:, 0], m2[:, 0]
                mean[name], meansq[name] = m1.astype(spec.dtype), m2.astype(spec.dtype)
                continue
            square = {"q": "q2", "p": "p2", "p_O": "p2_O"}[name]
            mean[name], meansq[name] = m1.astype(spec.dtype), m2.astype(spec.dtype)
            mean[square], meansq[square] = m2.astype(spec.dtype), m4.astype(spec.dtype)
    return mean, meansq


def _bar(progress, n_steps, work, word):
    from ..simulate import progress_bar

    return progress_bar(progress, n_steps, work, word)


def simulate(spec, state, n_steps, record_every, progress):
    """One trajectory; returns a :class:`sdekit.Trajectory` like the numpy backend."""
    from ..simulate import Trajectory

    kernel = build(spec.scheme, spec.system, np.dtype(spec.dtype).name, "cpu", spec.constraint, spec.time_dependent)
    q, p, F, R, xi, stream, s = arguments(spec, state)
    d = spec.dim
    n_rec = 1 + n_steps // record_every
    rec_q, rec_p, rec_pO = (np.empty((n_rec, d), spec.dtype) for _ in range(3))
    rec_xi = np.empty(n_rec, spec.dtype)
    with _bar(progress, n_steps, n_steps * d, spec.scheme.word) as bar:
        ctr, bad = kernel.trajectory(q, p, F, R, xi, stream.key[0], stream.key[1], stream.counter, n_steps,
                                     record_every, s["h"], s["gamma"], s["kT"], s["eps"], s["sigma"],
                                     s["max_abs"], spec.inv_mass, spec.sqrt_mass, rec_q, rec_p, rec_pO, rec_xi,
                                     *tables(spec, state.step, n_steps))
        bar.update(n_steps)
    if bad:
        raise divergence(spec, int(np.sign(bad)) * (state.step + abs(int(bad))), None)
    t = spec.t0 + spec.h * (state.step + record_every * np.arange(n_rec))
    return Trajectory(t=t, q=rec_q, p=None if state.p is None else rec_p,
                      p_O=rec_pO if "O" in spec.scheme.letters else None, xi=rec_xi, observables={},
                      state=final_state(spec, state, q, p, F, R, xi, stream, n_steps), spec=spec)


def ensemble(spec, state, n_steps, record_every, on_divergence, progress):
    """All paths in parallel; returns an :class:`sdekit.Ensemble` like the numpy backend."""
    import numba

    kernel = build(spec.scheme, spec.system, np.dtype(spec.dtype).name, "cpu", spec.constraint, spec.time_dependent)
    q, p, F, R, xi, stream, s = arguments(spec, state)
    n_paths = q.shape[0]
    n_rec = 1 + n_steps // record_every
    _, K = codegen.columns(spec.scheme, spec.dim)
    S = np.zeros((n_rec, 3, K))
    counts = np.zeros(n_rec, np.int64)
    bad = np.zeros(n_paths, np.int64)
    tab = tables(spec, state.step, n_steps)
    n_chunks = -(-n_paths // codegen.CHUNK)
    # chunks per parallel sweep: bounded memory, enough chunks for every thread (any value gives the same sums)
    group = max(4 * numba.get_num_threads(), PARTIAL_SUMS_BYTES // (8 * n_rec * (3 * K + 1)))
    group = int(min(max(group, 1), n_chunks))
    with _bar(progress, n_steps, n_steps * n_paths * spec.dim, spec.scheme.word) as bar:
        for g0 in range(0, n_chunks, group):
            g = min(group, n_chunks - g0)
            part = np.zeros((g, n_rec, 3, K))
            cnt = np.zeros((g, n_rec), np.int64)
            kernel.ensemble(g0, q, p, F, R, xi, stream.key[0], stream.key[1], stream.counter, n_steps,
                            record_every, s["h"], s["gamma"], s["kT"], s["eps"], s["sigma"], s["max_abs"],
                            spec.inv_mass, spec.sqrt_mass, part, cnt, bad, *tab)
            kernel.add_chunks(S, counts, part, cnt)
        bar.update(n_steps)
    return finish(spec, state, n_steps, record_every, on_divergence, q, p, F, R, xi, stream, S, counts, bad)


def finish(spec, state, n_steps, record_every, on_divergence, q, p, F, R, xi, stream, S, counts, bad):
    """Raise or mask divergences; build the Ensemble (shared with the cuda backend)."""
    from ..simulate import Ensemble

    n_paths = q.shape[0]
    first = first_divergence(bad)
    if first is not None and on_divergence == "raise":
        step, path = first
        raise divergence(spec, int(np.sign(step)) * (state.step + abs(step)), path if n_paths > 1 else None)
    mean, meansq = summaries(spec, S, counts)
    t = spec.t0 + spec.h * (state.step + record_every * np.arange(S.shape[0]))
    return Ensemble(t=t, q=q, p=None if state.p is None else p, xi=xi, mean=mean, meansq=meansq,
                    n_alive=counts.copy(), diverged=np.flatnonzero(bad != 0),
                    state=final_state(spec, state, q, p, F, R, xi, stream, n_steps), spec=spec)
