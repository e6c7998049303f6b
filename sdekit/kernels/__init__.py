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
closed-over values have no stable fingerprint is compiled per process only.

Random numbers: each path has its own Philox4x32-10 stream keyed by the run's
64-bit seed key (:func:`seed_key`), counter = (draw index, path index), turned into
normals by the inverse normal CDF (Wichura's AS 241); see :mod:`sdekit.kernels.philox`. Path i gets the same normals whatever the number of
threads, the chunking or the device, and ``State.rng`` =
``{"generator": "philox4x32_10", "key": [k0, k1], "counter": n}`` (every path has
drawn n normals) resumes a run bit for bit.

Constraints (``constraint=``, :mod:`sdekit.constraints`): the kernel applies SHAKE and
RATTLE exactly as :func:`sdekit.reference.step` does (each A is ``geodesic_steps``
sub-steps of drift, SHAKE, RATTLE; RATTLE after each B and O; D counts d - m degrees
of freedom), calling the constraint's own per-path functions (``constraint.per_path``:
on "cpu" the numba-compiled functions the numpy backend runs, on "cuda" the same text as
device functions). Backend "cpu" runs every constraint; "cuda" the closed forms, Sphere
and Circle (:func:`check_constraint`). A failed SHAKE or RATTLE sets the path to NaN and
is recorded as minus the step in the drivers' ``bad`` array: a DivergenceError naming
SHAKE, the step and the path (or the path masked with ``on_divergence="mask"``).

Time dependence (:mod:`sdekit.schedules`; backend "cpu" only, cuda refuses it with a
ValueError naming backend): a spec with callable gamma, kT or sigma_A, or a system
with ``time_dependent`` (``gradient(q, t, out)``), gets a kernel whose letters read
their clock time, gamma, sigma and kT from the run's coefficient tables
(:func:`sdekit.schedules.coefficient_tables`, passed as one array ``tab``, a row per
step: 8 (n_steps + 1) x width bytes). A time-independent spec gets exactly the kernel it
had before (the same text), and constant callables give its bits.

User observables (``observables=``) are not supported by the compiled backends:
they raise a ValueError suggesting ``backend="numpy"`` (with ``backend=None`` the
drivers pick "numpy" when user observables are given). The built-in observables
(q, p, q2, p2, p_O, p2_O, xi) are streamed as across-path sums per record, so an
ensemble needs O(n_paths + n_records) memory, not O(n_paths x n_records).
"""
import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading

import numpy as np

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
        import warnings

        warnings.warn(f"numba.cuda.is_available() failed: {exc!r}; using the CPU backend")
        return False


def default_backend():
    """``"cuda"`` when numba-cuda sees a GPU, else ``"cpu"`` (numba)."""
    return "cuda" if cuda_available() else "cpu"


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
        from . import cpu

        out = np.empty((n_paths, d), dtype=np.float64)
        cpu.fill_normals(self.key[0], self.key[1], self.counter, out)
        self.counter += d
        return out.astype(dtype)


# ----------------------------------------------------------------------------- generation, caching

def cache_dir():
    """Where generated modules (and numba's cache of them) live."""
    path = os.environ.get("SDEKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sdekit", "kernels")
    os.makedirs(path, exist_ok=True)
    return path


def check_constraint(constraint, backend):
    """ValueError naming ``constraint`` unless ``backend`` ("cpu" or "cuda") runs it: cpu runs
    every constraint, cuda the closed forms (Sphere, Circle)."""
    if not supports_constraint(constraint, backend):
        raise ValueError(f"constraint: {constraint!r} is not supported by the cuda backend (its SHAKE is a "
                         f"Newton solve; cuda runs {', '.join(runtime.CUDA_CONSTRAINTS)}); use backend='cpu'")


def supports_constraint(constraint, backend):
    """Whether the compiled ``backend`` runs ``constraint`` (see :func:`check_constraint`)."""
    return backend == "cpu" or constraint is None or type(constraint).__name__ in runtime.CUDA_CONSTRAINTS


def _names(scheme, system, dtype, backend, constraint=None):
    from ..schemes import Scheme

    scheme = scheme if isinstance(scheme, Scheme) else Scheme(scheme)
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"backend: must be 'cpu' or 'cuda' for a generated kernel, got {backend!r}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype: must be 'float64' or 'float32', got {dtype!r}")
    grad_name, stable = runtime.register_gradient(system.gradient)
    con = None
    if constraint is not None:
        from ..constraints import validate

        validate(constraint, system, scheme, dtype)
        check_constraint(constraint, backend)
        con_name, con_stable = runtime.register_constraint(constraint)
        con = codegen.constraint_info(constraint, system.dim, scheme, con_name)
        stable = stable and con_stable
    return scheme, grad_name, stable, con


