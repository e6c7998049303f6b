r"""Compiled kernels generated from a :class:`~sdekit.schemes.Scheme` (numba CPU and numba-cuda).

For a scheme, a system and a dtype, :mod:`sdekit.kernels.codegen` writes the
Python source of a kernel module — the letters unrolled in word order, each
calling its flow from :mod:`sdekit.operators`, fractions folded into literals,
the force evaluated lazily (first-same-as-last) — which is then compiled by numba
(backend ``"cpu"``) or numba-cuda (backend ``"cuda"``). See the text with
:func:`source`.

Caching: built modules are kept per process (keyed by backend, scheme, system
gradient fingerprint, dimension and dtype). The source is written to a cache
directory (``$SDEKIT_CACHE_DIR``, default ``~/.cache/sdekit/kernels``) as an
ordinary module file, so numba's ``cache=True`` stores the compiled CPU code next
to it and a second process loads it instead of compiling. A gradient whose
closed-over values have no stable fingerprint is compiled per process only. The cache is
kept within ``$SDEKIT_CACHE_MAX_MB`` (default 1024 MB): when a new kernel is written, the
kernels used least recently are removed (:func:`prune_cache`; a use stamp ``<module>.used``
records the last build of each).

Random numbers: each path has its own Philox4x32-10 stream keyed by the run's
64-bit seed key (:func:`seed_key`), counter = (draw index, path index), turned into
normals by the inverse normal CDF (Wichura's AS 241); see :mod:`sdekit.kernels.philox`. Path i gets the same normals whatever the number of
threads, the chunking or the device, and ``State.rng`` =
``{"generator": "philox4x32_10", "key": [k0, k1], "counter": n}`` (every path has
drawn n slots of its stream: normals, and the uniforms u = Phi(z) of the Metropolis tests)
resumes a run bit for bit.

Constraints (``constraint=``, :mod:`sdekit.constraints`): the kernel applies SHAKE and
RATTLE exactly as :func:`sdekit.reference.step` does (each A is ``geodesic_steps``
sub-steps of drift, SHAKE, RATTLE; RATTLE after each B and O; D counts d - m degrees
of freedom), calling the constraint's own per-path functions (``constraint.per_path``:
on "cpu" the numba-compiled functions the numpy backend runs, on "cuda" the same text as
device functions). Backend "cpu" runs every constraint; "cuda" those whose per-path
functions compile as device functions (``constraint.device_functions``: the closed forms
Sphere and Circle, and their subclasses; :func:`check_constraint`). A failed SHAKE or RATTLE sets the path to NaN and
is recorded as minus the step in the drivers' ``bad`` array: a DivergenceError naming
SHAKE, the step and the path (or the path masked with ``on_divergence="mask"``).

Time dependence (:mod:`sdekit.schedules`; backend "cpu" only, cuda refuses it with a
ValueError naming backend): a spec with callable gamma, kT or sigma_A, or a system
with ``time_dependent`` (``gradient(q, t, out)``), gets a kernel whose letters read
their clock time, gamma, sigma and kT from the run's coefficient tables
(:func:`sdekit.schedules.coefficient_tables`, passed as one array ``tab``, a row per
step: 8 (n_steps + 1) x width bytes). A time-independent spec gets exactly the kernel it
had before (the same text), and constant callables give its bits.

User observables (``observables=``) are not supported by the compiled backends
(:mod:`sdekit.backends` refuses them with a ValueError suggesting ``backend="numpy"``;
with ``backend=None`` the drivers pick "numpy" when user observables are given). The
backend objects that run these kernels, and the rules for the default, are in
:mod:`sdekit.backends`. The built-in observables
(q, p, q2, p2, p_O, p2_O, xi) are streamed as across-path sums per record, so an
ensemble needs O(n_paths + n_records) memory, not O(n_paths x n_records).
"""
import contextlib
import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import time
import warnings

import numba
import numpy as np

from .. import shadow as _shadow
from .._checks import dtype_name
from ..constraints import validate
from ..schemes import Scheme
from ..systems import Harmonic, check_force_groups
from . import codegen, philox, runtime  # noqa: F401  (philox: public submodule)

GENERATOR = "philox4x32_10"
_MODULES = {}
_LOCK = threading.Lock()


# ----------------------------------------------------------------------------- backends

@functools.lru_cache(maxsize=None)
def cuda_available():
    """True when numba-cuda is importable and finds a GPU (or the simulator is on); cached."""
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception as exc:  # a broken driver reports through many exception types
        warnings.warn(f"numba.cuda.is_available() failed: {exc!r}; using the CPU backend")
        return False


# ----------------------------------------------------------------------------- random numbers

