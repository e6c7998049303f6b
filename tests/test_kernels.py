"""Tests of the generated kernels (sdekit.kernels): Philox, the cpu backend against the
numpy reference and exact results, determinism across threads, resume, cuda (simulator).

Compilation dominates the run time: a fresh cache compiles ~14 kernels (a few seconds
each); later runs load them from numba's disk cache (~/.cache/sdekit/kernels).
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy import stats

import sdekit
import sdekit.kernels
from sdekit import DivergenceError
from sdekit.kernels import philox, runtime
from sdekit.kernels import cpu as kcpu
from sdekit.schemes import CATALOGUE, Scheme
from sdekit.systems import DoubleWell, Harmonic

from conftest import assert_same_ensemble, assert_within

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(code, **env):
    """Run python code in a subprocess with extra environment; return its stdout."""
    full_env = dict(os.environ, **{k: str(v) for k, v in env.items()})
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


# ----------------------------------------------------------------------------- Philox

# Random123 kat_vectors, philox4x32_10: counter (4 words), key (2 words) -> 4 words
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((0xffffffff,) * 4, (0xffffffff,) * 2, (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
]


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_philox_known_answers(ctr, key, want):
    assert tuple(int(x) for x in philox.philox4x32_10(*ctr, *key)) == want  # plain Python
    jitted = runtime.functions("cpu")["philox4x32_10"]
    assert tuple(int(x) for x in jitted(*ctr, *key)) == want  # numba
    arrays = philox.philox4x32_10(*(np.full(3, c, np.uint64) for c in ctr), *key)  # numpy arrays
    assert all((a == w).all() for a, w in zip(arrays, want))


@pytest.mark.statistical
def test_normals_are_standard_normal_and_independent():
    n_paths, n_draws = 2000, 100
    z = np.empty((n_paths, n_draws))
    kcpu.fill_normals(12345, 678, 0, z)
    flat = z.ravel()
    n = flat.size
    assert_within(flat.mean(), 1 / np.sqrt(n), 0.0, what="mean")
    assert_within(flat.var(), np.sqrt(2 / n), 1.0, what="variance")
    assert_within(np.mean(flat ** 4), np.sqrt(96 / n), 3.0, what="fourth moment")
    assert stats.kstest(flat, "norm").pvalue > 1e-4
    # neighbouring paths and consecutive draws are uncorrelated
    assert_within(np.mean(z[1:] * z[:-1]), 1 / np.sqrt(z[1:].size), 0.0, what="path correlation")
    assert_within(np.mean(z[:, 1:] * z[:, :-1]), 1 / np.sqrt(z[:, 1:].size), 0.0, what="draw correlation")


def test_normals_are_a_function_of_key_path_and_counter():
    z = np.empty((50, 7))
    kcpu.fill_normals(1, 2, 0, z)
    for i, n in [(0, 0), (3, 1), (49, 6), (17, 5)]:
        assert z[i, n] == philox.normal_pair(1, 2, i, n // 2)[n % 2]  # plain Python, one draw
    tail = np.empty((50, 4))
    kcpu.fill_normals(1, 2, 3, tail)  # resuming at an odd position
    np.testing.assert_array_equal(tail, z[:, 3:])
    other = np.empty((50, 7))
    kcpu.fill_normals(1, 3, 0, other)
    assert not np.any(other == z)


def test_seed_maps_to_key_deterministically():
    k = sdekit.kernels.seed_key(7)
    assert k == sdekit.kernels.seed_key(7) == sdekit.kernels.seed_key(np.random.SeedSequence(7))
    assert k != sdekit.kernels.seed_key(8)
    assert sdekit.kernels.seed_key(np.random.default_rng(1)) == sdekit.kernels.seed_key(np.random.default_rng(1))
    assert all(0 <= w < 2 ** 32 for w in sdekit.kernels.seed_key(None))
    with pytest.raises(ValueError, match="seed"):
        sdekit.kernels.seed_key(-1)
    with pytest.raises(ValueError, match="seed"):
        sdekit.ensemble("BAOAB", Harmonic(), h=0.1, n_steps=1, n_paths=2, seed="x", backend="cpu")


# ----------------------------------------------------------------------------- generation

def test_source_reads_like_the_scheme():
    text = sdekit.kernels.source("BAOAB", system=DoubleWell())
    body = text[text.index("def step("):text.index("return xi, ctr, spare")]
    letters = [line.split()[1] for line in body.splitlines() if line.strip().startswith("# ") and
               line.split()[1] in "ABOD"]
    assert letters == list("BAOAB")
    assert body.count("kick(") == 2 and body.count("drift(") == 2 and body.count("ou(") == 1
    assert body.count("force(") == 1  # lazy: one force evaluation per step
    assert "0.5 * h" in text and "def ensemble(" in text and "nogil=True" in text and "prange" not in text
    cuda_text = sdekit.kernels.source("BADODAB", backend="cuda")
    assert "@cuda.jit" in cuda_text and "thermostat(" in cuda_text
    compile(cuda_text, "<cuda>", "exec")
    with pytest.raises(ValueError, match="backend"):
        sdekit.kernels.source("BAOAB", backend="tpu")


def test_default_backend_and_user_observables():
    assert sdekit.backends.default().name == ("cuda" if sdekit.kernels.cuda_available() else "cpu")
    with pytest.raises(ValueError, match="observables.*numpy"):
        sdekit.ensemble("BAOAB", Harmonic(), h=0.1, n_steps=1, n_paths=2, backend="cpu",
                        observables={"e": lambda q, p: q[:, 0]})
    # with the default backend, user observables select the numpy backend
    e = sdekit.ensemble("BAOAB", Harmonic(), h=0.1, n_steps=1, n_paths=2, observables={"e": lambda q, p: q[:, 0]})
    assert e.state.backend == "numpy" and "e" in e.mean


# ----------------------------------------------------------------------------- cpu vs exact and numpy

H, W = 0.5, 1.0
EXACT = {  # stationary on-step values on the harmonic oscillator (omega = 1, kT = 1)
    "BAOAB": {"q2": 1.0, "p2": 1 - H ** 2 / 4, "p2_O": 1.0},
    "OBABO": {"q2": 1 / (1 - H ** 2 / 4), "p2": 1.0},
    "EM": {"q2": 1 / (1 - H / 2)},
    "LM": {"q2": 1.0},
}


@pytest.mark.statistical
@pytest.mark.parametrize("name", [n for n in CATALOGUE if n != "BADODAB"])
def test_catalogue_moments_cpu(name):
    kw = dict(h=H, n_steps=60, n_paths=20_000, gamma=1.0, kT=1.0, q0=[1.0])
    cpu = sdekit.ensemble(name, Harmonic(W), seed=11, backend="cpu", **kw)
    ref = sdekit.ensemble(name, Harmonic(W), seed=11, backend="numpy", **kw)
    assert cpu.n_alive[-1] == 20_000
    for obs, value in EXACT.get(name, {}).items():
        assert_within(cpu.mean[obs][-1], cpu.stderr(obs)[-1], value, what=f"{name} cpu <{obs}>")
    for obs in ("q2", "p2", "p2_O", "q", "p"):
        if obs in cpu.mean:
            se = np.hypot(cpu.stderr(obs)[-1], ref.stderr(obs)[-1])
            assert_within(cpu.mean[obs][-1] - ref.mean[obs][-1], se, 0.0, what=f"{name} cpu - numpy <{obs}>")


@pytest.mark.statistical
def test_badodab_adaptive_thermostat():
    """gamma = 0, driving noise sigma_A: <p.p>/N = kT and <xi> = sigma_A^2 / (2 kT)."""
    N, sigma_A, kT = 10, 1.0, 1.0
    ens = sdekit.ensemble("BADODAB", Harmonic(dim=N), h=0.05, n_steps=1200, n_paths=20_000, gamma=0.0,
                          kT=kT, sigma_A=sigma_A, eps=1.0, seed=5, backend="cpu")
    kinetic = (ens.p ** 2).sum(axis=1) / N
    se = lambda x: x.std(ddof=1) / np.sqrt(len(x))
    assert_within(kinetic.mean(), se(kinetic), kT, what="<p.p>/N")
    assert_within(ens.xi.mean(), se(ens.xi), sigma_A ** 2 / (2 * kT), what="<xi>")


RANDOM_WORDS = [
    [("A", 1.3), ("B", 0.5), ("O", 0.25), ("A", -0.3), ("O", 0.75), ("B", 0.5)],
    [("O", 0.5), ("B", 0.5), ("D", 0.4), ("A", 1.0), ("D", 0.6), ("B", 0.5), ("O", 0.5)],
]


@pytest.mark.parametrize("scheme", list(CATALOGUE) + RANDOM_WORDS, ids=lambda s: s if isinstance(s, str) else
                         "".join(l for l, _ in s))
def test_noiseless_cpu_equals_numpy(scheme):
    """kT = 0 (O only damps): the kernels and the reference are the same deterministic map."""
    rng = np.random.default_rng(0)
    s = Scheme(scheme)
    q0 = rng.uniform(-1.5, 1.5, (16, 1))
    p0 = None if s.overdamped else rng.normal(size=(16, 1))
    kw = dict(h=0.3, n_steps=40, n_paths=16, gamma=0.7, kT=0.0, q0=q0, p0=p0, xi0=0.1, eps=0.5,
              record_every=10)
    a = sdekit.ensemble(s, Harmonic(W), backend="cpu", seed=0, **kw)  # the kernels of the statistical tests
    b = sdekit.ensemble(s, Harmonic(W), backend="numpy", seed=0, **kw)
    np.testing.assert_allclose(a.q, b.q, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(a.xi, b.xi, rtol=1e-13, atol=1e-13)
    if not s.overdamped:
        np.testing.assert_allclose(a.p, b.p, rtol=1e-13, atol=1e-13)
    for k in b.mean:
        np.testing.assert_allclose(a.mean[k], b.mean[k], rtol=1e-12, atol=1e-13, err_msg=k)


def test_float32_runs_and_agrees():
    kw = dict(h=0.1, n_steps=40, n_paths=16, gamma=0.7, kT=0.0, q0=[1.5], p0=[0.3])
    a = sdekit.ensemble("BAOAB", DoubleWell(), backend="cpu", dtype="float32", seed=0, **kw)
    b = sdekit.ensemble("BAOAB", DoubleWell(), backend="numpy", dtype="float32", seed=0, **kw)
    assert a.q.dtype == np.float32 and a.mean["q2"].dtype == np.float32
    np.testing.assert_allclose(a.q, b.q, rtol=1e-5)



@pytest.mark.parametrize("name", ["BAOAB", "BADODAB", "LM"])
def test_scalar_and_array_forms_agree_bitwise(name, monkeypatch):
    """The cpu kernel's register (tuple) form and its array form (used for d > UNROLL) are
    the same arithmetic: the same bits, divergences included."""
    from sdekit.kernels import storage

    q0 = np.full((64, 2), 0.5)
    q0[5] = 9.0  # leaves |q| <= 8 at once
    kw = dict(h=0.2, n_steps=30, n_paths=64, seed=4, q0=q0, record_every=10, xi0=0.1, eps=0.5, gamma=0.8,
              on_divergence="mask", max_abs=8.0)
    a = sdekit.ensemble(name, DoubleWell(2), backend="cpu", **kw)
    assert "qa, Fa" in sdekit.kernels.source(name, DoubleWell(2))
    monkeypatch.setattr(storage, "UNROLL", 0)   # read by storage.scalar_form
    assert "qa, Fa" not in sdekit.kernels.source(name, DoubleWell(2))
    b = sdekit.ensemble(name, DoubleWell(2), backend="cpu", **kw)
    assert 5 in a.diverged and len(a.diverged) < 32
    np.testing.assert_array_equal(a.diverged, b.diverged)
    assert_same_ensemble(a, b)


# ----------------------------------------------------------------------------- determinism, resume

THREADS_CHILD = """
import json, sys, numpy as np, numba, sdekit, sdekit.kernels
from sdekit.systems import Harmonic
e = sdekit.ensemble("BAOAB", Harmonic(1.0), h=0.5, n_steps=200, n_paths=3000, seed=4, backend="cpu",
                    record_every=50, q0=[1.0])
