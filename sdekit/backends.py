"""The backends as objects, in one registry with a preference order.

A backend has a ``name`` (what ``backend=`` takes and ``State.backend`` records),
``available()`` (can it run on this machine), ``refuses(spec, observables)`` (the
reason, a message naming the argument, why it does not run this spec; None if it
does), its random stream (``stream(seed)``, ``rng(state)``) and ``simulate`` /
``ensemble``. What each one runs is stated as capabilities, in one place:

=========  ==========  ==============  ================  ===========  =====================
backend    available   time-dependent  user observables  constraints  system
=========  ==========  ==============  ================  ===========  =====================
numpy      always      yes             yes               all          any
cpu        always      yes             no                all          a numba ``gradient``
cuda       with a GPU  no              no                device ones  a numba ``gradient``
=========  ==========  ==============  ================  ===========  =====================

("device ones": ``constraint.device_functions``, i.e. Sphere, Circle and their
subclasses.) The default backend (:func:`default`) is the first of :data:`PREFERENCE`
that is available and does not refuse the spec: cuda, else cpu, else numpy.

Random numbers: numpy draws from one PCG64 ``numpy.random.Generator`` per run;
cpu and cuda from per-path Philox streams (:class:`sdekit.kernels.PhiloxStream`), whose
position lives in ``State.rng``.
"""
import numpy as np

from . import kernels, reference
from ._checks import choice, integer
from .kernels import PhiloxStream
from .kernels import cpu as _cpu
from .kernels import cuda as _cuda
from .records import ensemble as _ensemble_record, final_state, progress_bar, trajectory

PREFERENCE = ["cuda", "cpu", "numpy"]
"""Names in the order :func:`default` tries them (fastest first; numpy runs everything)."""


class Backend:
    """Base class: a compiled backend's capabilities, overridden where a backend differs.

    Attributes
    ----------
    name : str
    needs_gradient : bool
        Runs only systems with a numba-compilable ``gradient`` (refuses ``numpy_only`` ones).
    runs_time_dependent : bool
        Runs callable gamma, kT, sigma_A and time-dependent systems.
    runs_observables : bool
        Runs the user's ``observables`` (Python callables).
    runs_shadow_work : bool
        Accumulates the paths' shadow work and heat (``shadow_work=True``, :mod:`sdekit.shadow`).
    hook : str
        The hook of :class:`sdekit.letters.Letter` it runs letters through
        (``"numpy"`` or ``"source"``): a word with a letter that lacks it is refused.
    """

    name = None
    hook = "source"
    needs_gradient = True
    runs_time_dependent = True
    runs_observables = False
    runs_shadow_work = False

    def __repr__(self):
        return f"<sdekit backend {self.name!r}>"

    def available(self):
        """True if this machine can run the backend."""
        return True

    def unavailable(self):
        """The error message when :meth:`available` is False."""
        return f"backend: {self.name!r} is not available on this machine, got backend={self.name!r}"

    def runs_constraint(self, constraint):
        """True if the backend runs ``constraint``."""
        return True

    def refuses(self, spec, observables=None):
        """Why the backend does not run ``spec`` (with the user's ``observables``): a message
        naming the argument, or None if it runs it."""
        for letter in spec.scheme.alphabet:
            if not letter.supports(self.hook):
                return (f"backend: letter {letter.name!r} ({letter.title}) defines no {self.hook}() hook, "
                        f"so backend {self.name!r} cannot run it, got backend={self.name!r}")
        if self.needs_gradient and spec.system.numpy_only:
            return (f"backend: {spec.system!r} runs on the numpy backend only (no numba-compilable "
                    f"gradient), got backend={self.name!r}")
        if self.needs_gradient and spec.drift_change is not None and spec.drift_change.numpy_only:
            return (f"drift_change: {spec.drift_change!r} runs on the numpy backend only (no numba-compilable "
                    f"gradient), got backend={self.name!r}")
        if spec.constraint is not None:
            loose = [letter.name for letter in spec.scheme.alphabet if not letter.constrained]
            if loose:
                return (f"constraint: letter(s) {loose} of {spec.scheme.word} have no constrained form "
                        f"(Letter.constrained is False), got constraint={spec.constraint!r}")
        if spec.constraint is not None and not self.runs_constraint(spec.constraint):
            return kernels.constraint_refusal(spec.constraint, self.name)
        if spec.time_dependent and not self.runs_time_dependent:
            return (f"backend: time-dependent gamma, kT, sigma_A or force run on the backends "
                    f"{list(TIME_DEPENDENT_BACKENDS)} so far, got backend={self.name!r}")
        if spec.shadow and not self.runs_shadow_work:
            return (f"shadow_work: backend {self.name!r} does not accumulate the paths' shadow work and heat "
                    f"(numpy, cpu and cuda do), got backend={self.name!r}")
        if observables and not self.runs_observables:
            return (f"observables: user observables {sorted(observables)} are not supported by the "
                    f"compiled backend {self.name!r}; use backend='numpy' (the built-ins q, p, q2, p2, "
                    f"p_O, p2_O, xi are always recorded)")
        return None

    def stream(self, seed):
        """A fresh random stream from ``seed``: per-path Philox streams."""
        return PhiloxStream.from_seed(seed)

    def rng(self, state):
        """The random stream to continue ``state`` with: None, as the compiled kernels read
        the Philox position from ``state.rng`` themselves."""
        return None


