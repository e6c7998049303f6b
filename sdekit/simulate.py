r"""The drivers: :func:`simulate` (one long path) and :func:`ensemble` (many paths).

Both validate every argument up front, set up the state, hand the stepping to a
backend (:mod:`sdekit.backends`: ``"numpy"`` runs :mod:`sdekit.reference`,
``"cpu"``/``"cuda"`` the compiled kernels of :mod:`sdekit.kernels`), and return a
result (:mod:`sdekit.records`: :class:`Trajectory`, :class:`Ensemble`) that records

* ``p`` — the on-step momentum (after the whole word): the one the Markov chain
  defines, and the one to continue from;
* ``p_O`` — the momentum right after the word's last O. For BAOAB on a harmonic
  oscillator :math:`\langle p^2\rangle = k_BT(1 - h^2\omega^2/4)` on-step, but
  :math:`k_BT` exactly after O: kinetic-temperature checks want ``p_O``.

Every run's ``.state`` holds what is needed to continue bit for bit
(``resume=state``).
"""
import dataclasses
import difflib
import functools
import inspect
import os
from dataclasses import dataclass

import numpy as np

from . import backends, constraints, girsanov, kernels, reference, schedules, shadow
from ._checks import (as_positive_vector, boolean, choice, dtype_name, finite_array, integer, real, shown,
                      state_array)
from .backends import TIME_DEPENDENT_BACKENDS, builtin_values, make_rng  # noqa: F401  (re-exported)
from .checkpoint import save
from .records import (BUILTIN_OBSERVABLES, STATE_VERSION, Ensemble, State, Trajectory,  # noqa: F401
                      progress_bar)
from .schemes import Scheme
from .system_base import potential_missing
from .systems import System, check_force_groups

DTYPES = {"float64": np.float64, "float32": np.float32}


@dataclass(frozen=True)
class Spec:
    """Everything that defines the Markov chain: scheme, system and parameters.

    ``gamma``, ``kT`` and ``sigma_A`` may be callables of t (see :mod:`sdekit.schedules`);
    step n starts at time ``t0 + n h``.
    """

    scheme: Scheme
    system: System
    h: float
    gamma: float
    kT: float
    eps: float
    sigma_A: float | None
    mass: np.ndarray
    dtype: type
    max_abs: float | None
    constraint: object = None  # sdekit.constraints.Manifold or None
    t0: float = 0.0
    drift_change: object = None  # a System whose force is u: the paths carry Girsanov log-weights (sdekit.girsanov)
    shadow: bool = False       # accumulate shadow work and heat per path (sdekit.shadow)

    @property
    def dim(self):
        return self.system.dim

    @functools.cached_property  # read at every step and letter
    def time_dependent(self):
        """True if gamma, kT or sigma_A is a callable of t, or the force depends on t."""
        return self.system.time_dependent or any(callable(v) for v in (self.gamma, self.kT, self.sigma_A))

    @functools.cached_property
    def sigma(self):
        """Noise amplitude of O: sigma_A if given, else sqrt(2 gamma kT) (constant parameters)."""
        if any(callable(v) for v in (self.gamma, self.kT, self.sigma_A)):
            raise ValueError("sigma: gamma, kT or sigma_A depends on t; see sdekit.schedules.coefficient_tables")
        return self.sigma_A if self.sigma_A is not None else float(np.sqrt(2.0 * self.gamma * self.kT))

    @functools.cached_property  # once per run, not at every letter of every step
    def inv_mass(self):
        return (1.0 / self.mass).astype(self.dtype)

    @functools.cached_property
    def sqrt_mass(self):
        return np.sqrt(self.mass).astype(self.dtype)

    def group_force(self, q, group):
        """F_g(q) of force group ``group`` of a :func:`~sdekit.systems.split` system, in the run's dtype."""
        return self.system.group_force(q, group).astype(self.dtype, copy=False)

    def force(self, q, t=None):
        """F(q), or F(q, t) for a time-dependent system, in the run's dtype."""
        grad = self.system.grad(q, t) if self.system.time_dependent else self.system.grad(q)
        return (-grad).astype(self.dtype, copy=False)

    @functools.cached_property
    def system_fingerprint(self):
        """SHA-256 of the system's code and parameters (:func:`sdekit.kernels.system_fingerprint`;
        None if it has no stable one)."""
        return kernels.system_fingerprint(self.system)

    def describe(self):
        """JSON-able parameters (for checkpoints and for refusing a mismatched resume).

        A callable parameter is described by name; ``t0`` appears only when non-zero
        (so states written before it existed still resume). The system is identified by
        its repr and its fingerprint (:attr:`system_fingerprint`: code and parameters, so
        two :func:`~sdekit.systems.custom` potentials with the same repr differ); a word with
        user letters adds ``letters``, the fingerprint of their metadata and code
        (:func:`sdekit.kernels.codegen.letters_fingerprint`), written only then."""
        d = schedules.describe
        out = {"scheme": self.scheme.to_json(), "system": repr(self.system),
               "system_fingerprint": self.system_fingerprint, "h": self.h,
               "gamma": d(self.gamma), "kT": d(self.kT), "eps": self.eps, "sigma_A": d(self.sigma_A),
               "mass": self.mass.tolist(), "dtype": np.dtype(self.dtype).name,
               "max_abs": self.max_abs,
               "constraint": None if self.constraint is None else repr(self.constraint)}
        if self.t0 != 0.0:
            out["t0"] = self.t0
        if self.drift_change is not None:   # written only then: older states still resume
            out["drift_change"] = [repr(self.drift_change), kernels.system_fingerprint(self.drift_change)]
        if self.shadow:   # written only then (older states still resume)
            out["shadow_work"] = True
        letters_key = kernels.codegen.letters_fingerprint(self.scheme)[0]
        if letters_key:   # user letters: their code, so a resume after re-registering a changed one is refused
            out["letters"] = letters_key
        return out