def seed_key(seed):
    """The 64-bit Philox key (two 32-bit words) of a seed.

    ``int`` or ``SeedSequence``: ``SeedSequence(seed).generate_state(2)``;
    ``Generator``: two 32-bit draws from it (advancing it); ``None``: fresh entropy.
    """
    if isinstance(seed, np.random.Generator):
        words = seed.integers(0, 2 ** 32, size=2, dtype=np.uint64)
    else:
        if seed is None:
            ss = np.random.SeedSequence()
        elif isinstance(seed, np.random.SeedSequence):
            ss = seed
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
            ss = np.random.SeedSequence(int(seed))
        else:
            raise ValueError(f"seed: must be a non-negative int, SeedSequence, Generator or None, got {seed!r}")
        words = ss.generate_state(2, np.uint32)
    return [int(words[0]), int(words[1])]


class PhiloxStream:
    """A run's per-path Philox streams: the key and the common draw position.

    Every path draws the same number of normals per step, so one counter gives
    every path's position. ``state()`` is JSON-able.
    """

    def __init__(self, key, counter=0):
        self.key = [int(key[0]), int(key[1])]
        self.counter = int(counter)

    @classmethod
    def from_seed(cls, seed):
        return cls(seed_key(seed))

    @classmethod
    def from_state(cls, state):
        if not isinstance(state, dict) or state.get("generator") != GENERATOR:
            raise ValueError(f"resume: state.rng is not a {GENERATOR} stream of the compiled backends: {state!r}")
        return cls(state["key"], state["counter"])

    def state(self):
        return {"generator": GENERATOR, "key": list(self.key), "counter": self.counter}

    def normals(self, n_paths, d, dtype):
        """The next d normals of each of n_paths paths, shape (n_paths, d); advances the counter."""
        out = np.empty((n_paths, d), dtype=np.float64)
        fill_normals(self.key[0], self.key[1], self.counter, out)
        self.counter += d
        return out.astype(dtype)


_FILL = None


def fill_normals(key0, key1, ctr, out):
    """out[i, j] = normal number ctr + j of path i (the per-path Philox stream)."""
    global _FILL
    if _FILL is None:
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


# ----------------------------------------------------------------------------- generation, caching

def cache_dir():
    """Where generated modules (and numba's cache of them) live."""
    path = os.environ.get("SDEKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sdekit", "kernels")
    os.makedirs(path, exist_ok=True)
    return path


CACHE_MAX_MB = 1024
"""Default bound on the disk cache (``$SDEKIT_CACHE_MAX_MB`` overrides it): past it, the kernels
used least recently are removed when a new one is written (:func:`prune_cache`)."""

KEEP_RECENT_S = 3600.0
"""A kernel used within this many seconds is never pruned (another process may be loading it)."""


def _cache_entries(folder):
    """``{module name: (last use, bytes, paths)}`` of the generated modules in ``folder``: the
    module file, its use stamp (``.used``, touched at every build; the module file itself is
    never touched, as numba's index keys on its stamp) and numba's cache files of it."""
    entries = {}
    pycache = os.path.join(folder, "__pycache__")
    numba_files = os.listdir(pycache) if os.path.isdir(pycache) else []
    for fname in os.listdir(folder):
        if not (fname.startswith("sdekit_kernel_") and fname.endswith(".py")):
            continue
        name = fname[:-3]
        paths = [os.path.join(folder, fname)]
        stamp = os.path.join(folder, name + ".used")
        if os.path.exists(stamp):
            paths.append(stamp)
        paths += [os.path.join(pycache, f) for f in numba_files if f.startswith(name + ".")]
        used = max(os.path.getmtime(p) for p in paths[:2])
        entries[name] = (used, sum(os.path.getsize(p) for p in paths), paths)
    return entries


def prune_cache(max_mb=None, folder=None, keep_recent_s=KEEP_RECENT_S):
    """Remove the least recently used kernels until the disk cache is at most ``max_mb`` MB.

    Parameters
    ----------
    max_mb : float, optional
        The bound (default ``$SDEKIT_CACHE_MAX_MB``, else :data:`CACHE_MAX_MB`).
    folder : str, optional
        The cache (default :func:`cache_dir`).
    keep_recent_s : float
        Kernels used more recently than this are kept whatever the size.

    Returns
    -------
    list of str
        The module names removed (their source and numba's compiled files).
    """
    folder = cache_dir() if folder is None else folder
    if max_mb is None:
        max_mb = float(os.environ.get("SDEKIT_CACHE_MAX_MB", CACHE_MAX_MB))
    if not (isinstance(max_mb, (int, float)) and max_mb >= 0):
        raise ValueError(f"max_mb: must be a number >= 0, got {max_mb!r}")
    entries = _cache_entries(folder)
    total = sum(size for _, size, _ in entries.values())
    now, removed = time.time(), []
    for name, (used, size, paths) in sorted(entries.items(), key=lambda kv: kv[1][0]):
        if total <= max_mb * 2 ** 20:
            break
        if now - used < keep_recent_s:
            continue
        for path in paths:
            with contextlib.suppress(FileNotFoundError):   # another process pruned it first
                os.remove(path)
        total -= size
        removed.append(name)
    return removed