class NumpyBackend(Backend):
    """The numpy reference (:mod:`sdekit.reference`): runs every spec, one letter at a time."""

    name = "numpy"
    hook = "numpy"
    needs_gradient = False
    runs_observables = True
    runs_shadow_work = True

    def stream(self, seed):
        return make_rng(seed)

    def rng(self, state):
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng
        return rng

    def simulate(self, spec, state, rng, n_steps, record_every, observables, progress):
        """One path: record 0 is the start, then every ``record_every`` steps."""
        w = reference.walker(spec, state)
        rows = []

        def record(w, alive):
            p_O = w.p_O[0].copy() if w.p_O is not None else np.full(spec.dim, np.nan)
            rows.append((w.q[0].copy(), None if w.p is None else w.p[0].copy(), p_O, float(w.xi[0]),
                         {k: v[0] for k, v in _observe(observables, w).items()}, float(w.accepted[0]),
                         float(w.log_weight[0]), (float(w.work[0]), float(w.heat[0])) if spec.shadow else None))

        record(w, None)
        with progress_bar(progress, n_steps, n_steps * spec.dim, spec.scheme.word) as bar:
            reference.run(spec, w, rng, n_steps, state.step, record, record_every, "raise", bar)
        q, p, p_O, xi, obs, accepted, log_weight, shadow = zip(*rows)
        final = final_state(state, n_steps, rng.bit_generator.state, w.q, w.p, w.xi, w.F, w.R,
                            w.accepted if spec.scheme.tests else None, w.log_weight, **reference.shadow_arrays(spec, w))
        return trajectory(spec, state, record_every, np.stack(q), None if p[0] is None else np.stack(p),
                          np.stack(p_O) if "p_O" in spec.scheme.records else None, np.array(xi),
                          {k: np.stack([o[k] for o in obs]) for k in obs[0]}, final, np.array(accepted),
                          np.array(log_weight), np.array(shadow).T if spec.shadow else None)

    def ensemble(self, spec, state, rng, n_steps, record_every, observables, on_divergence, progress):
        """All paths as arrays; the across-path moments of the survivors at every record."""
        w = reference.walker(spec, state)
        sums = []

        def record(w, alive):
            values = builtin_values(spec, w)
            values.update(_observe(observables, w))
            n = int(alive.sum())
            if n == 0:  # no survivors: NaN rows (and records.ensemble raises), without numpy's empty-mean warning
                sums.append((0, {k: (np.full(v.shape[1:], np.nan),) * 2 for k, v in values.items()}))
                return
            sums.append((n, {k: (v[alive].mean(axis=0), (v[alive] ** 2).mean(axis=0)) for k, v in values.items()}))

        record(w, np.ones(w.q.shape[0], dtype=bool))
        with progress_bar(progress, n_steps, n_steps * w.q.shape[0] * spec.dim, spec.scheme.word) as bar:
            diverged = reference.run(spec, w, rng, n_steps, state.step, record, record_every, on_divergence, bar)
        final = final_state(state, n_steps, rng.bit_generator.state, w.q, w.p, w.xi, w.F, w.R,
                            w.accepted if spec.scheme.tests else None, w.log_weight, **reference.shadow_arrays(spec, w))
        names = sums[0][1].keys()
        return _ensemble_record(spec, state, record_every,
                                {k: np.stack([s[1][k][0] for s in sums]) for k in names},
                                {k: np.stack([s[1][k][1] for s in sums]) for k in names},
                                np.array([s[0] for s in sums]), diverged, final)