mod = sdekit.kernels.build("BAOAB", Harmonic(1.0))
out = {"threads": numba.get_num_threads(), "hits": sdekit.kernels.cache_stats(mod)["ensemble"][0],
       "q": e.q.tobytes().hex(), "p": e.p.tobytes().hex(),
       "mean": {k: v.tobytes().hex() for k, v in e.mean.items()},
       "meansq": {k: v.tobytes().hex() for k, v in e.meansq.items()}, "rng": e.state.rng}
print(json.dumps(out))
"""


def test_prune_cache_removes_the_least_recently_used_kernels(tmp_path):
    """Each kernel is its module, its use stamp and numba's files; the oldest go first, recent ones stay."""
    import time
    from sdekit.kernels import prune_cache

    pycache = tmp_path / "__pycache__"
    pycache.mkdir()
    now = time.time()
    for i, age_h in enumerate([30, 20, 10, 0]):   # kernel 3 was used just now
        name = f"sdekit_kernel_{i:016x}"
        files = [tmp_path / f"{name}.py", tmp_path / f"{name}.used", pycache / f"{name}.step-1.py311.nbi",
                 pycache / f"{name}.step-1.py311.1.nbc"]
        for f in files:
            f.write_bytes(b"x" * 2 ** 18)   # 1 MB per kernel
            os.utime(f, (now - 3600 * age_h, now - 3600 * age_h))
    (tmp_path / "other.txt").write_text("not a kernel")
    assert prune_cache(max_mb=4.5, folder=str(tmp_path)) == []
    assert prune_cache(max_mb=2.5, folder=str(tmp_path)) == [f"sdekit_kernel_{0:016x}", f"sdekit_kernel_{1:016x}"]
    assert sorted(p.name for p in tmp_path.glob("*.py")) == [f"sdekit_kernel_{i:016x}.py" for i in (2, 3)]
    assert len(list(pycache.iterdir())) == 4 and (tmp_path / "other.txt").exists()
    assert prune_cache(max_mb=0, folder=str(tmp_path)) == [f"sdekit_kernel_{2:016x}"]   # 3 is recent: kept
    with pytest.raises(ValueError, match="max_mb"):
        prune_cache(max_mb=-1, folder=str(tmp_path))