def constraint_refusal(constraint, backend):
    """Why the compiled ``backend`` ("cpu" or "cuda") does not run ``constraint`` (a message
    naming ``constraint``), or None: cpu runs every constraint, cuda those whose per-path
    functions compile as device functions (``constraint.device_functions``: Sphere, Circle
    and their subclasses)."""
    if backend == "cpu" or constraint is None or getattr(constraint, "device_functions", False):
        return None
    return (f"constraint: {constraint!r} is not supported by the cuda backend (its SHAKE is a "
            f"Newton solve; cuda runs the closed forms, {', '.join(runtime.CUDA_CONSTRAINTS)}); use backend='cpu'")


def check_constraint(constraint, backend):
    """ValueError naming ``constraint`` unless ``backend`` runs it (:func:`constraint_refusal`)."""
    reason = constraint_refusal(constraint, backend)
    if reason is not None:
        raise ValueError(reason)


def supports_constraint(constraint, backend):
    """Whether the compiled ``backend`` runs ``constraint`` (see :func:`constraint_refusal`)."""
    return constraint_refusal(constraint, backend) is None


def system_fingerprint(system):
    """SHA-256 (hex) of a system's code and parameters, or None if it has no stable one.

    Hashed: the system's class, its repr, its ``gradient`` (bytecode, constants, the
    values it closes over and the globals it reads, as :func:`runtime.register_gradient`
    hashes it) and its public attributes (arrays by dtype, shape and bytes). Two
    :func:`~sdekit.systems.custom` potentials with the same repr but other code or
    constants differ. None when some part has no stable description (a torch module, an
    arbitrary object closed over): then only the repr identifies the system.
    """
    h = hashlib.sha256()
    cls = type(system)
    h.update(f"{cls.__module__}.{cls.__qualname__}|{system!r}".encode())
    seen = set()
    ok = runtime._feed(h, getattr(system, "gradient", None), seen)
    for key, value in sorted(vars(system).items()):
        if key.startswith("_") or key == "gradient":
            continue
        h.update(f"|{key}=".encode())
        if key == "parts":   # a split system: its parts' own fingerprints
            prints = [system_fingerprint(part) for part in value]
            ok = ok and None not in prints
            h.update(repr(prints).encode())
            continue
        if isinstance(value, dict):
            value = sorted(value.items(), key=lambda kv: repr(kv[0]))
        ok = runtime._feed(h, value, seen) and ok
    return h.hexdigest() if ok else None


def _names(scheme, system, dtype, backend, constraint=None, drift_change=None, shadow=False):
    scheme = scheme if isinstance(scheme, Scheme) else Scheme(scheme)
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"backend: must be 'cpu' or 'cuda' for a generated kernel, got {backend!r}")
    dtype = dtype_name("dtype", dtype, ("float64", "float32"))
    grad_name, stable = runtime.register_gradient(system.gradient)
    con = None
    if constraint is not None:
        validate(constraint, system, scheme, dtype)
        check_constraint(constraint, backend)
        con_name, con_stable = runtime.register_constraint(constraint)
        con = codegen.constraint_info(constraint, system.dim, scheme, con_name)
        stable = stable and con_stable
    stable = stable and codegen.letters_fingerprint(scheme)[1]   # a user letter's flow may have no stable one
    names = dict(energy_name=None, group_names=(), drift_name=None)
    if scheme.tests or shadow:
        if system.energy is None:
            need = f"{scheme.word}'s Metropolis test needs" if scheme.tests else "shadow work needs"
            raise ValueError(f"potential: {need} the system's potential as a "
                             f"compiled energy(q) for backend {backend!r}; {system!r} has none (pass "
                             f"custom(..., potential=...), or use backend='numpy')")
        names["energy_name"], ok = runtime.register_gradient(system.energy)
        stable = stable and ok
    check_force_groups(scheme, system)
    if scheme.force_groups:
        registered = [runtime.register_gradient(part.gradient) for part in system.parts]
        names["group_names"] = tuple(name for name, _ in registered)
        stable = stable and all(ok for _, ok in registered)
    if drift_change is not None:   # the paths carry Girsanov log-weights (sdekit.girsanov)
        names["drift_name"], ok = runtime.register_gradient(drift_change.gradient)
        stable = stable and ok
    return scheme, dtype, grad_name, stable, con, names