# ----------------------------------------------------------------------------- checks

def make_spec(scheme, system, h, gamma, kT, eps, sigma_A, mass, dtype, max_abs, constraint=None, t0=0.0,
              drift_change=None, shadow_work=False):
    if not isinstance(scheme, Scheme):
        scheme = Scheme(scheme)
    if not isinstance(system, System):
        raise ValueError(f"system: must be an sdekit.systems.System, got {system!r}")
    dtype = DTYPES[dtype_name("dtype", dtype, DTYPES)]
    if scheme.overdamped and mass is not None:
        raise ValueError(f"mass: overdamped scheme {scheme.word} takes no mass, got {shown(mass)}")
    spec = Spec(scheme=scheme, system=system,
                h=real("h", h, low=0.0, low_open=True),
                gamma=schedules.check("gamma", gamma),
                kT=schedules.check("kT", kT),
                eps=real("eps", eps, low=0.0),
                sigma_A=schedules.check("sigma_A", sigma_A, allow_none=True),
                mass=np.ones(system.dim) if mass is None else as_positive_vector("mass", mass, system.dim),
                dtype=dtype,
                max_abs=real("max_abs", max_abs, low=0.0, low_open=True, allow_none=True),
                constraint=_check_constraint(constraint, system, scheme, dtype),
                t0=real("t0", t0), drift_change=drift_change, shadow=boolean("shadow_work", shadow_work))
    if spec.time_dependent:
        schedules.check_spec(spec)
    _check_scheme_system(spec)
    if drift_change is not None:
        girsanov.check(spec)
    if spec.shadow:
        shadow.check(spec)
    return spec


def _check_scheme_system(spec):
    """What a word asks of the system: its parts for force groups (B0, B1, ...), its potential
    and constant parameters for a Metropolis test ({ } or MALA)."""
    scheme, system = spec.scheme, spec.system
    check_force_groups(scheme, system)
    if not scheme.tests:
        return
    missing = potential_missing(system)
    if missing is not None:
        raise ValueError(f"potential: {scheme.word}'s Metropolis test needs the system's potential U(q), and "
                         f"{system!r} has none ({missing}); pass custom(..., potential=...)")
    if spec.time_dependent:
        raise ValueError(f"kT: {scheme.word}'s Metropolis test is exact for a constant kT, gamma and force; "
                         f"the spec depends on t")
    if spec.constraint is not None:
        raise ValueError(f"constraint: {scheme.word}'s Metropolis test does not run on constrained systems, "
                         f"got constraint={spec.constraint!r}")
    if spec.sigma_A is not None:
        raise ValueError(f"sigma_A: {scheme.word}'s Metropolis test targets exp(-H/kT); a driving noise "
                         f"sigma_A changes the temperature of O, got sigma_A={spec.sigma_A!r}")