def _time_dependent(system, time_dependent):
    """A time-dependent system (gradient(q, t, out)) always needs the time-dependent kernel."""
    return bool(time_dependent or getattr(system, "time_dependent", False))


def source(scheme, system=None, backend="cpu", dtype="float64", constraint=None, time_dependent=False):
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

    Examples
    --------
    >>> print(sdekit.kernels.source("BAOAB"))   # doctest: +SKIP
    """
    if system is None:
        from ..systems import Harmonic

        system = Harmonic()
    scheme, grad_name, stable, con = _names(scheme, system, dtype, backend, constraint)
    return codegen.generate(scheme, system.dim, dtype, backend, grad_name, repr(system), cache=stable,
                            constraint=con, time_dependent=_time_dependent(system, time_dependent),
                            gradient_t=bool(getattr(system, "time_dependent", False)))


def build(scheme, system, dtype="float64", backend="cpu", constraint=None, time_dependent=False):
    """The compiled kernel module for ``scheme`` on ``system`` (with ``constraint``, if given;
    the time-dependent form if ``time_dependent`` or the system is; cached per process and
    on disk)."""
    scheme, grad_name, stable, con = _names(scheme, system, dtype, backend, constraint)
    td = _time_dependent(system, time_dependent)
    key = (backend, scheme, system.dim, dtype, grad_name, repr(system), runtime.fingerprint(),
           codegen.scalar_form(backend, system.dim, con is not None or td), None if con is None else con.name, td)
    with _LOCK:
        if key in _MODULES:
            return _MODULES[key]
        text = codegen.generate(scheme, system.dim, dtype, backend, grad_name, repr(system),
                                cache=stable and backend == "cpu", constraint=con, time_dependent=td,
                                gradient_t=bool(getattr(system, "time_dependent", False)))
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        name = f"sdekit_kernel_{digest}"
        folder = cache_dir() if stable else tempfile.mkdtemp(prefix="sdekit-kernel-")
        path = os.path.join(folder, name + ".py")
        if not os.path.exists(path):  # never rewrite: numba's cache index keys on the file's stamp
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
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


# ----------------------------------------------------------------------------- drivers

def _check_observables(observables, backend):
    # constraints and time dependence were checked by simulate._setup/_start, and again by build
    if observables:
        raise ValueError(f"observables: user observables {sorted(observables)} are not supported by the "
                         f"compiled backend {backend!r}; use backend='numpy' (the built-ins q, p, q2, p2, "
                         f"p_O, p2_O, xi are always recorded)")


def simulate(spec, state, n_steps, record_every, observables, progress):
    """One long trajectory with a compiled backend (called by :func:`sdekit.simulate`)."""
    _check_observables(observables, state.backend)
    if state.backend == "cuda":
        from . import cuda as backend_module
    else:
        from . import cpu as backend_module
    return backend_module.simulate(spec, state, n_steps, record_every, progress)


def ensemble(spec, state, n_steps, record_every, observables, on_divergence, progress):
    """Many paths with a compiled backend (called by :func:`sdekit.ensemble`)."""
    _check_observables(observables, state.backend)
    if state.backend == "cuda":
        from . import cuda as backend_module
    else:
        from . import cpu as backend_module
    return backend_module.ensemble(spec, state, n_steps, record_every, on_divergence, progress)
