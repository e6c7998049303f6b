"""Benchmark: path-steps per second of sdekit's generated ensemble kernel against its peers.

Workload: 1-D double well U = (q^2 - 1)^2, BAOAB, kT = 1, gamma = 1, h = 0.1,
q0 = 1, p0 = 0; n_paths paths for n_steps steps (defaults: 10^5 x 1000 on CPU,
4 x 10^6 paths with a GPU). Every contestant draws one normal per path-step.

Contestants (one table, one process):

* sdekit "cpu"  — the kernel generated from Scheme("BAOAB") (nogil numba on a thread pool,
  streaming moments, divergence checks, the per-path Philox stream);
* hand numba    — an expert's hand-written numba prange BAOAB loop on scalars with the
  same Philox normals and numba's error_model="numpy" like the generated kernel (no
  recording, no checks): the baseline to match;
* numpy         — sdekit's numpy backend (vectorised over paths, numpy's PCG64 normals);
* numpy loop    — the same BAOAB as a numpy user writes it: arrays over paths, in place,
  ``rng.standard_normal`` (PCG64) per step, nothing else;
* torch / JAX   — vectorised over paths (torch loop; jax ``vmap`` of a per-path
  ``lax.scan``, and ``lax.scan`` over whole (n_paths,) arrays, both jitted) when installed;
* diffrax       — ``diffeqsolve`` with the ALIGN solver of the underdamped Langevin terms
  (two Gaussians per path-step: the Brownian increment and its space-time Levy area) and
  with Euler(-Maruyama) on the same SDE as a ``MultiTerm(ODETerm, ControlTerm)`` (two
  Gaussians per path-step, the position's multiplied by 0), both driven by a
  ``VirtualBrownianTree`` (tol = h/2) over (n_paths,) arrays, jitted; fewer paths
  (``--peer-paths``, default 10^4) as they are two orders slower. Euler at h = 0.1 lets
  some double-well paths blow up (reported, not hidden);
* sdekit "cuda" and a hand-written numba.cuda kernel — with a GPU.

Compile times: the first call of a new scheme in a fresh process (code generation
+ numba compile), a second call (in-memory), and a second *process* that loads
numba's disk cache of the generated module (measured with a subprocess).

Usage::

    python benchmarks/bench_ensemble.py [--paths N] [--steps N] [--dtype float64 float32] [--repeat R]
                                        [--peer-paths N]

The peers are optional (``pip install sdekit[bench]``: jax[cpu], diffrax, openmm); a missing one
is a row saying so.
"""
import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import types

import numba
import numpy as np

import sdekit
import sdekit.kernels
from sdekit.kernels import runtime

H, GAMMA, KT = 0.1, 1.0, 1.0


from _report import Report, best_of  # noqa: E402  (this directory is on the path when run as a script)


# ----------------------------------------------------------------------------- contestants

def sdekit_run(backend, n_paths, n_steps, dtype):
    return lambda: sdekit.ensemble("BAOAB", sdekit.systems.DoubleWell(), h=H, n_steps=n_steps,
                                   n_paths=n_paths, gamma=GAMMA, kT=KT, q0=[1.0], seed=1,
                                   backend=backend, dtype=dtype, progress=False)


def expert_path(x, v, i, key0, key1, n_steps, h, c, s):
    """An expert's BAOAB steps of path i on the double well with sdekit's Philox normals
    (``normal``: compiled for the cpu here, for cuda in :func:`hand_cuda`); returns (q, p)."""
    force = -4.0 * x * (x * x - 1.0)
    ctr = 0
    spare = np.uint64(0)   # the pending bits of a block's second slot (philox.slot)
    for _ in range(n_steps):
        v += 0.5 * h * force
        x += 0.5 * h * v
        z, ctr, spare = normal(key0, key1, i, ctr, spare)
        v = c * v + s * z
        x += 0.5 * h * v
        force = -4.0 * x * (x * x - 1.0)
        v += 0.5 * h * force
    return x, v