def _check_constraint(constraint, system, scheme, dtype):
    if constraint is None:
        return None
    return constraints.validate(constraint, system, scheme, dtype)


def initial_state(spec, q0, p0, xi0, n_paths, rng, backend):
    d, dt = spec.dim, spec.dtype
    # a single trajectory (n_paths None) takes shape (d,) only; it runs as a batch of one
    batch = lambda name, x: state_array(name, np.zeros(d) if x is None else x, d, n_paths).reshape(-1, d).astype(dt)
    q = batch("q0", q0)
    if spec.scheme.overdamped:
        if p0 is not None:
            raise ValueError(f"p0: overdamped scheme {spec.scheme.word} has no momentum, got {shown(p0)}")
        p = None
    else:
        p = batch("p0", p0)
    n_paths = q.shape[0]
    xi = finite_array("xi0", xi0)
    if xi.ndim == 0:
        xi = np.full(n_paths, float(xi))
    if xi.shape != (n_paths,):
        raise ValueError(f"xi0: must be a scalar or have shape ({n_paths},), got shape {xi.shape}")
    lm = spec.scheme.overdamped == "LM"
    if isinstance(rng, np.random.Generator):
        noise = rng.standard_normal(q.shape, dtype=dt) if lm else None
        rng_state = rng.bit_generator.state
    else:  # compiled backends: sdekit.kernels.PhiloxStream, per-path streams
        noise = rng.normals(q.shape[0], d, dt) if lm else None
        rng_state = rng.state()
    return State(q=q, p=p, xi=xi.astype(dt), force=reference.initial_force(spec, q), noise=noise,
                 step=0, rng=rng_state, spec=spec.describe(), backend=backend,
                 log_weight=None if spec.drift_change is None else np.zeros(n_paths))


def check_resume(state, spec, backend):
    if not isinstance(state, State):
        raise ValueError(f"resume: must be a State (a run's .state), got {type(state).__name__}")
    if state.version != STATE_VERSION:
        raise ValueError(f"resume: state format version {state.version}, this sdekit reads {STATE_VERSION}")
    want = spec.describe()
    if "system_fingerprint" not in state.spec:  # written before fingerprints: the repr identifies the system
        del want["system_fingerprint"]
    diff = [k for k in {**want, **state.spec} if state.spec.get(k) != want.get(k)]  # t0 is written only if != 0
    if diff:
        pairs = ", ".join(f"{k}: state has {state.spec.get(k)!r}, call has {want.get(k)!r}" for k in diff)
        raise ValueError(f"resume: the state was made with other settings ({pairs})")
    if state.backend != backend:
        raise ValueError(f"resume: the state was made by backend {state.backend!r}, not {backend!r}")


def _check_state_arrays(state, spec, n):
    """A resumed state's arrays must have the shapes the run expects (the compiled kernels
    index them without bounds checks): q, force (n, d), p (n, d) unless overdamped, xi (n,),
    noise (n, d) for LM; floating point; ``step`` an integer >= 0. Non-finite values are
    allowed (paths masked under ``on_divergence="mask"``): the run reports them."""
    q = state.q
    if not isinstance(q, np.ndarray) or q.ndim != 2:
        raise ValueError(f"resume: state.q must be an array of shape (n_paths, {spec.dim}), got {q!r:.80}")
    if q.shape[0] != n:
        raise ValueError(f"resume: the state has {q.shape[0]} paths, the call asks for {n}")
    d = spec.dim
    want = {"q": (n, d), "force": (n, d * max(1, len(spec.scheme.force_groups))), "xi": (n,),
            "p": None if spec.scheme.overdamped else (n, d),
            "noise": (n, d) if spec.scheme.overdamped == "LM" else None}
    for name, shape in want.items():
        a = getattr(state, name)
        if shape is None:
            continue
        if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype.kind != "f":
            got = f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else repr(a)
            raise ValueError(f"resume: state.{name} must be a float array of shape {shape}, got {got}")
    for name, what in (("accepted", "the paths' Metropolis counts"), ("log_weight", "the paths' log-weights"),
                       ("work", "the paths' shadow work"), ("heat", "the paths' heat")):
        a = getattr(state, name)
        if a is not None and (not isinstance(a, np.ndarray) or a.shape != (n,)):
            raise ValueError(f"resume: state.{name} must be an array of shape ({n},) ({what}), got {a!r:.80}")
    step = state.step
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"resume: state.step must be an integer >= 0, got {shown(step)}")


