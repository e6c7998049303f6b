"""Profile: would running several paths at once make the cpu kernel faster? (issue 18)

The generated kernel runs one path after another, as the expert loop of
``bench_ensemble.py`` does. Two ways to run several paths at once, written by hand on the
benchmark's workload (BAOAB on the 1-D double well, the same Philox normals, float64) and
timed against that per-path loop in one process, on one thread:

1. **two paths interleaved** in one loop body: more independent work for the out-of-order core;
2. **L paths in vector lanes**: the state of L paths in small arrays, each stage of a step a
   loop over the lanes (Philox, the inverse-CDF normal's central branch, the step's
   arithmetic), which LLVM vectorises (AVX2/AVX-512: ``vpmuludq`` for Philox's products). The
   normal's tail branch (15% of the draws) needs ``log``, which has no vector form here (numba
   without Intel SVML), so tail lanes are fixed up one by one after the vector pass.

Each prototype must give the same numbers bit for bit as the per-path loop (checked), so
the speed is all that differs. Measured 2026-12-01 on this project's 2-core AMD EPYC (Zen 4)
VM, load 0.3-1.0, three runs: interleaving 0.96-1.02x (no gain: the core already overlaps
consecutive steps), lanes 0.82-1.10x (L = 8), 0.97-1.01x (L = 16), 1.10-1.17x (L = 32). The scalar tail pass runs in
nearly every vector (1 - 0.85^8 = 73% of 8-lane vectors have a tail draw) and the lane
arrays cost loads and stores; a vectorisable normal transform (no libm ``log`` in the tail,
hence a different stream: every golden number would change) is what it would take.

3. **float32 with a vectorisable stream** (another stream, so speed only): the torch adapter's
   float32 normals (four Box-Muller normals per Philox block, branch-free polynomials), drawn
   1024 ahead per path by their vectorised fill, against the per-path float32 loop on the
   kernels' stream: 1.62x on a quiet machine, 1.33-1.62x at load 1-4 (1.9x in a prototype with the buffer sized to the
   run). This is the way to the float32 target (>= 2x numpy): it needs the kernels' float32
   runs on that stream (the cpu and cuda kernels, ``simulate``'s numpy stream, the reference,
   every float32 golden number), which is not done.

Usage::

    python benchmarks/profile_lanes.py [--paths N] [--steps N] [--repeat R]
"""
import importlib.util
import math
import os
import re

import numba
import numpy as np

from _report import interleaved_best, profile_arguments   # (this directory is on the path when run as a script)
from bench_ensemble import GAMMA, H, KT, expert_baoab, normal
from sdekit.kernels import philox, runtime

_f = runtime.functions("cpu")
gaussian_tail, philox4x32_10 = _f["gaussian_tail"], _f["philox4x32_10"]
MASK32, SHIFT32, SHIFT31, MASK20, ONE = philox.MASK32, philox.SHIFT32, philox.SHIFT31, philox.MASK20, philox.ONE
TWO_POW_M53 = philox.TWO_POW_M53
OPTS = dict(error_model="numpy", nogil=True, boundscheck=False)


@numba.njit(**OPTS)
def ou_constants(h, gamma, kT):
    c = math.exp(-gamma * h)
    return c, math.sqrt(kT * (1.0 - c * c))


per_path = numba.njit(**OPTS)(expert_baoab)
"""bench_ensemble.py's expert loop, compiled without ``parallel``: one path after another."""


@numba.njit(**OPTS)
def interleaved(q, p, key0, key1, n_steps, h, gamma, kT):
    """Paths i and i + 1 in one loop body (n_paths even)."""
    c, s = ou_constants(h, gamma, kT)
    for i in range(0, q.shape[0], 2):
        j = i + 1
        x, v, y, w = q[i], p[i], q[j], p[j]
        fx, fy = -4.0 * x * (x * x - 1.0), -4.0 * y * (y * y - 1.0)
        cx, sx, cy, sy = 0, np.uint64(0), 0, np.uint64(0)
        for _ in range(n_steps):
            v += 0.5 * h * fx
            w += 0.5 * h * fy
            x += 0.5 * h * v
            y += 0.5 * h * w
            zx, cx, sx = normal(key0, key1, i, cx, sx)
            zy, cy, sy = normal(key0, key1, j, cy, sy)
            v = c * v + s * zx
            w = c * w + s * zy
            x += 0.5 * h * v
            y += 0.5 * h * w
            fx, fy = -4.0 * x * (x * x - 1.0), -4.0 * y * (y * y - 1.0)
            v += 0.5 * h * fx
            w += 0.5 * h * fy
        q[i], p[i], q[j], p[j] = x, v, y, w