normal = runtime.functions("cpu")["normal"]
_expert_path = numba.njit(inline="always", error_model="numpy")(expert_path)


def expert_baoab(q, p, key0, key1, n_steps, h, gamma, kT):
    """The expert's loop over the paths (numba.prange: compiled with ``parallel=True`` it runs the
    paths on numba's threads, without it one after another)."""
    c = math.exp(-gamma * h)
    s = math.sqrt(kT * (1.0 - c * c))
    for i in numba.prange(q.shape[0]):
        q[i], p[i] = _expert_path(q[i], p[i], i, key0, key1, n_steps, h, c, s)


def hand_numba(n_paths, n_steps, dtype):
    """An expert's numba prange BAOAB on the double well, with the same Philox normals."""
    dt = np.dtype(dtype).type
    # error_model="numpy" as in sdekit's cpu kernels (no ZeroDivisionError checks): the same work
    baoab = numba.njit(parallel=True, error_model="numpy")(expert_baoab)

    def run():
        q = np.ones(n_paths, dt)
        p = np.zeros(n_paths, dt)
        baoab(q, p, 12345, 678, n_steps, H, GAMMA, KT)
        return q

    run_small = lambda: baoab(np.ones(4, dt), np.zeros(4, dt), 1, 2, 2, H, GAMMA, KT)
    return run, run_small


def torch_run(n_paths, n_steps, dtype):
    import torch

    torch.manual_seed(1)
    tdt = getattr(torch, dtype)

    def run():
        q = torch.ones(n_paths, dtype=tdt)
        p = torch.zeros(n_paths, dtype=tdt)
        c = math.exp(-GAMMA * H)
        s = math.sqrt(KT * (1 - c * c))
        with torch.no_grad():
            force = -4.0 * q * (q * q - 1.0)
            for _ in range(n_steps):
                p += 0.5 * H * force
                q += 0.5 * H * p
                p.mul_(c).add_(torch.randn(n_paths, dtype=tdt), alpha=s)
                q += 0.5 * H * p
                force = -4.0 * q * (q * q - 1.0)
                p += 0.5 * H * force
        return q

    return run


def numpy_loop(n_paths, n_steps, dtype):
    """BAOAB as a numpy user writes it: (n_paths,) arrays, in place, one standard_normal per step."""
    rng = np.random.default_rng(1)
    dt = np.dtype(dtype)
    c = math.exp(-GAMMA * H)
    s = math.sqrt(KT * (1 - c * c))

    def run():
        q = np.ones(n_paths, dt)
        p = np.zeros(n_paths, dt)
        force = -4.0 * q * (q * q - 1.0)
        z = np.empty(n_paths, dt)
        for _ in range(n_steps):
            p += (0.5 * H) * force
            q += (0.5 * H) * p
            rng.standard_normal(out=z, dtype=dt)
            p *= c
            p += s * z
            q += (0.5 * H) * p
            force = -4.0 * q * (q * q - 1.0)
            p += (0.5 * H) * force
        return q

    return run


def jax_arrays_run(n_paths, n_steps, dtype):
    """BAOAB as a JAX user writes it over whole arrays: one jitted lax.scan over steps of
    (n_paths,) arrays, a key split and an (n_paths,) normal per step."""
    import jax
    import jax.numpy as jnp

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    jdt = getattr(jnp, dtype)
    c = math.exp(-GAMMA * H)
    s = math.sqrt(KT * (1 - c * c))

    @jax.jit
    def run_jit(key):
        def body(carry, _):
            q, p, key = carry
            key, sub = jax.random.split(key)
            p = p + 0.5 * H * (-4.0 * q * (q * q - 1.0))
            q = q + 0.5 * H * p
            p = c * p + s * jax.random.normal(sub, (n_paths,), dtype=jdt)
            q = q + 0.5 * H * p
            p = p + 0.5 * H * (-4.0 * q * (q * q - 1.0))
            return (q, p, key), None

        (q, p, _), _ = jax.lax.scan(body, (jnp.ones(n_paths, jdt), jnp.zeros(n_paths, jdt), key), None,
                                    length=n_steps)
        return q

    key = jax.random.PRNGKey(1)
    run_jit(key).block_until_ready()
    return lambda: run_jit(key).block_until_ready()