def default_backend():
    """The fastest backend available (the first of :data:`sdekit.backends.PREFERENCE` that is):
    "cuda" with a GPU, else "cpu" (numba)."""
    return backends.default().name


def _default_backend(spec, resume, observables):
    """The backend when none is given: the one a resumed state was made by, else the first
    available backend that runs the spec (:func:`sdekit.backends.default`)."""
    if resume is not None and not spec.system.numpy_only:
        return resume.backend  # continue where the state was made
    return backends.default(spec, observables).name


def available_memory():
    """Bytes of memory available to a new allocation: MemAvailable of /proc/meminfo, else
    free pages (``os.sysconf``); None if neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def state_bytes(spec, n_paths):
    """A lower bound on the memory of an ensemble of ``n_paths``: its state (q, p, force,
    LM noise (n_paths, d), xi (n_paths,)) and the backend's working copy of it."""
    arrays = 2 + (spec.scheme.overdamped is None) + (spec.scheme.overdamped == "LM")
    return 2 * n_paths * (arrays * spec.dim + 1) * np.dtype(spec.dtype).itemsize


def _check_memory(spec, n_paths):
    need, have = state_bytes(spec, n_paths), available_memory()
    if have is not None and need > have:
        raise ValueError(f"n_paths: {n_paths} paths of dimension {spec.dim} in {np.dtype(spec.dtype).name} "
                         f"need at least {need} bytes ({need / 2 ** 30:.3g} GiB), but {have} bytes "
                         f"({have / 2 ** 30:.3g} GiB) of memory are available; run fewer paths "
                         f"(several ensembles with different seeds), got n_paths={n_paths}")


def _drop_first_record(result, resume, record_every):
    """A resumed run without its record 0 when that is the previous run's last record.

    Record 0 of a resumed run is the state it resumes from. On the record grid (the resume step
    a multiple of ``record_every``) the previous run recorded it as its last record, so it is
    dropped and the two runs' records concatenate to those of one long run. Off the grid the
    previous run did not record that state, and record 0 is kept (no state is lost; the record
    times say where each record is)."""
    if resume.step % record_every:
        return result
    first = lambda a: None if a is None else a[1:]
    if isinstance(result, Trajectory):
        return dataclasses.replace(result, t=result.t[1:], q=result.q[1:], p=first(result.p), p_O=first(result.p_O),
                                   xi=result.xi[1:], observables={k: v[1:] for k, v in result.observables.items()},
                                   accepted=first(result.accepted), proposed=first(result.proposed),
                                   log_weight=first(result.log_weight), work=first(result.work),
                                   heat=first(result.heat))
    return dataclasses.replace(result, t=result.t[1:], n_alive=result.n_alive[1:],
                               mean={k: v[1:] for k, v in result.mean.items()},
                               meansq={k: v[1:] for k, v in result.meansq.items()}, proposed=first(result.proposed))