def test_bitwise_equal_for_one_and_two_threads_and_disk_cache():
    """NUMBA_NUM_THREADS=1 and =2 give the same bits; the second process loads the disk cache."""
    one = json.loads(run_child(THREADS_CHILD, NUMBA_NUM_THREADS=1))
    two = json.loads(run_child(THREADS_CHILD, NUMBA_NUM_THREADS=2))
    assert (one["threads"], two["threads"]) == (1, 2)
    assert two["hits"] >= 1, "the second process should load the kernel from numba's disk cache"
    for key in ("q", "p", "mean", "meansq", "rng"):
        assert one[key] == two[key], key


CALLED_CHILD = """
import json, sdekit
from sdekit.kernels import runtime
sdekit.ensemble("OBABO", sdekit.systems.Harmonic(1.0), h=0.5, n_steps=20, n_paths=10, seed=1, backend="cpu")
f = runtime.functions("cpu")
print(json.dumps({name: sum(f[name].stats.cache_hits.values()) for name in runtime.CALLED}))
"""


def test_a_new_scheme_loads_the_called_philox_functions_from_the_disk_cache(tmp_path):
    """A fresh process compiling a new kernel (an empty SDEKIT_CACHE_DIR) loads gaussian_tail and
    first_spare from numba's cache instead of compiling them (issue 18: compile time)."""
    for k in range(2):   # the first process may be the one that fills numba's cache
        hits = json.loads(run_child(CALLED_CHILD, SDEKIT_CACHE_DIR=tmp_path / f"kernels{k}"))
    assert hits == {name: 1 for name in sdekit.kernels.runtime.CALLED}