@numba.njit(**OPTS)
def philox_lanes(w0, w1, w2, w3, block, first, key0, key1):
    """Block ``block`` of paths first .. first + L - 1, one lane each."""
    for lane in range(w0.shape[0]):
        w0[lane], w1[lane], w2[lane], w3[lane] = philox4x32_10(block & MASK32, block >> SHIFT32,
                                                               np.uint64(first + lane), np.uint64(0), key0, key1)


@numba.njit(**OPTS)
def central_lanes(z, hi, lo):
    """philox.gaussian's central branch (AS 241, |q| <= 0.425) in every lane; returns how many
    lanes need the tail branch instead. The polynomial is philox.gaussian's, copied so that the
    lane loop has no call (the bitwise check in main() fails if the two drift apart)."""
    tails = 0
    for lane in range(z.shape[0]):
        t = (np.int64(((hi[lane] & MASK20) << SHIFT32) | lo[lane]) + 0.5) * TWO_POW_M53
        q = t - 0.5
        r = 0.180625 - q * q
        num = (((((((2.5090809287301226727e+3 * r + 3.3430575583588128105e+4) * r + 6.7265770927008700853e+4) * r
                   + 4.5921953931549871457e+4) * r + 1.3731693765509461125e+4) * r + 1.9715909503065514427e+3) * r
                + 1.3314166789178437745e+2) * r + 3.3871328727963666080e+0) * q
        den = (((((((5.2264952788528545610e+3 * r + 2.8729085735721942674e+4) * r + 3.9307895800092710610e+4) * r
                   + 2.1213794301586595867e+4) * r + 5.3941960214247511077e+3) * r + 6.8718700749205790830e+2) * r
                + 4.2313330701600911252e+1) * r + 1.0)
        x = num / den
        tails += q < -0.425
        z[lane] = -x if (hi[lane] >> SHIFT31) == ONE else x
    return tails


@numba.njit(**OPTS)
def tail_lanes(z, hi, lo):
    """The tail branch, lane by lane (scalar: it calls log)."""
    for lane in range(z.shape[0]):
        t = (np.int64(((hi[lane] & MASK20) << SHIFT32) | lo[lane]) + 0.5) * TWO_POW_M53
        if t - 0.5 < -0.425:
            x = gaussian_tail(t)
            z[lane] = -x if (hi[lane] >> SHIFT31) == ONE else x


@numba.njit(**OPTS)
def baoab_lanes(x, v, F, z, h, c, s):
    for lane in range(x.shape[0]):
        vl = v[lane] + 0.5 * h * F[lane]
        xl = x[lane] + 0.5 * h * vl
        vl = c * vl + s * z[lane]
        xl += 0.5 * h * vl
        Fl = -4.0 * xl * (xl * xl - 1.0)
        v[lane], x[lane], F[lane] = vl + 0.5 * h * Fl, xl, Fl


