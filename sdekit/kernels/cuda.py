"""Backend "cuda": the generated kernel through numba-cuda, one thread per path.

Each record interval is one launch of the generated ``advance`` kernel (every
thread advances its path by ``record_every`` steps, then each block sums its
paths' recorded values by a fixed tree in shared memory), followed by
``reduce_blocks``, which adds the blocks' sums in block order on the device. The
reduction's shape depends only on the number of paths, so results are
reproducible; the per-path Philox stream makes them agree with backend "cpu" to
rounding (the device's exp/log/sin/cos differ from the host's by an ulp or so).

Also runs under the numba-cuda simulator (``NUMBA_ENABLE_CUDASIM=1``, set before
numba.cuda is imported), which is how the tests check it on machines without a GPU.
"""
import numpy as np

from .. import records
from ..records import check_paths, progress_bar
from . import abi, build, codegen
from .cpu import arguments, finish, final_state, shadow_arrays


def _device_arrays(spec, state):
    from numba import cuda

    q, p, F, R, xi, na, lw, stream, s = arguments(spec, state)
    pO = np.full(q.shape, np.nan, spec.dtype)
    dev = {name: cuda.to_device(a) for name, a in
           dict(q=q, p=p, F=F, R=R, pO=pO, xi=xi, inv_mass=np.ascontiguousarray(spec.inv_mass),
                sqrt_mass=np.ascontiguousarray(spec.sqrt_mass), na=na, lw=lw,
                bad=np.zeros(q.shape[0], np.int64), **shadow_arrays(spec, state)).items()}
    return dev, stream, s


def _launch(kernel, dev, stream, s, ctr, n_steps, step0, part, count):
    n_paths = dev["q"].shape[0]
    blocks = -(-n_paths // codegen.BLOCK)
    values = dict(s, **dev, p_O=dev["pO"], key0=stream.key[0], key1=stream.key[1], ctr0=ctr, n_steps=n_steps,
                  step0=step0, part=part, cnt=count)
    kernel.advance[blocks, codegen.BLOCK](*abi.arguments(kernel, "advance", values))


def _run(spec, state, n_steps, record_every, on_record):
    """Launch the record intervals; ``on_record(r, dev, part, count)`` after each one."""
    from numba import cuda

    kernel = build(spec.scheme, spec.system, np.dtype(spec.dtype).name, "cuda", spec.constraint,
                   drift_change=spec.drift_change, shadow=spec.shadow)
    dev, stream, s = _device_arrays(spec, state)
    n_paths = dev["q"].shape[0]
    _, K = codegen.columns(spec.scheme, spec.dim, spec.drift_change is not None, spec.shadow)
    blocks = -(-n_paths // codegen.BLOCK)
    part = cuda.device_array((blocks, 3, K), np.float64)
    count = cuda.device_array(blocks, np.float64)
    draws = spec.scheme.draws(spec.dim)
    n_rec = 1 + n_steps // record_every
    ctr, done = stream.counter, 0
    for r in range(n_rec):
        steps = 0 if r == 0 else record_every
        _launch(kernel, dev, stream, s, ctr, steps, done, part, count)
        ctr += steps * draws
        done += steps
        on_record(r, kernel, dev, part, count)
    if n_steps > done:  # steps after the last record
        _launch(kernel, dev, stream, s, ctr, n_steps - done, done, part, count)
    cuda.synchronize()
    host = {k: dev[k].copy_to_host() for k in ("q", "p", "F", "R", "xi", "bad", "na", "lw")
            + (("nw", "nh") if spec.shadow else ())}
    return host, stream, n_rec


def _shadow(spec, host):
    """The paths' shadow work and heat copied back (:func:`sdekit.kernels.cpu.shadow_arrays`), or None."""
    return dict(nw=host["nw"], nh=host["nh"]) if spec.shadow else None


def ensemble(spec, state, n_steps, record_every, on_divergence, progress):
    """All paths on the GPU; returns an :class:`sdekit.Ensemble` like the other backends."""
    from numba import cuda

    _, K = codegen.columns(spec.scheme, spec.dim, spec.drift_change is not None, spec.shadow)
    n_rec = 1 + n_steps // record_every
    S = cuda.device_array((n_rec, 3, K), np.float64)
    counts = cuda.device_array(n_rec, np.float64)

    def on_record(r, kernel, dev, part, count):
        threads = max(32, -(-3 * K // 32) * 32)
        kernel.reduce_blocks[1, threads](*abi.arguments(kernel, "reduce_blocks",
                                                        dict(part=part, cnt=count, S=S, counts=counts, r=r)))

    with progress_bar(progress, n_steps, n_steps * state.q.shape[0] * spec.dim, spec.scheme.word) as bar:
        host, stream, _ = _run(spec, state, n_steps, record_every, on_record)
        bar.update(n_steps)
    return finish(spec, state, n_steps, record_every, on_divergence, host["q"], host["p"], host["F"],
                  host["R"], host["xi"], stream, S.copy_to_host(), np.rint(counts.copy_to_host()).astype(np.int64),
                  host["bad"], host["na"], host["lw"], _shadow(spec, host))


def simulate(spec, state, n_steps, record_every, progress):
    """One path on the GPU, copied back at every record (prefer backend "cpu" for single paths)."""
    n_rec = 1 + n_steps // record_every
    d = spec.dim
    rec = {k: np.empty((n_rec, d), spec.dtype) for k in ("q", "p", "pO")}
    rec_xi, rec_na, rec_lw = np.empty(n_rec, spec.dtype), np.empty(n_rec), np.empty(n_rec)
    rec_nw, rec_nh = np.empty(n_rec), np.empty(n_rec)

    def on_record(r, kernel, dev, part, count):
        rec["q"][r], rec["p"][r], rec["pO"][r] = dev["q"].copy_to_host()[0], dev["p"].copy_to_host()[0], \
            dev["pO"].copy_to_host()[0]
        rec_xi[r], rec_na[r] = dev["xi"].copy_to_host()[0], dev["na"].copy_to_host()[0]
        rec_lw[r] = dev["lw"].copy_to_host()[0]
        if spec.shadow:
            rec_nw[r], rec_nh[r] = dev["nw"].copy_to_host()[0], dev["nh"].copy_to_host()[0]

    with progress_bar(progress, n_steps, n_steps * d, spec.scheme.word) as bar:
        host, stream, _ = _run(spec, state, n_steps, record_every, on_record)
        bar.update(n_steps)
    check_paths(spec, state.step, host["bad"][:1])  # counted from step0 = 0 of this run
    return records.trajectory(spec, state, record_every, rec["q"], rec["p"], rec["pO"], rec_xi, {},
                              final_state(spec, state, host["q"], host["p"], host["F"], host["R"], host["xi"],
                                          stream, n_steps, host["na"], host["lw"], _shadow(spec, host)), rec_na, rec_lw,
                              (rec_nw, rec_nh) if spec.shadow else None)