@pytest.mark.parametrize("name", ["BAOAB", "LM", "BADODAB"])
def test_resume_is_bitwise(name):
    kw = dict(h=0.3, gamma=1.0, kT=1.0, seed=9, backend="cpu", record_every=100)
    full = sdekit.ensemble(name, Harmonic(W), n_steps=1000, n_paths=300, **kw)
    half = sdekit.ensemble(name, Harmonic(W), n_steps=500, n_paths=300, **kw)
    json.dumps(half.state.rng)  # JSON-able
    rest = sdekit.ensemble(name, Harmonic(W), n_steps=500, n_paths=300, resume=half.state, **kw)
    np.testing.assert_array_equal(rest.q, full.q)
    np.testing.assert_array_equal(rest.xi, full.xi)
    if full.p is not None:
        np.testing.assert_array_equal(rest.p, full.p)
    np.testing.assert_array_equal(rest.mean["q2"][-1], full.mean["q2"][-1])
    assert rest.state.rng == full.state.rng and rest.state.step == 1000


def test_simulate_resume_and_records():
    kw = dict(h=0.3, gamma=1.0, kT=1.0, seed=3, backend="cpu", record_every=10)
    full = sdekit.simulate("BAOAB", Harmonic(W), n_steps=1000, **kw)
    half = sdekit.simulate("BAOAB", Harmonic(W), n_steps=500, **kw)
    rest = sdekit.simulate("BAOAB", Harmonic(W), n_steps=500, resume=half.state, **kw)
    assert full.q.shape == (101, 1) and full.p_O.shape == (101, 1) and np.isnan(full.p_O[0]).all()
    np.testing.assert_array_equal(np.concatenate([half.q, rest.q]), full.q)
    np.testing.assert_array_equal(np.concatenate([half.p, rest.p]), full.p)
    np.testing.assert_array_equal(np.concatenate([half.t, rest.t]), full.t)
    np.testing.assert_array_equal(rest.state.q, full.state.q)
    # path 0 of an ensemble is the same stream: the same trajectory
    ens = sdekit.ensemble("BAOAB", Harmonic(W), n_steps=1000, n_paths=3, **kw)
    np.testing.assert_array_equal(ens.q[0], full.state.q[0])
    with pytest.raises(ValueError, match="resume"):
        sdekit.simulate("BAOAB", Harmonic(W), n_steps=5, h=0.3, backend="numpy", resume=half.state)


