r"""Standard normals from the project's Philox4x32-10, written in parallel into a tensor's memory.

The default noise of :class:`~sdekit.torch.SDEOptimizer` on the CPU (``noise="philox"``,
:class:`sdekit.torch.noise.Philox`): a vectorised numba loop over fixed chunks of numbers,
in parallel over up to torch's intra-op thread count, fills a contiguous float32 or float64
tensor through ``tensor.numpy()`` (no copy) with :func:`fill`, or applies an O letter's
update ``p = c p + s z`` with the numbers made inside the loop (:func:`ou`: one pass over
p, no noise buffer). The numbers cost about 2 ns each on one core of the benchmark
machine, where torch's CPU generator takes 4-6 ns and is serial
(``benchmarks/RESULTS_torch.md``).

**Counter layout.** The Philox key is the optimizer's 64-bit seed, ``(seed mod 2^32,
seed div 2^32)``. Draw ``d`` (the optimizer's d-th call for normals: one per O letter per
group, in word order, counted over the whole run) fills its flat buffer (the group's
tensors one after the other) from the counters ``(b mod 2^32, b div 2^32, d mod 2^32,
d div 2^32)``, b = 0, 1, ...: block b's four 32-bit words give numbers 4b, 4b+1 (words 0
and 1) and 4b+2, 4b+3 (words 2 and 3). Number i of draw d is therefore a pure function of
(seed, d, i): the same whatever the number of threads, the chunking or the buffer's dtype
(float64 buffers get the same float32 values). A tensor that starts at element k of the
group's buffer takes numbers k, k + 1, ... (``start=k``). This is the core's per-path
counter form (:mod:`sdekit.kernels.philox`: (block, path)) with the draw in the place of
the path; the transform differs (below).

**Transform.** Each pair of words (x, y) gives two normals by Box-Muller in float32:
:math:`u = (\lfloor x/2 \rfloor + 1/2)\,2^{-31}` (rounded to float32),
:math:`r = \sqrt{-2\ln u}`, :math:`v = (\lfloor y/2^7 \rfloor \bmod 2^{24} + 1/2)\,2^{-24} - 1/2`,
:math:`(z_0, z_1) = \pm r(\cos\pi v, \sin\pi v)` with the sign from the top bit of y (so the
angle is uniform on the whole circle). ``ln``, ``cos`` and ``sin`` are branch-free
polynomials (Cephes' ``logf`` on the mantissa; Taylor series of :math:`\cos\pi v` and
:math:`\sin\pi v` on :math:`|v| \le 1/2` to degree 12 and 13, truncation below 1e-8), so
the loop vectorises; without fast-math (no reassociation, no fused multiply-add) the
vector and scalar code give the same bits, which is why the cut of the work into chunks
and threads does not show in the numbers.
Accuracy: a few float32 units in the last place; :math:`|z| \le 6.66` (
:math:`P(|Z| > 6.66) \approx 3\cdot 10^{-11}`).
"""
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from ..kernels import philox

__all__ = ["fill", "ou", "CHUNK", "SERIAL_BELOW"]

CHUNK = 2048
"""Philox blocks (4 numbers each) per parallel work item."""

SERIAL_BELOW = 1 << 16
"""Buffers with fewer numbers are filled by the serial loop (a parallel launch costs more)."""


@intrinsic
def _as_float32(typingctx, bits):
    """The float32 whose bits are the int32 ``bits``."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return sig, codegen


@intrinsic
def _as_int32(typingctx, value):
    """The int32 holding the bits of the float32 ``value``."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))
    return sig, codegen


_philox = numba.njit(inline="always")(philox.philox4x32_10)

_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_SQRT_HALF = np.float32(0.707106781186547524)
_LOG_P = tuple(np.float32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                                        1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                                        3.3333331174e-1))
_PI = np.pi
_COS = tuple(np.float32((-1) ** k * _PI ** (2 * k) / float(np.prod(np.arange(1, 2 * k + 1)))) for k in range(7))
_SIN = tuple(np.float32((-1) ** k * _PI ** (2 * k + 1) / float(np.prod(np.arange(1, 2 * k + 2)))) for k in range(7))
_TWO_M31 = np.float32(2.0 ** -31)
_TWO_M24 = np.float32(2.0 ** -24)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_MINUS_TWO = np.float32(-2.0)
P0, P1, P2, P3, P4, P5, P6, P7, P8 = _LOG_P
C0, C1, C2, C3, C4, C5, C6 = _COS
S0, S1, S2, S3, S4, S5, S6 = _SIN