@numba.njit(**OPTS)
def normals_lanes(z, w0, w1, w2, w3, n, first, key0, key1):
    """Normal number n of every lane's path: words 0-1 of block n // 2, or words 2-3."""
    if n % 2 == 0:
        philox_lanes(w0, w1, w2, w3, np.uint64(n // 2), first, key0, key1)
        hi, lo = w0, w1
    else:
        hi, lo = w2, w3
    if central_lanes(z, hi, lo) > 0:
        tail_lanes(z, hi, lo)


def make_lanes(L):
    @numba.njit(**OPTS)
    def lanes(q, p, key0, key1, n_steps, h, gamma, kT):
        """Paths in groups of L (n_paths a multiple of L), one per vector lane."""
        c, s = ou_constants(h, gamma, kT)
        x, v, F, z = np.empty(L), np.empty(L), np.empty(L), np.empty(L)
        w0, w1, w2, w3 = np.empty(L, np.uint64), np.empty(L, np.uint64), np.empty(L, np.uint64), np.empty(L, np.uint64)
        k0, k1 = np.uint64(key0), np.uint64(key1)
        for first in range(0, q.shape[0], L):
            for lane in range(L):
                x[lane], v[lane] = q[first + lane], p[first + lane]
                F[lane] = -4.0 * x[lane] * (x[lane] * x[lane] - 1.0)
            for n in range(n_steps):
                normals_lanes(z, w0, w1, w2, w3, n, first, k0, k1)
                baoab_lanes(x, v, F, z, h, c, s)
            for lane in range(L):
                q[first + lane], p[first + lane] = x[lane], v[lane]
    return lanes


BUFFER = 1024
"""Normals per path drawn ahead by the float32 stream's vectorised fill."""


def float32_stream_buffered(q, p, key0, key1, n_steps, h, gamma, kT):
    """:func:`_float32_stream_buffered`, compiled on first use (it needs sdekit.torch)."""
    global philox_normals, _compiled_float32
    if _compiled_float32 is None:
        from sdekit.torch import philox_normals
        _compiled_float32 = numba.njit(**OPTS)(_float32_stream_buffered)
    return _compiled_float32(q, p, key0, key1, n_steps, h, gamma, kT)


philox_normals = _compiled_float32 = None


def _float32_stream_buffered(q, p, key0, key1, n_steps, h, gamma, kT):
    """Float32 BAOAB, each path's normals drawn BUFFER at a time by the torch adapter's float32
    stream (sdekit.torch.philox_normals: four Box-Muller normals per Philox block, branch-free
    polynomials, a loop that vectorises), counter (block, path). Another stream than the kernels'
    (whose float32 runs cast the float64 stream's normals): only its speed is compared."""
    c = np.float32(math.exp(-gamma * h))
    s = np.float32(math.sqrt(kT * (1.0 - c * c)))
    half_h = np.float32(0.5 * h)
    z = np.empty(BUFFER, np.float32)
    for i in range(q.shape[0]):
        x, v = q[i], p[i]
        force = np.float32(-4.0) * x * (x * x - np.float32(1.0))
        n = 0
        while n < n_steps:
            m = min(BUFFER, n_steps - n)
            chunks = ((n + m + 3) // 4 - n // 4 + philox_normals.CHUNK - 1) // philox_normals.CHUNK
            philox_normals._serial_z(np.uint64(key0), np.uint64(key1), np.uint64(i), np.uint64(0), n, 0, chunks,
                                     z[:m], np.float32(0.0), np.float32(1.0))
            for k in range(m):
                v += half_h * force
                x += half_h * v
                v = c * v + s * z[k]
                x += half_h * v
                force = np.float32(-4.0) * x * (x * x - np.float32(1.0))
                v += half_h * force
            n += m
        q[i], p[i] = x, v


def float32_rows(n, n_steps, repeat):
    """The per-path loop in float32 (the kernels' stream, cast) against the buffered float32 stream."""
    if importlib.util.find_spec("torch") is None:
        print("\nfloat32 rows skipped: the float32 stream lives in sdekit.torch, which needs torch")
        return
    def timed(f):
        return lambda: f(np.ones(n, np.float32), np.zeros(n, np.float32), 12345, 678, n_steps, H, GAMMA, KT)

    runs = {"per path": timed(per_path), "float32 stream, buffered": timed(float32_stream_buffered)}
    for f in runs.values():
        f()   # compiles
    times = interleaved_best(runs, repeat)
    print(f"\nfloat32, one thread, best of {repeat}")
    for name, t in times.items():
        print(f"{name:26s} {n * n_steps / t:13.3g} {times['per path'] / t:11.2f}")


def vector_instructions(dispatcher):
    """How many instructions of the compiled function use 256- or 512-bit registers."""
    asm = "\n".join(dispatcher.inspect_asm().values())
    return len(re.findall(r"[yz]mm", asm))


def main(argv=None):
    args = profile_arguments(__doc__, paths=20_000, steps=500, repeat=5, argv=argv)
    numba.set_num_threads(1)
    runs = {"per path": per_path, "interleaved": interleaved}
    runs.update({f"lanes L={L}": make_lanes(L) for L in (8, 16, 32)})
    n = args.paths - args.paths % 32
    results = {}

    def timed(f):
        q, p = np.ones(n), np.zeros(n)
        f(q, p, 12345, 678, args.steps, H, GAMMA, KT)
        return q

    for name, f in runs.items():
        results[name] = timed(f)   # compiles
    times = interleaved_best({name: (lambda f=f: timed(f)) for name, f in runs.items()}, args.repeat)
    base = times["per path"]
    print(f"{n} paths x {args.steps} steps, float64, one thread, best of {args.repeat}")
    print(f"{'':14s} {'path-steps/s':>13s} {'x per path':>11s}  bitwise")
    for name in runs:
        t = times[name]
        same = np.array_equal(results[name], results["per path"])
        print(f"{name:14s} {n * args.steps / t:13.3g} {base / t:11.2f}  {same}")
        if not same:
            raise SystemExit(f"{name}: not the per-path loop's numbers")
    print(f"vector instructions: philox_lanes {vector_instructions(philox_lanes)}, "
          f"central_lanes {vector_instructions(central_lanes)}, baoab_lanes {vector_instructions(baoab_lanes)}")
    float32_rows(n, args.steps, args.repeat)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