# ----------------------------------------------------------------------------- divergence

def test_divergence_raise_names_first_step_and_path():
    q0 = np.zeros((40, 1))
    q0[[7, 23]] = 50.0  # these leave |q| <= 10 at once, path 7 first by index
    kw = dict(h=0.3, n_steps=50, n_paths=40, q0=q0, seed=0, kT=0.0, max_abs=10.0)
    with pytest.raises(DivergenceError) as cpu_err:
        sdekit.ensemble("BAOAB", Harmonic(W), backend="cpu", **kw)
    with pytest.raises(DivergenceError) as ref_err:
        sdekit.ensemble("BAOAB", Harmonic(W), backend="numpy", **kw)
    assert (cpu_err.value.step, cpu_err.value.path) == (ref_err.value.step, ref_err.value.path) == (1, 7)
    assert "step 1 (path 7)" in str(cpu_err.value)
    masked = sdekit.ensemble("BAOAB", Harmonic(W), backend="cpu", on_divergence="mask", **kw)
    np.testing.assert_array_equal(masked.diverged, [7, 23])
    assert masked.n_alive[0] == 40 and masked.n_alive[-1] == 38
    assert np.isfinite(masked.mean["q2"][-1]).all()
    with pytest.raises(DivergenceError):  # non-finite: an unstable step (h omega > 2)
        sdekit.simulate("BAOAB", Harmonic(W), h=2.5, n_steps=5000, q0=[1.0], gamma=0.0, backend="cpu")