@numba.njit(inline="always")
def _log(u):
    """ln u for a float32 0 < u <= 1 (Cephes logf, branch-free)."""
    bits = _as_int32(u)
    e = np.float32((bits >> 23) - 127)
    m = _as_float32((bits & 0x7FFFFF) | 0x3F800000) * _HALF       # mantissa in [0.5, 1)
    e = e + _ONE
    small = m < _SQRT_HALF
    e = e - _ONE if small else e
    x = (m + m - _ONE) if small else (m - _ONE)
    z = x * x
    p = ((((((((P0 * x + P1) * x + P2) * x + P3) * x + P4) * x + P5) * x + P6) * x + P7) * x + P8)
    y = x * (z * p) + _LN2_LO * e - _HALF * z
    return x + y + _LN2_HI * e


@numba.njit(inline="always")
def _pair(x, y):
    """Two standard normals (float32) from two 32-bit words (uint64 holding them), Box-Muller."""
    u = (np.float32(np.int32(x >> np.uint64(1))) + _HALF) * _TWO_M31
    r = np.sqrt(_MINUS_TWO * _log(u))
    v = (np.float32(np.int32((y >> np.uint64(7)) & np.uint64(0xFFFFFF))) + _HALF) * _TWO_M24 - _HALF
    w = v * v
    c = ((((((C6 * w + C5) * w + C4) * w + C3) * w + C2) * w + C1) * w + C0)
    s = v * ((((((S6 * w + S5) * w + S4) * w + S3) * w + S2) * w + S1) * w + S0)
    if (y >> np.uint64(31)) == np.uint64(1):
        r = -r
    return r * c, r * s


_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


@numba.njit(inline="always")
def _store_z(out, i, z, c, s):
    """out[i] = z (:func:`fill`)."""
    out[i] = z


@numba.njit(inline="always")
def _store_ou(out, i, z, c, s):
    """The O update out[i] = c out[i] + s z (:func:`ou`; in out's dtype: one rounding per product
    and one for the sum, no fused multiply-add)."""
    out[i] = c * out[i] + s * z


@numba.njit(inline="always")
def _chunk(key0, key1, d0, d1, start, k, out, c, s, _store):
    """Chunk k of the numbers [start, start + len(out)) of draw (d0, d1) into ``out``: the blocks
    [start // 4 + k CHUNK, start // 4 + (k + 1) CHUNK). Two passes, each a loop that vectorises:
    the Philox words into a scratch (one array per word), then Box-Muller into ``out``; the at
    most two blocks cut by the range's ends are done number by number."""
    # the masks tell LLVM the words are 32-bit, so the products vectorise (vpmuludq)
    key0, key1, d0, d1 = key0 & _MASK32, key1 & _MASK32, d0 & _MASK32, d1 & _MASK32
    n = out.shape[0]
    first = start // 4                          # the range's first and (past) last block
    last = (start + n + 3) // 4
    lo = first + max(k, 0) * CHUNK              # this chunk's blocks [lo, hi)
    m = min(CHUNK, last - lo)
    w = np.empty((4, CHUNK), np.uint32)
    for j in range(m):
        b = np.uint64(lo + j)
        x0, x1, x2, x3 = _philox(b & _MASK32, b >> _SHIFT32, d0, d1, key0, key1)
        w[0, j] = np.uint32(x0)
        w[1, j] = np.uint32(x1)
        w[2, j] = np.uint32(x2)
        w[3, j] = np.uint32(x3)
    inner = (start + 3) // 4                    # blocks [inner, outer) lie wholly in the range
    outer = (start + n) // 4
    j0 = max(inner - lo, 0)                     # provably >= 0: no wraparound test on the indices
    j1 = min(outer - lo, m)
    if j1 > j0:
        q = out[4 * (lo + j0) - start:]
        for j in range(j1 - j0):
            z0, z1 = _pair(np.uint64(w[0, j0 + j]), np.uint64(w[1, j0 + j]))
            z2, z3 = _pair(np.uint64(w[2, j0 + j]), np.uint64(w[3, j0 + j]))
            _store(q, 4 * j, z0, c, s)
            _store(q, 4 * j + 1, z1, c, s)
            _store(q, 4 * j + 2, z2, c, s)
            _store(q, 4 * j + 3, z3, c, s)
    for j in range(m):                          # the cut blocks (at the range's two ends)
        b = lo + j
        if b >= inner and b < outer:
            continue
        z0, z1 = _pair(np.uint64(w[0, j]), np.uint64(w[1, j]))
        z2, z3 = _pair(np.uint64(w[2, j]), np.uint64(w[3, j]))
        z = (z0, z1, z2, z3)
        for r in range(4):
            i = 4 * b + r - start
            if i >= 0 and i < n:
                _store(out, i, z[r], c, s)
        if j + 1 < j0:
            break