def ensemble_backend(scheme, system, h, **kwargs):
    """The name of the backend :func:`ensemble` takes for these arguments when none is given
    (:func:`sdekit.backends.default` of their spec; a resumed state's backend). For callers
    that fix the backend before the run happens elsewhere (:func:`sdekit.sweep.sweep`)."""
    bound = inspect.signature(_ensemble).bind(scheme, system, h, 0, 1, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    if a["backend"] is not None:
        return backends.get(a["backend"]).name
    spec = make_spec(scheme, system, h, a["gamma"], a["kT"], a["eps"], a["sigma_A"], a["mass"], a["dtype"],
                     a["max_abs"], a["constraint"], a["t0"], a["drift_change"])
    return _default_backend(spec, a["resume"], _check_observables(a["observables"]))


def _default_max_abs(max_abs, system, resume, on_divergence):
    """``max_abs`` if given; else a resumed state's bound (a run continues as it was made);
    else, under ``on_divergence="mask"``, the system's ``escape_bound``, so that paths on
    their way out are not averaged in (None: no bound but the overflow one)."""
    if max_abs is not None:
        return max_abs
    if isinstance(resume, State) and isinstance(resume.spec, dict) and "max_abs" in resume.spec:
        return resume.spec["max_abs"]
    return getattr(system, "escape_bound", None) if on_divergence == "mask" else None


def _check_observables(observables):
    observables = dict(observables or {})
    for name, f in observables.items():
        if not callable(f):
            raise ValueError(f"observables: {name!r} must be callable f(q, p), got {f!r}")
        if name in BUILTIN_OBSERVABLES:
            raise ValueError(f"observables: {name!r} is a built-in name; choose another")
    return observables


def _setup(scheme, system, h, n_steps, gamma, kT, mass, eps, sigma_A, dtype, max_abs,
           record_every, backend, observables, constraint=None, resume=None, t0=0.0, drift_change=None,
           shadow_work=False):
    spec = make_spec(scheme, system, h, gamma, kT, eps, sigma_A, mass, dtype, max_abs, constraint, t0, drift_change,
                     shadow_work)
    n_steps = integer("n_steps", n_steps, low=0)
    record_every = integer("record_every", record_every, low=1)
    observables = _check_observables(observables)
    if backend is None:
        backend = _default_backend(spec, resume, observables)
    backend = backends.check(backend, spec, observables)  # ValueError naming why it does not run spec
    return spec, n_steps, record_every, backend, observables


def _start(spec, q0, p0, xi0, n_paths, seed, resume, backend):
    """The state to start from and the random stream of ``backend`` (a sdekit.backends.Backend)."""
    if resume is not None:
        check_resume(resume, spec, backend.name)
        _check_state_arrays(resume, spec, n_paths or 1)
        state = resume.copy()
        if "system_fingerprint" not in state.spec:  # an older state, checked by repr: record it from now on
            state.spec = spec.describe()
        return state, backend.rng(state)
    stream = backend.stream(seed)
    state = initial_state(spec, q0, p0, xi0, n_paths, stream, backend.name)
    if spec.constraint is not None:  # q0 on the manifold, p0 projected
        constraints.check_start(spec, state)
    return state, stream


# ----------------------------------------------------------------------------- drivers

def _simulate(scheme, system, h, n_steps, *, gamma=1.0, kT=1.0, mass=None, eps=1.0, sigma_A=None,
             q0=None, p0=None, xi0=0.0, seed=None, record_every=1, observables=None,
             backend=None, dtype="float64", max_abs=None, progress=None, resume=None, constraint=None,
             t0=0.0, drift_change=None, shadow_work=False):
    r"""Run one long trajectory of ``scheme`` on ``system`` and record it.

    Parameters
    ----------
    scheme : Scheme or str
        The splitting (``"BAOAB"``, ``"BADODAB"``, ``"EM"``, ...).
    system : sdekit.systems.System
    h : float
        Step size (> 0).
    n_steps : int
        Number of steps (>= 0).
    gamma, kT : float or callable f(t) -> float
        Friction (>= 0) and temperature (>= 0). O uses noise :math:`\sqrt{2\gamma k_BT}`.
        Callables of the time t are evaluated at each letter's clock time (the clock
        rides with A: :attr:`Scheme.substep_times`, :mod:`sdekit.schedules`): O over a
        sub-step at time t uses gamma(t), kT(t); D uses kT(t); EM/LM use kT(t_n).
    mass : float or array (d,), optional
        Diagonal mass (default 1).
    eps, sigma_A : float (sigma_A may be a callable of t)
        Thermostat coupling of D and, if given, the O noise amplitude instead of
        :math:`\sqrt{2\gamma k_BT}` (adaptive Langevin).
    q0, p0, xi0 :
        Initial state (default: q = 0, p = 0, xi = 0).
    seed : int, SeedSequence, Generator or None
        Same seed, same numbers.
    record_every : int
        Record every k-th step (the initial state is record 0).
    observables : dict name -> f(q, p), optional
        Extra functions to record. They receive batched arrays of shape (1, d)
        and return shape (1,) or (1, k).
    backend : "numpy", "cpu" or "cuda" (:data:`sdekit.backends.REGISTRY`)
        Default: the resumed state's backend, else the first of
        :data:`sdekit.backends.PREFERENCE` that is available and runs the spec.
    dtype : "float64" or "float32"
        A name, a numpy type (``np.float32``) or a ``np.dtype``.
    max_abs : float, optional
        Treat |q_i| > max_abs as a divergence. Default: no bound but the overflow one
        (:func:`sdekit._checks.overflow_bound`); in :func:`ensemble` with
        ``on_divergence="mask"``, the system's ``escape_bound`` (5 for the double well;
        None for systems without one), so that paths on their way out are not averaged in;
        with ``resume``, the state's bound (a run continues as it was made).
    progress : bool or None
        tqdm progress bar (``tqdm.auto``: a widget in Jupyter). None: shown for long runs
        when stderr is a terminal or in a Jupyter kernel (:func:`sdekit.records.interactive`).
    resume : State, optional
        Continue from a previous run's ``.state`` (same settings required; ``max_abs``,
        if not given, is the state's). The resumed
        run's records start one record after the state when the state's step is a
        multiple of ``record_every`` (its record 0 would repeat the previous run's last),
        so the two runs' records concatenate to those of one long run
        (``np.concatenate([a.q, b.q])``; for an ensemble t, mean, meansq, n_alive). Off
        that grid the previous run never recorded the state, and record 0 is kept.
    checkpoint : path, optional
        Write the state there (:func:`sdekit.save`: atomic, checked .npz) every
        ``checkpoint_every`` steps and at the end; on Ctrl-C (KeyboardInterrupt)
        the last completed chunk's state is written before the interrupt goes on.
        Continue with ``resume=sdekit.load(path)``. The numbers are the same as
        without checkpoints.
    checkpoint_every : int, optional
        Steps between checkpoints (a multiple of ``record_every``; default: only
        at the start and the end).
    constraint : sdekit.constraints.Sphere, Stiefel, Circle or Constraint, optional
        Keep g(q) = 0: SHAKE and RATTLE after each A, RATTLE after each B and O,
        ``scheme.geodesic_steps`` sub-steps per A (g-BAOAB). q0 must be on the
        manifold (|g(q0)| <= 1e-8 relative, else ValueError naming q0; use
        ``constraint.project(q0)``); p0 is projected onto the cotangent space.
        Backends numpy and cpu (every constraint), cuda (constraints with
        ``device_functions``: Sphere, Circle and their subclasses); the default is the
        first backend that runs it (:func:`sdekit.backends.default`).

    t0 : float
        Time at step 0 (default 0): step n starts at t0 + n h, also after a resume
        (the state counts the steps). Matters for time-dependent parameters or a
        time-dependent system (``system.time_dependent``, force F(q, t)), which run on
        the backends in ``TIME_DEPENDENT_BACKENDS`` (the default then picks one).
    drift_change : sdekit.systems.System, optional
        A change of drift u(q) (the system's force, e.g.
        ``sdekit.girsanov.difference(target, system)``): each path then carries the exact
        Girsanov log-weight of its path under the chain with force F + u (its O letters with
        the extra force held fixed over the letter), accumulated from the normals its O
        letters (or EM) draw: ``.log_weight`` (:mod:`sdekit.girsanov`; averages under the
        target with :func:`sdekit.girsanov.reweight`). Words with O or EM, constant
        parameters, no D, no constraint; backends numpy, cpu and cuda.
    shadow_work : bool
        Accumulate each path's shadow work W and heat Q since step 0 (:mod:`sdekit.shadow`:
        Q the O letters' kinetic-energy changes, :math:`W = H(x_n) - H(x_0) - Q`; Sivak, Chodera
        & Crooks, PRX 2013): ``Trajectory.work``, ``.heat``, ``Ensemble.mean["work"]``,
        ``["heat"]``, ``State.work``, ``.heat``. A ValueError names a letter without a
        bookkeeping (D, EM, LM, MALA, a user's letter), a constraint or a time-dependent spec.
        Backends numpy, cpu and cuda.

    Returns
    -------
    Trajectory

    Raises
    ------
    ValueError for a bad argument, naming it; DivergenceError naming the step if
    the path becomes non-finite.
    """
    spec, n_steps, record_every, backend, observables = _setup(
        scheme, system, h, n_steps, gamma, kT, mass, eps, sigma_A, dtype,
        _default_max_abs(max_abs, system, resume, "raise"), record_every, backend, observables, constraint, resume, t0,
        drift_change, shadow_work)
    state, rng = _start(spec, q0, p0, xi0, None, seed, resume, backend)
    out = backend.simulate(spec, state, rng, n_steps, record_every, observables, progress)
    return out if resume is None else _drop_first_record(out, resume, record_every)


def _ensemble(scheme, system, h, n_steps, n_paths, *, gamma=1.0, kT=1.0, mass=None, eps=1.0,
             sigma_A=None, q0=None, p0=None, xi0=0.0, seed=None, record_every=None,
             observables=None, backend=None, dtype="float64", max_abs=None,
             on_divergence="raise", progress=None, resume=None, constraint=None, t0=0.0, drift_change=None,
             shadow_work=False):
    r"""Run ``n_paths`` independent paths; return final states and averages across paths.

    Arguments as in :func:`simulate`, plus

    n_paths : int
        Number of independent paths (>= 1).
    record_every : int, optional
        Stream the across-path mean and mean square of each observable every k
        steps (default: only at the start and the end).
    observables : dict name -> f(q, p), optional
        Functions of batched states (n_paths, d) returning (n_paths,) or
        (n_paths, k); built-ins q, p, q2, p2, p_O, p2_O, xi are always streamed.
    on_divergence : "raise" or "mask"
        "raise" stops at the first non-finite path with a DivergenceError naming
        the step and the path; "mask" drops such paths from the averages and
        reports them in ``.diverged`` (never averaging over survivors silently).
        Under "mask" ``max_abs`` defaults to ``system.escape_bound``: a path beyond it
        has left the region where the steps are stable and is dropped there, before it
        overflows (OBABO on the double well at h = 0.35 otherwise averaged paths at
        |q| ~ 1e22 in, giving <q^2> ~ 1e44). Pass ``max_abs`` to choose another bound.
        With a constraint, a path whose SHAKE fails counts as diverged (a
        DivergenceError naming the step and the path under "raise").
    drift_change : sdekit.systems.System, optional
        As in :func:`simulate`: the paths' log-weights are ``.log_weight`` (n_paths,), and
        ``mean["log_weight"]``, ``meansq["log_weight"]`` are streamed at every record.

    Returns
    -------
    Ensemble
    """
    n_steps = integer("n_steps", n_steps, low=0)
    choice("on_divergence", on_divergence, ("raise", "mask"))
    max_abs = _default_max_abs(max_abs, system, resume, on_divergence)
    spec, n_steps, record_every, backend, observables = _setup(
        scheme, system, h, n_steps, gamma, kT, mass, eps, sigma_A, dtype, max_abs,
        max(n_steps, 1) if record_every is None else record_every, backend, observables, constraint, resume, t0,
        drift_change, shadow_work)
    n_paths = integer("n_paths", n_paths, low=1)
    if resume is None:
        _check_memory(spec, n_paths)  # before allocating: a MemoryError, or the process killed, otherwise
    state, rng = _start(spec, q0, p0, xi0, n_paths, seed, resume, backend)
    out = backend.ensemble(spec, state, rng, n_steps, record_every, observables, on_divergence, progress)
    return out if resume is None else _drop_first_record(out, resume, record_every)


# ----------------------------------------------------------------------------- checkpoints

def _concat(rows):
    """Records of consecutive chunks (a resumed chunk has no record 0: it would repeat the
    previous chunk's last)."""
    return np.concatenate(rows)


def _merge_trajectories(pieces):
    last = pieces[-1]
    opt = lambda name: None if getattr(last, name) is None else _concat([getattr(x, name) for x in pieces])
    return dataclasses.replace(last, t=_concat([x.t for x in pieces]), q=_concat([x.q for x in pieces]),
                               p=opt("p"), p_O=opt("p_O"), xi=_concat([x.xi for x in pieces]),
                               accepted=opt("accepted"), proposed=opt("proposed"), log_weight=opt("log_weight"),
                               work=opt("work"), heat=opt("heat"),
                               observables={k: _concat([x.observables[k] for x in pieces]) for k in last.observables})


def _merge_ensembles(pieces):
    last = pieces[-1]
    merged = lambda d: {k: _concat([getattr(x, d)[k] for x in pieces]) for k in getattr(last, d)}
    return dataclasses.replace(last, t=_concat([x.t for x in pieces]), mean=merged("mean"),
                               meansq=merged("meansq"), n_alive=_concat([x.n_alive for x in pieces]),
                               proposed=None if last.proposed is None else _concat([x.proposed for x in pieces]),
                               diverged=np.unique(np.concatenate([x.diverged for x in pieces])))


def _checkpointed(run, merge):
    """``run`` with ``checkpoint=path`` and ``checkpoint_every=k``: the steps are taken in
    chunks of k, each resumed from the last (bit for bit the same numbers), the state saved
    after each chunk, and saved again on KeyboardInterrupt before it propagates."""
    signature = inspect.signature(run)
    public = run.__name__.lstrip("_")
    keywords = sorted(set(signature.parameters) | {"checkpoint", "checkpoint_every"})

    def check_call(args, kwargs):
        """A TypeError naming the public function (not the private ``run``)."""
        for k in kwargs:
            if k not in signature.parameters:
                close = difflib.get_close_matches(k, keywords, n=3)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise TypeError(f"{public}() got an unexpected keyword argument {k!r}{hint}")
        try:
            signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{public}(): {e}") from None

    @functools.wraps(run)
    def driver(*args, checkpoint=None, checkpoint_every=None, **kwargs):
        check_call(args, kwargs)
        if checkpoint is None:
            if checkpoint_every is not None:
                raise ValueError(f"checkpoint_every: needs checkpoint=path, got checkpoint_every="
                                 f"{shown(checkpoint_every)}")
            return run(*args, **kwargs)
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise ValueError(f"checkpoint: must be a file path, got {checkpoint!r}")
        if os.path.isdir(checkpoint) or not os.path.isdir(os.path.dirname(os.path.abspath(checkpoint))):
            raise ValueError(f"checkpoint: must be a file in an existing folder, got {os.fspath(checkpoint)!r}")
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        n_steps = integer("n_steps", a["n_steps"], low=0)
        every = integer("checkpoint_every", n_steps or 1 if checkpoint_every is None else checkpoint_every, low=1)
        if a.get("record_every") is None:
            a["record_every"] = every  # ensembles: stream the moments at each checkpoint
        if every % integer("record_every", a["record_every"], low=1):
            raise ValueError(f"checkpoint_every: must be a multiple of record_every={a['record_every']}, got {every}")
        pieces = [run(**{**a, "n_steps": 0})] if a["resume"] is None else []
        state = pieces[0].state if pieces else a["resume"]
        save(checkpoint, state)
        done = 0
        while done < n_steps or not pieces:
            k = min(every, n_steps - done)
            try:
                piece = run(**{**a, "n_steps": k, "resume": state})
            except KeyboardInterrupt:
                save(checkpoint, state)  # the last completed chunk: nothing before it is lost
                raise
            pieces.append(piece)
            state, done = piece.state, done + k
            save(checkpoint, state)
        return merge(pieces)

    driver.__name__ = driver.__qualname__ = public
    return driver


simulate = _checkpointed(_simulate, _merge_trajectories)
ensemble = _checkpointed(_ensemble, _merge_ensembles)