class CpuBackend(Backend):
    """The generated numba kernels on the CPU (:mod:`sdekit.kernels.cpu`): paths in parallel."""

    name = "cpu"
    runs_shadow_work = True

    def simulate(self, spec, state, rng, n_steps, record_every, observables, progress):
        return _cpu.simulate(spec, state, n_steps, record_every, progress)

    def ensemble(self, spec, state, rng, n_steps, record_every, observables, on_divergence, progress):
        return _cpu.ensemble(spec, state, n_steps, record_every, on_divergence, progress)


class CudaBackend(Backend):
    """The generated kernels through numba-cuda (:mod:`sdekit.kernels.cuda`): a thread per path."""

    name = "cuda"
    runs_time_dependent = False
    runs_shadow_work = True

    def available(self):
        return kernels.cuda_available()

    def unavailable(self):
        return ("backend: 'cuda' needs numba-cuda and an NVIDIA GPU (none found; "
                "NUMBA_ENABLE_CUDASIM=1 runs the simulator), got backend='cuda'")

    def runs_constraint(self, constraint):
        return kernels.supports_constraint(constraint, self.name)

    def simulate(self, spec, state, rng, n_steps, record_every, observables, progress):
        return _cuda.simulate(spec, state, n_steps, record_every, progress)

    def ensemble(self, spec, state, rng, n_steps, record_every, observables, on_divergence, progress):
        return _cuda.ensemble(spec, state, n_steps, record_every, on_divergence, progress)


REGISTRY = {b.name: b for b in (NumpyBackend(), CpuBackend(), CudaBackend())}
"""name -> Backend."""
TIME_DEPENDENT_BACKENDS = tuple(name for name, b in REGISTRY.items() if b.runs_time_dependent)
"""Backends that run time-dependent specs (callable gamma/kT/sigma_A or a force F(q, t))."""


def register(backend, prefer=False):
    """Add ``backend`` (a :class:`Backend` with a new ``name``) to the registry: tried by
    :func:`default` first if ``prefer``, else just before numpy."""
    if not isinstance(backend, Backend) or not isinstance(backend.name, str) or backend.name in REGISTRY:
        raise ValueError(f"backend: must be a Backend with a new name, got {backend!r}")
    REGISTRY[backend.name] = backend
    PREFERENCE.insert(0 if prefer else len(PREFERENCE) - 1, backend.name)
    return backend


def get(backend):
    """The registered backend of name ``backend`` (a Backend is returned as it is)."""
    if isinstance(backend, Backend):
        return backend
    return REGISTRY[choice("backend", backend, tuple(REGISTRY))]


def default(spec=None, observables=None):
    """The first backend of :data:`PREFERENCE` that is available and does not refuse ``spec``
    (with ``observables``); without a spec, the first available one."""
    reasons = []
    for name in PREFERENCE:
        b = REGISTRY[name]
        if not b.available():
            continue
        reason = None if spec is None else b.refuses(spec, observables)
        if reason is None:
            return b
        reasons.append(f"{name}: {reason}")
    raise ValueError(f"backend: no available backend runs this spec (tried {PREFERENCE}): " + "; ".join(reasons))


def check(backend, spec, observables=None):
    """The backend ``backend`` (a name or a Backend) if it runs ``spec`` on this machine, else a
    ValueError: its refusal (naming the argument) or, if it is not available, saying so."""
    b = get(backend)
    reason = b.refuses(spec, observables)
    if reason is not None:
        raise ValueError(reason)
    if not b.available():
        raise ValueError(b.unavailable())
    return b


# ----------------------------------------------------------------------------- numpy helpers

def make_rng(seed):
    """numpy Generator from an int, SeedSequence, Generator or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    integer("seed", seed, low=0)
    return np.random.default_rng(seed)


def _observe(observables, w):
    return {name: np.asarray(f(w.q, w.p)) for name, f in observables.items()}


def builtin_values(spec, w):
    """Per-path values of the built-in observables (q, p, q2, p2, p_O, p2_O, xi)."""
    values = {"q": w.q, "q2": w.q * w.q, "xi": w.xi}
    if w.p is not None:
        values.update(p=w.p, p2=w.p * w.p)
    if "p_O" in spec.scheme.records:
        p_O = w.p_O if w.p_O is not None else np.full_like(w.p, np.nan)
        values.update(p_O=p_O, p2_O=p_O * p_O)
    if spec.scheme.tests:
        values["accepted"] = w.accepted
    if spec.drift_change is not None:
        values["log_weight"] = w.log_weight
    if spec.shadow:
        values.update(work=w.work, heat=w.heat)
    return values