def _chunks(n, start):
    """The number of chunks of the range [start, start + n)."""
    return ((start + n + 3) // 4 - start // 4 + CHUNK - 1) // CHUNK


# the chunk loop with each store, then its serial and parallel loops over the chunks: spelled
# out (not made by a factory) so that numba can cache them on disk; the store is a
# compile-time choice because a flag tested in the loop would stop it from vectorising

@numba.njit(inline="always")
def _chunk_z(key0, key1, d0, d1, start, k, out, c, s):
    _chunk(key0, key1, d0, d1, start, k, out, c, s, _store_z)


@numba.njit(inline="always")
def _chunk_ou(key0, key1, d0, d1, start, k, out, c, s):
    _chunk(key0, key1, d0, d1, start, k, out, c, s, _store_ou)


@numba.njit(nogil=True, cache=True)
def _serial_z(key0, key1, d0, d1, start, first, last, out, c, s):
    """Chunks [first, last) of the range (see :func:`_chunk`): the numbers."""
    for k in range(first, last):
        _chunk_z(key0, key1, d0, d1, start, k, out, c, s)


@numba.njit(nogil=True, cache=True)
def _serial_ou(key0, key1, d0, d1, start, first, last, out, c, s):
    """Chunks [first, last) of the range: the O update."""
    for k in range(first, last):
        _chunk_ou(key0, key1, d0, d1, start, k, out, c, s)


@numba.njit(parallel=True, cache=True)
def _parallel_z(key0, key1, d0, d1, start, nchunks, parts, out, c, s):
    """All chunks, cut into ``parts`` consecutive runs done in parallel (the numbers do not
    depend on the cut)."""
    for t in numba.prange(parts):
        _serial_z(key0, key1, d0, d1, start, t * nchunks // parts, (t + 1) * nchunks // parts, out, c, s)


@numba.njit(parallel=True, cache=True)
def _parallel_ou(key0, key1, d0, d1, start, nchunks, parts, out, c, s):
    """As :func:`_parallel_z`, the O update."""
    for t in numba.prange(parts):
        _serial_ou(key0, key1, d0, d1, start, t * nchunks // parts, (t + 1) * nchunks // parts, out, c, s)


_KERNELS = {False: (_serial_z, _parallel_z), True: (_serial_ou, _parallel_ou)}
"""fused -> (serial, parallel) loops: writing z, or the O update."""


def _run(out, key, draw, start, threads, c, s, fused):
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    d0, d1 = np.uint64(draw & 0xFFFFFFFF), np.uint64(draw >> 32)
    nchunks = _chunks(out.shape[0], start)
    c, s = out.dtype.type(c), out.dtype.type(s)
    serial, parallel = _KERNELS[fused]
    if threads > 1 and out.shape[0] >= SERIAL_BELOW:
        threads = min(threads, numba.config.NUMBA_NUM_THREADS)
        if numba.get_num_threads() != threads:
            numba.set_num_threads(threads)
        parallel(k0, k1, d0, d1, start, nchunks, threads, out, c, s)
    else:
        serial(k0, k1, d0, d1, start, 0, nchunks, out, c, s)
    return out


def fill(out, key, draw, threads=1, start=0):
    """Fill the 1-D contiguous float32 or float64 numpy array ``out`` with the numbers
    [start, start + len(out)) of draw ``draw`` under ``key = (key0, key1)`` (32-bit words;
    layout in the module's docstring), with up to ``threads`` numba threads; returns ``out``."""
    return _run(out, key, draw, start, threads, 0.0, 1.0, False)


def ou(p, c, s, key, draw, threads=1, start=0):
    """The O update ``p = c p + s z`` in place on the 1-D contiguous float32 or float64 array
    ``p``, z the numbers [start, start + len(p)) of draw ``draw`` (as :func:`fill` would write
    them; c and s rounded to p's dtype, the update in p's dtype); returns ``p``."""
    return _run(p, key, draw, start, threads, c, s, True)