@pytest.mark.parametrize("record_every", [1, 7, 60])
def test_divergence_checked_per_block_names_the_step(record_every):
    # The cpu drivers check a path once per record block and replay a failing block step by
    # step. Without noise the numpy backend (checked every step) gives the exact steps: each
    # path's amplitude passes max_abs = 2 at a different step, some only in passing
    # (|q| > 2 for a few steps, back under 2 by the block's end).
    q0 = np.array([[0.0], [1.0], [0.5], [0.1]])
    p0 = np.array([[1.0], [2.1], [2.4], [3.0]])
    kw = dict(h=0.3, n_steps=60, n_paths=4, q0=q0, p0=p0, seed=0, kT=0.0, gamma=0.0, max_abs=2.0,
              on_divergence="mask", record_every=record_every)
    cpu = sdekit.ensemble("BAOAB", Harmonic(1.0), backend="cpu", **kw)
    ref = sdekit.ensemble("BAOAB", Harmonic(1.0), backend="numpy", **kw)
    np.testing.assert_array_equal(cpu.diverged, [1, 2, 3])
    np.testing.assert_array_equal(cpu.diverged, ref.diverged)
    np.testing.assert_array_equal(cpu.n_alive, ref.n_alive)
    # the diverged paths stop at their first bad step, as with a check every step
    every = sdekit.ensemble("BAOAB", Harmonic(1.0), backend="cpu", **dict(kw, record_every=1))
    assert np.array_equal(cpu.q, every.q) and np.array_equal(cpu.p, every.p)
    with pytest.raises(DivergenceError) as err:
        sdekit.simulate("BAOAB", Harmonic(1.0), h=0.3, n_steps=60, q0=[1.0], p0=[2.1], kT=0.0, gamma=0.0,
                        max_abs=2.0, record_every=record_every, backend="cpu")
    with pytest.raises(DivergenceError) as ref_err:
        sdekit.simulate("BAOAB", Harmonic(1.0), h=0.3, n_steps=60, q0=[1.0], p0=[2.1], kT=0.0, gamma=0.0,
                        max_abs=2.0, record_every=1, backend="numpy")
    assert err.value.step == ref_err.value.step == 2
    path = sdekit.simulate("BAOAB", Harmonic(1.0), h=0.3, n_steps=2, q0=[1.0], p0=[2.1], kT=0.0, gamma=0.0,
                           backend="cpu")
    assert cpu.q[1, 0] == path.q[-1, 0]    # path 1 stopped at its step 2


def test_max_abs_is_honoured():
    kw = dict(h=0.3, n_steps=300, n_paths=500, seed=2, max_abs=3.5, q0=[1.0])
    ens = sdekit.ensemble("BAOAB", Harmonic(W), backend="cpu", on_divergence="mask", **kw)
    assert 0 < len(ens.diverged) < 500
    assert ens.n_alive[-1] == 500 - len(ens.diverged)
    assert np.all(np.abs(ens.q[ens.diverged]) > 3.5)
    alive = np.setdiff1d(np.arange(500), ens.diverged)
    assert np.all(np.abs(ens.q[alive]) <= 3.5)
    np.testing.assert_allclose(ens.mean["q2"][-1], (ens.q[alive] ** 2).mean(axis=0), rtol=1e-12)


# ----------------------------------------------------------------------------- cuda

CUDASIM_KW = dict(h=0.3, n_steps=12, n_paths=64, seed=3, record_every=4, q0=[0.5], gamma=0.5, xi0=0.1, eps=0.5)
CUDASIM_CHILD = """
import json, numpy as np, sdekit, sdekit.kernels
from sdekit.systems import Harmonic
out = {}
for name, extra in [("BADODAB", dict(sigma_A=1.0)), ("LM", {})]:
    g = sdekit.ensemble(name, Harmonic(1.0), backend="cuda", **KW, **extra)
    out[name] = {"q": g.q.tolist(), "xi": g.xi.tolist(), "rng": g.state.rng, "n_alive": g.n_alive.tolist(),
                 "mean": {k: v.tolist() for k, v in g.mean.items()}, "meansq": {k: v.tolist() for k, v in g.meansq.items()}}
print(json.dumps(out))
"""