def diffrax_run(n_paths, n_steps, dtype, solver_name):
    """diffrax's ALIGN (underdamped Langevin terms) or Euler on the same SDE, with a
    VirtualBrownianTree, over (n_paths,) arrays, jitted. Returns (run, fraction of
    non-finite final positions)."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import lineax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    jdt = getattr(jnp, dtype)
    t1 = n_steps * H
    grad = lambda x, args=None: 4.0 * x * (x * x - 1.0)
    # diffrax's underdamped Langevin: dx = v dt, dv = -gamma v dt - u grad f dt + sqrt(2 gamma u) dW (kT = 1)
    assert KT == 1.0

    @jax.jit
    def run_jit(key):
        x0, v0 = jnp.ones(n_paths, jdt), jnp.zeros(n_paths, jdt)
        if solver_name == "ALIGN":
            bm = diffrax.VirtualBrownianTree(0.0, t1, tol=H / 2, shape=jax.ShapeDtypeStruct((n_paths,), jdt),
                                             key=key, levy_area=diffrax.SpaceTimeTimeLevyArea)
            terms = diffrax.MultiTerm(diffrax.UnderdampedLangevinDriftTerm(GAMMA, 1.0, grad),
                                      diffrax.UnderdampedLangevinDiffusionTerm(GAMMA, 1.0, bm))
            solver, y0 = diffrax.ALIGN(0.1), (x0, v0)
        else:
            bm = diffrax.VirtualBrownianTree(0.0, t1, tol=H / 2, shape=jax.ShapeDtypeStruct((2, n_paths), jdt),
                                             key=key)
            scale = jnp.stack([jnp.zeros(n_paths, jdt), jnp.full(n_paths, math.sqrt(2 * GAMMA), jdt)])
            terms = diffrax.MultiTerm(
                diffrax.ODETerm(lambda t, y, a: jnp.stack([y[1], -GAMMA * y[1] - grad(y[0])])),
                diffrax.ControlTerm(lambda t, y, a: lineax.DiagonalLinearOperator(scale), bm))
            solver, y0 = diffrax.Euler(), jnp.stack([x0, v0])
        sol = diffrax.diffeqsolve(terms, solver, 0.0, t1, dt0=H, y0=y0, saveat=diffrax.SaveAt(t1=True),
                                  max_steps=n_steps + 1)
        return sol.ys[0][0] if solver_name == "ALIGN" else sol.ys[0, 0]

    key = jax.random.PRNGKey(1)
    q = run_jit(key).block_until_ready()
    bad = float(jnp.mean(~jnp.isfinite(q)))
    return (lambda: run_jit(key).block_until_ready()), bad


def jax_run(n_paths, n_steps, dtype):
    import jax
    import jax.numpy as jnp

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    jdt = getattr(jnp, dtype)
    c = math.exp(-GAMMA * H)
    s = math.sqrt(KT * (1 - c * c))

    def path(key):
        def body(carry, k):
            q, p = carry
            p = p + 0.5 * H * (-4.0 * q * (q * q - 1.0))
            q = q + 0.5 * H * p
            p = c * p + s * jax.random.normal(k, dtype=jdt)
            q = q + 0.5 * H * p
            p = p + 0.5 * H * (-4.0 * q * (q * q - 1.0))
            return (q, p), None

        (q, p), _ = jax.lax.scan(body, (jnp.ones((), jdt), jnp.zeros((), jdt)), jax.random.split(key, n_steps))
        return q

    f = jax.jit(jax.vmap(path))
    keys = jax.random.split(jax.random.PRNGKey(1), n_paths)
    f(keys).block_until_ready()
    return lambda: f(keys).block_until_ready()


cuda = _device_path = None   # set by hand_cuda (numba.cuda is imported only when a GPU runs)


def _cuda_baoab(q, p, key0, key1, n_steps, h, c, s):
    """The cuda kernel of :func:`hand_cuda`: thread i runs path i (``_device_path``: expert_path on the device)."""
    i = cuda.grid(1)
    if i < q.shape[0]:
        q[i], p[i] = _device_path(q[i], p[i], i, key0, key1, n_steps, h, c, s)


def hand_cuda(n_paths, n_steps, dtype):
    """A hand-written numba.cuda BAOAB kernel with the same Philox normals."""
    global cuda, _device_path
    from numba import cuda   # a module global, so that numba-cuda's simulator can swap it

    dt = np.dtype(dtype).type
    # expert_path with the cuda build of the Philox normal, as a device function
    _device_path = cuda.jit(device=True)(types.FunctionType(expert_path.__code__, {**expert_path.__globals__,
                                                    "normal": runtime.functions("cuda")["normal"]}))
    baoab = cuda.jit(_cuda_baoab)

    c = math.exp(-GAMMA * H)
    s = math.sqrt(KT * (1 - c * c))

    def run():
        q = cuda.to_device(np.ones(n_paths, dt))
        p = cuda.to_device(np.zeros(n_paths, dt))
        baoab[(n_paths + 127) // 128, 128](q, p, 12345, 678, n_steps, H, c, s)
        cuda.synchronize()

    run()
    return run


# ----------------------------------------------------------------------------- compile times

CHILD = """
import os, sys, time
t = time.perf_counter()
import sdekit, sdekit.kernels
t_import = time.perf_counter() - t
t = time.perf_counter()
sdekit.ensemble({scheme!r}, sdekit.systems.DoubleWell(), h=0.1, n_steps=2, n_paths=8, seed=0, backend="cpu", q0=[1.0])
t_first = time.perf_counter() - t
mod = sdekit.kernels.build({scheme!r}, sdekit.systems.DoubleWell())
hits, misses = sdekit.kernels.cache_stats(mod)["ensemble"]
print(t_first, hits, misses)
"""


def child_first_call(scheme, cache_dir):
    env = dict(os.environ, SDEKIT_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", CHILD.format(scheme=scheme)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def compile_times():
    """(fresh compile, second call same process, second process with the disk cache)."""
    with tempfile.TemporaryDirectory() as d:
        first, _, misses = child_first_call("BAOAB", d)
        second_process, hits, _ = child_first_call("BAOAB", d)
    os.environ.setdefault("SDEKIT_CACHE_DIR", tempfile.mkdtemp(prefix="sdekit-bench-"))
    t = time.perf_counter()
    sdekit.ensemble("OBABO", sdekit.systems.DoubleWell(), h=0.1, n_steps=2, n_paths=8, seed=0, backend="cpu")
    in_memory = time.perf_counter() - t
    t = time.perf_counter()
    sdekit.ensemble("OBABO", sdekit.systems.DoubleWell(), h=0.1, n_steps=2, n_paths=8, seed=0, backend="cpu")
    in_memory = time.perf_counter() - t
    return first, in_memory, second_process, hits, misses


# ----------------------------------------------------------------------------- main

def main(argv=None):
    gpu = sdekit.kernels.cuda_available() and not os.environ.get("NUMBA_ENABLE_CUDASIM")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=None, help="paths (default 1e5 CPU, 4e6 GPU)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--numpy-paths", type=int, default=None, help="paths for the slow contestants (default --paths)")
    ap.add_argument("--peer-paths", type=int, default=10_000, help="paths for diffrax (default 1e4)")
    ap.add_argument("--dtype", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", metavar="PATH", default=None, help="also write the output to PATH (markdown)")
    args = ap.parse_args(argv)
    n_paths = args.paths or 100_000
    n_steps = args.steps

    say = Report()
    say(f"sdekit bench_ensemble: double well, BAOAB, h={H}, gamma={GAMMA}, kT={KT}; "
        f"{n_paths} paths x {n_steps} steps; numba {numba.__version__}, {numba.get_num_threads()} threads, "
        f"numpy {np.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    say("")
    first, in_memory, second_process, hits, misses = compile_times()
    say(f"compile (first ensemble() call): new scheme in a fresh process {first:.2f} s (disk cache misses "
        f"{misses}); again in the same process {in_memory * 1e3:.1f} ms; a second process loading numba's "
        f"disk cache {second_process:.2f} s (disk cache hits {hits})")
    say("")

    rows = []
    work = n_paths * n_steps
    for dtype in args.dtype:
        res = {}
        f = sdekit_run("cpu", n_paths, n_steps, dtype)
        sdekit_run("cpu", 8, 2, dtype)()  # compile
        run, small = hand_numba(n_paths, n_steps, dtype)
        small()
        # interleaved repeats, best of each: fair on a machine with other load
        best = {"gen": np.inf, "hand": np.inf}
        for _ in range(args.repeat):
            best["gen"] = min(best["gen"], best_of(f, 1))
            best["hand"] = min(best["hand"], best_of(run, 1))
        res["sdekit cpu (generated)"] = work / best["gen"]
        res["hand-written numba prange"] = work / best["hand"]
        m = args.numpy_paths or n_paths
        res["numpy backend (vectorised)"] = m * n_steps / best_of(sdekit_run("numpy", m, n_steps, dtype), 1)
        res["numpy loop (hand-written, vectorised)"] = m * n_steps / best_of(numpy_loop(m, n_steps, dtype), 1)
        try:
            import torch

            torch.set_num_threads(numba.get_num_threads())
            res[f"torch {torch.__version__} (vectorised)"] = m * n_steps / best_of(torch_run(m, n_steps, dtype), 1)
        except ImportError:
            res["torch: not installed (skipped)"] = None
        try:
            import jax  # noqa: F401

            res[f"jax {jax.__version__} vmap(per-path scan), jit"] = m * n_steps / best_of(jax_run(m, n_steps, dtype), 1)
            res[f"jax {jax.__version__} scan over (n_paths,) arrays, jit"] = (
                m * n_steps / best_of(jax_arrays_run(m, n_steps, dtype), 1))
        except ImportError:
            res["jax: not installed (skipped)"] = None
        try:
            import diffrax

            k = args.peer_paths
            for solver in ("ALIGN", "Euler"):
                run_d, bad = diffrax_run(k, n_steps, dtype, solver)
                note = f", {bad:.1%} of paths non-finite" if bad else ""
                res[f"diffrax {diffrax.__version__} {solver} + VirtualBrownianTree ({k} paths{note})"] = (
                    k * n_steps / best_of(run_d, 1))
        except ImportError:
            res["diffrax: not installed (skipped)"] = None
        if gpu:
            g = args.paths or 4_000_000
            fcuda = sdekit_run("cuda", g, n_steps, dtype)
            sdekit_run("cuda", 256, 2, dtype)()
            res[f"sdekit cuda (generated, {g} paths)"] = g * n_steps / best_of(fcuda, args.repeat)
            res[f"hand-written numba.cuda ({g} paths)"] = g * n_steps / best_of(hand_cuda(g, n_steps, dtype), args.repeat)
        rows.append((dtype, res))

    ref_name = "sdekit cpu (generated)"
    lines = ["| dtype | implementation | path-steps/s | generated kernel is x faster |",
             "|---|---|---:|---:|"]
    for dtype, res in rows:
        for name, rate in res.items():
            if rate is None:
                lines.append(f"| {dtype} | {name} | - | - |")
            else:
                lines.append(f"| {dtype} | {name} | {rate:.3g} | {res[ref_name] / rate:.2f} |")
    for line in lines:
        say(line)
    say.write(args.write)


if __name__ == "__main__":
    main()