def _time_dependent(system, time_dependent):
    """A time-dependent system (gradient(q, t, out)) always needs the time-dependent kernel."""
    return bool(time_dependent or getattr(system, "time_dependent", False))


def source(scheme, system=None, backend="cpu", dtype="float64", constraint=None, time_dependent=False,
           drift_change=None, shadow=False):
    """The generated kernel module's Python source for ``scheme`` on ``system``.

    Parameters
    ----------
    scheme : Scheme or str
    system : sdekit.systems.System, optional
        Default ``Harmonic()`` (the source depends on it only through d and the
        gradient's registry name).
    backend : "cpu" or "cuda"
    dtype : "float64" or "float32"
    constraint : sdekit.constraints.Manifold, optional
        The kernel then projects (SHAKE, RATTLE) after its letters.
    time_dependent : bool
        The kernel of a time-dependent spec (callable gamma, kT or sigma_A): the letters
        read a per-step coefficient table (implied by a time-dependent system).
    drift_change : sdekit.systems.System, optional
        A change of drift: the paths carry Girsanov log-weights (:mod:`sdekit.girsanov`).
    shadow : bool
        The kernel of a run with ``shadow_work=True``: the paths carry their shadow work,
        heat and energy (:mod:`sdekit.shadow`).

    Examples
    --------
    >>> print(sdekit.kernels.source("BAOAB"))   # doctest: +SKIP
    """
    if system is None:
        system = Harmonic()
    scheme, dtype, grad_name, stable, con, names = _names(scheme, system, dtype, backend, constraint, drift_change,
                                                          shadow)
    return _generate(scheme, system, dtype, backend, grad_name, stable, con,
                     _time_dependent(system, time_dependent), names, shadow)


def _generate(scheme, system, dtype, backend, grad_name, stable, con, td, names, shadow):
    """The module text :func:`build` compiles and :func:`source` shows (from :func:`_names`' results)."""
    return codegen.generate(scheme, system.dim, dtype, backend, grad_name, repr(system),
                            cache=stable and backend == "cpu", constraint=con, time_dependent=td,
                            gradient_t=bool(getattr(system, "time_dependent", False)), shadow=bool(shadow), **names)


def build(scheme, system, dtype="float64", backend="cpu", constraint=None, time_dependent=False, drift_change=None,
          shadow=False):
    """The compiled kernel module for ``scheme`` on ``system`` (with ``constraint``, if given;
    the time-dependent form if ``time_dependent`` or the system is; carrying Girsanov log-weights
    for a ``drift_change`` and each path's shadow work and heat if ``shadow``, :mod:`sdekit.shadow`;
    cached per process and on disk)."""
    scheme, dtype, grad_name, stable, con, names = _names(scheme, system, dtype, backend, constraint, drift_change,
                                                          shadow)
    td = _time_dependent(system, time_dependent)
    key = (backend, scheme, system.dim, dtype, grad_name, system_fingerprint(system) or repr(system),
           runtime.fingerprint(),
           codegen.scalar_form(backend, system.dim, con is not None or td), None if con is None else con.name, td,
           codegen.letters_fingerprint(scheme)[0],   # the user letters' flows: a changed flow recompiles
           names["energy_name"], names["group_names"], names["drift_name"],
           bool(shadow) and runtime.register_function(_shadow.heat)[0])   # the bookkeeping's code, if carried
    with _LOCK:
        if key in _MODULES:
            return _MODULES[key]
        text = _generate(scheme, system, dtype, backend, grad_name, stable, con, td, names, shadow)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        name = f"sdekit_kernel_{digest}"
        folder = cache_dir() if stable else tempfile.mkdtemp(prefix="sdekit-kernel-")
        path = os.path.join(folder, name + ".py")
        if not os.path.exists(path):  # never rewrite: numba's cache index keys on the file's stamp
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
            if stable:   # a new kernel on disk: keep the cache within its bound
                prune_cache(folder=folder)
        if stable:
            with open(os.path.join(folder, name + ".used"), "a"):
                os.utime(os.path.join(folder, name + ".used"))   # the last use, for prune_cache
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        module.SCHEME, module.DIM, module.DTYPE_NAME = scheme, system.dim, dtype
        _MODULES[key] = module
        return module


def cache_stats(module):
    """``{function: (disk cache hits, misses)}`` of a built cpu kernel module."""
    out = {}
    for fname in ("trajectory", "ensemble", "step"):
        f = getattr(module, fname, None)
        if f is not None and hasattr(f, "stats"):
            out[fname] = (sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))
    return out