@pytest.mark.cuda
def test_cuda_backend_under_the_simulator():
    """numba-cuda's simulator runs the generated cuda kernel: the same numbers as cpu to rounding."""
    out = json.loads(run_child(CUDASIM_CHILD.replace("**KW", f"**{CUDASIM_KW!r}"), NUMBA_ENABLE_CUDASIM=1))
    for name, extra in [("BADODAB", dict(sigma_A=1.0)), ("LM", {})]:
        c = sdekit.ensemble(name, Harmonic(W), backend="cpu", **CUDASIM_KW, **extra)
        g = out[name]
        np.testing.assert_allclose(g["q"], c.q, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g["xi"], c.xi, rtol=1e-12, atol=1e-14)
        assert g["rng"] == c.state.rng and g["n_alive"] == c.n_alive.tolist()
        assert sorted(g["mean"]) == sorted(c.mean)
        for k in c.mean:
            np.testing.assert_allclose(g["mean"][k], c.mean[k], rtol=1e-12, atol=1e-14, err_msg=k)
            np.testing.assert_allclose(g["meansq"][k], c.meansq[k], rtol=1e-12, atol=1e-14, err_msg=k)


needs_gpu = pytest.mark.skipif(not sdekit.kernels.cuda_available() or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                               reason="no NVIDIA GPU visible to numba.cuda")


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_matches_cpu_on_gpu(dtype):
    kw = dict(h=0.1, n_steps=200, n_paths=5000, seed=3, record_every=50, q0=[1.0], dtype=dtype)
    g = sdekit.ensemble("BAOAB", DoubleWell(), backend="cuda", **kw)
    c = sdekit.ensemble("BAOAB", DoubleWell(), backend="cpu", **kw)
    tol = 1e-9 if dtype == "float64" else 1e-3
    np.testing.assert_allclose(g.q, c.q, rtol=tol, atol=tol)
    np.testing.assert_allclose(g.mean["q2"], c.mean["q2"], rtol=tol)


# ----------------------------------------------------------------------------- time-dependent letters (cpu)

from test_time_dependent import DRIVEN, gamma_t, kT_t  # noqa: E402

THERMOSTAT_WORD = [("B", 0.5), ("D", 0.5), ("A", 1.0), ("D", 0.5), ("B", 0.5)]  # no O: kT(t) acts in D only


@pytest.mark.parametrize("word", ["BAOAB", "BADODAB", "EM", THERMOSTAT_WORD],
                         ids=lambda w: w if isinstance(w, str) else "BDADB")
def test_time_dependent_cpu_equals_numpy_noise_free(word):
    """F(q, t), gamma(t) (and kT(t) in D) at each letter's clock time: with no noise the cpu
    kernel and sdekit.reference are the same map, records and clock included (t0 != 0)."""
    s = Scheme(word)
    kT = kT_t if word is THERMOSTAT_WORD else (lambda t: 0.0)
    kw = dict(gamma=gamma_t, kT=kT, q0=[1.0], seed=0, t0=0.7, n_paths=8, record_every=10, xi0=0.2, eps=0.5)
    if not s.overdamped:
        kw.update(p0=[0.3], mass=1.5)
    a = sdekit.ensemble(s, DRIVEN, 0.15, 40, backend="cpu", **kw)
    b = sdekit.ensemble(s, DRIVEN, 0.15, 40, backend="numpy", **kw)
    assert a.state.backend == "cpu" and "tab[row" in sdekit.kernels.source(s, DRIVEN)
    np.testing.assert_array_equal(a.t, b.t)
    for k in ("q", "p", "xi"):
        if getattr(b, k) is not None:
            np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-12, atol=1e-13, err_msg=k)
    for k in b.mean:
        np.testing.assert_allclose(a.mean[k], b.mean[k], rtol=1e-12, atol=1e-13, err_msg=k)
    if word == "BAOAB":  # one path through the trajectory driver
        one = dict(kw, record_every=1)
        del one["n_paths"]
        c, r = (sdekit.simulate(s, DRIVEN, 0.15, 40, backend=be, **one) for be in ("cpu", "numpy"))
        np.testing.assert_allclose(c.q, r.q, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(c.p, r.p, rtol=1e-12, atol=1e-13)
        assert np.ptp(c.q) > 0.5


def _grad_plain(q, out):
    out[0] = 1.3 * q[0]


def _grad_ignoring_t(q, t, out):
    out[0] = 1.3 * q[0]


@pytest.mark.parametrize("word, dtype", [("BADODAB", "float64"), ("LM", "float32")])
def test_time_dependent_kernel_with_constants_is_bitwise_the_plain_one(word, dtype):
    """Constant callables and a gradient that ignores t: the time-dependent kernel gives the
    plain kernel's bits (which has no table: its text is unchanged)."""
    plain_sys = sdekit.systems.custom(_grad_plain, 1)
    timed_sys = sdekit.systems.custom(_grad_ignoring_t, 1, time_dependent=True)
    common = dict(n_paths=300, seed=3, record_every=5, q0=[0.5], dtype=dtype, backend="cpu", xi0=0.1)
    sA = 0.9 if word == "BADODAB" else None
    plain = sdekit.ensemble(word, plain_sys, 0.1, 20, gamma=1.3, kT=0.7, sigma_A=sA, **common)
    timed = sdekit.ensemble(word, timed_sys, 0.1, 20, gamma=lambda t: 1.3, kT=lambda t: 0.7, t0=5.0,
                            sigma_A=None if sA is None else (lambda t: 0.9), **common)
    assert timed.spec.time_dependent and not plain.spec.time_dependent
    assert "tab" not in sdekit.kernels.source(word, plain_sys, dtype=dtype)
    assert_same_ensemble(timed, plain)
    np.testing.assert_array_equal(timed.t, 5.0 + plain.t)


def test_time_dependent_resume_keeps_the_clock_bitwise():
    kw = dict(gamma=gamma_t, kT=kT_t, q0=[1.0], seed=9, t0=0.4, backend="cpu", n_paths=300, record_every=10)
    full = sdekit.ensemble("BAOAB", DRIVEN, 0.1, 60, **kw)
    half = sdekit.ensemble("BAOAB", DRIVEN, 0.1, 30, **kw)
    rest = sdekit.ensemble("BAOAB", DRIVEN, 0.1, 30, resume=half.state, **kw)
    for k in ("q", "p", "xi"):
        np.testing.assert_array_equal(getattr(rest, k), getattr(full, k), err_msg=k)
    np.testing.assert_array_equal(rest.mean["q2"][-1], full.mean["q2"][-1])
    np.testing.assert_array_equal(np.concatenate([half.t, rest.t]), full.t)
    with pytest.raises(ValueError, match="^backend:"):
        sdekit.ensemble("BAOAB", DRIVEN, 0.1, 2, gamma=gamma_t, n_paths=2, backend="cuda")
    with pytest.raises(ValueError, match="^backend:"):
        sdekit.kernels.source("BAOAB", DRIVEN, backend="cuda")


@pytest.mark.parametrize("dtype", [np.float32, np.dtype("float32"), "f4"])
def test_source_accepts_numpy_dtypes(dtype):
    """kernels.source takes dtypes as the drivers do (issue 16): the same text as "float32"."""
    system, source = DoubleWell(), sdekit.kernels.source
    assert source("BAOAB", system, dtype=dtype) == source("BAOAB", system, dtype="float32")
    with pytest.raises(ValueError, match="^dtype: .*got <class 'numpy.int32'>"):
        source("BAOAB", system, dtype=np.int32)
