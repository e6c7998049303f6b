"""The numpy reference backend: the scheme's letters applied in turn to arrays of paths.

Readable rather than fast: one Python-level loop over the letters per step, each
letter a vectorised call of its flow from :mod:`sdekit.operators` on arrays of
shape (n_paths, d). Every other backend is tested against this one.

Random numbers come from one ``numpy.random.Generator`` (PCG64) per run, drawn in
the order the letters need them, so the same seed gives the same numbers, but
path i's numbers depend on n_paths (the compiled backends use per-path streams).

Time-dependent specs (``spec.time_dependent``) take each letter's gamma, kT, sigma and
clock time from :func:`sdekit.schedules.coefficient_tables`, one step at a time; the
others run exactly the constant-parameter arithmetic.
"""
import numpy as np
from scipy import special

from . import constraints, schedules, shadow
from . import operators as ops
from ._checks import overflow_bound
from .letters.ou import increment
from .records import divergence_error  # the one wording of every backend's divergences


class Walker:
    """Mutable state of a batch of paths: q, p (None if overdamped), xi, cached force F (the
    force groups' side by side for a word with B0, B1, ...), Leimkuhler–Matthews' pending
    noise R, p right after the last O (``p_O``) and the accepted Metropolis proposals of each
    path since step 0 (``accepted``), their Girsanov log-weights (``log_weight``, for a
    ``drift_change``: :mod:`sdekit.girsanov`) and, with ``shadow_work``, each path's shadow work
    and heat since step 0 (``work``, ``heat``) and its energy H at the end of the last step (``H``)."""

    def __init__(self, q, p, xi, force, noise, accepted=None, log_weight=None, work=None, heat=None):
        # its own forces: a force group's columns are written in place (Letters.group_force)
        self.q, self.p, self.xi, self.F, self.R = q, p, xi, force.copy(), noise
        self.p_O = None
        self.accepted = np.zeros(q.shape[0]) if accepted is None else accepted
        self.log_weight = np.zeros(q.shape[0]) if log_weight is None else log_weight
        self.saved = None   # (q, p, F, H) at the last '{'
        self.work, self.heat, self.H = work, heat, None
        self.constraint_failed = None  # paths whose SHAKE/RATTLE failed in the last step


def walker(spec, state):
    """The :class:`Walker` of ``state``: its arrays, counts, log-weights and (with ``spec.shadow``)
    its shadow work and heat so far (zeros at step 0)."""
    return Walker(state.q, state.p, state.xi, state.force, state.noise, state.or_zeros("accepted"),
                  state.or_zeros("log_weight"), *((state.or_zeros("work"), state.or_zeros("heat")) if spec.shadow else ()))


def shadow_arrays(spec, w):
    """``{"work": ..., "heat": ...}`` of the walker for its final state (empty without ``spec.shadow``)."""
    return dict(work=w.work, heat=w.heat) if spec.shadow else {}


def initial_force(spec, q, step=0):
    """F(q, t) at the start of step ``step`` (zeros for a scheme without B); for a word with
    force groups (B0, B1, ...) the groups' forces side by side, (n, G d)."""
    if spec.scheme.force_groups:
        return np.hstack([spec.group_force(q, g) for g in spec.scheme.force_groups])
    return spec.force(q, schedules.step_start(spec, step)) if spec.scheme.uses_force else np.zeros_like(q)


class Letters:
    """What a letter's :meth:`~sdekit.letters.Letter.numpy` hook sees of one step of a batch of paths.

    Attributes
    ----------
    spec : sdekit.simulate.Spec
    w : Walker
        The paths' state (changed in place by the hooks).
    ops : namespace
        The operators (:mod:`sdekit.operators`; the test harness may swap them).
    n_dof : int
        Degrees of freedom N of the thermostat: d, less the constraints' codimension.
    """

    def __init__(self, spec, w, rng, n):
        self.spec, self.w, self.rng, self.n, self.ops = spec, w, rng, n, ops
        con = spec.constraint
        self.n_dof = spec.dim - (con.codim(spec.dim) if con is not None else 0)
        self.status = np.zeros(w.q.shape[0], dtype=np.int64) if con is not None else None
        self.tab = schedules.coefficient_tables(spec, n, 1) if spec.time_dependent else None
        self._column = schedules.coefficient_columns(spec.scheme) if self.tab is not None else None

    def normals(self, shape):
        """Standard normals of the run's generator, in the spec's dtype (drawn in word order)."""
        return self.rng.standard_normal(shape, dtype=self.spec.dtype)

    def coefficient(self, name, k):
        """gamma, sigma or kT for entry k of the word: the constant, or its value at the entry's clock time."""
        if self.tab is None:
            return getattr(self.spec, name)
        # Python floats, not numpy scalars, so that float32 paths stay float32
        return float(getattr(self.tab, name)[0, self._column[name][k]])

    def force(self, k):
        """F(q) for entry k (at its clock time :math:`t_n + h\\tau_k` for a time-dependent spec)."""
        return self.spec.force(self.w.q, None if self.tab is None else float(self.tab.t[0, k]))

    def group_force(self, group):
        """Evaluate force group ``group``'s F_g(q) into its columns of ``w.F``."""
        d = self.spec.dim
        self.w.F[:, group * d:(group + 1) * d] = self.spec.group_force(self.w.q, group)

    def force_of(self, group):
        """The cached F_g of force group ``group`` (its columns of ``w.F``)."""
        d = self.spec.dim
        return self.w.F[:, group * d:(group + 1) * d]

    def kinetic(self):
        r""":math:`p^T M^{-1} p` of each path (the thermostat's and the Metropolis test's)."""
        return np.sum(self.w.p * self.w.p * self.spec.inv_mass, axis=1)

    def uniform(self):
        """One uniform on (0, 1) per path for a Metropolis test: Phi(z) of the next normal, as the
        kernels take it (:func:`sdekit.kernels.philox.uniform`), in float64."""
        return special.ndtr(self.normals((self.w.q.shape[0],)).astype(np.float64))

    def potential(self, q):
        """U(q) of each path (float64), for the Metropolis tests."""
        return np.asarray(self.spec.system.potential(q), dtype=np.float64).reshape(q.shape[0])

    def drift_change(self):
        """u(q) of each path (float64): the force of the run's ``drift_change`` (:mod:`sdekit.girsanov`)."""
        return np.asarray(-self.spec.drift_change.grad(self.w.q.astype(np.float64)), dtype=np.float64)

    def add_log_weight(self, z, s, sqrt_mass, b):
        r"""Add each path's Girsanov increment :math:`\sum_j m_j z_j - m_j^2/2` for the normals ``z`` a
        letter just drew (:func:`sdekit.girsanov.increment`; no-op without a ``drift_change``)."""
        if self.spec.drift_change is None:
            return
        inc = increment(self.drift_change(), np.asarray(z, dtype=np.float64), np.asarray(s, dtype=np.float64),
                                 np.asarray(sqrt_mass, dtype=np.float64), b)
        self.w.log_weight = self.w.log_weight + inc.sum(axis=1)

    def end_force(self):
        """F(q_{n+1}, t_{n+1}): the force that ends a whole overdamped step."""
        return self.spec.force(self.w.q, schedules.step_start(self.spec, self.n + 1))

    def constrained_drift(self, delta):
        """A on a constrained system: ``geodesic_steps`` sub-steps of drift, SHAKE and RATTLE."""
        constraints.constrained_drift(self.spec, self.w, delta, self.status)

    def after(self, letter):
        """What follows every letter: RATTLE if it moved p on a constrained system, then its records."""
        if self.status is not None and "p" in letter.moves:
            constraints.project_momenta(self.spec, self.w, self.status)
        for record, part in letter.records:
            setattr(self.w, record, getattr(self.w, part))


def step(spec, w, rng, n=0):
    """Advance the walker ``w`` by one step of ``spec.scheme`` (in place), from step n.

    Each entry of the word is its letter's :meth:`~sdekit.letters.Letter.numpy` hook
    on the batch, followed by RATTLE where it moved p on a constrained system and by
    its records (O: ``w.p_O``). Step n starts at :math:`t_n = t_0 + n h`; a
    time-dependent spec runs letter k at :math:`t_n + h \\tau_k`
    (``scheme.substep_times``) with the coefficients of
    :func:`sdekit.schedules.coefficient_tables`; EM and LM use :math:`k_BT(t_n)` and end
    with :math:`F(q_{n+1}, t_{n+1})`.

    With ``spec.constraint`` (:mod:`sdekit.constraints`): each A is
    ``scheme.geodesic_steps`` sub-steps of drift, SHAKE and RATTLE; each B and O is
    followed by RATTLE; D counts d - m degrees of freedom. Paths whose SHAKE fails
    are set to NaN and listed in ``w.constraint_failed``.
    """
    s = spec.scheme
    x = Letters(spec, w, rng, n)
    if s.whole_step is not None:
        s.whole_step.numpy(x, 0, spec.h, True)
        return
    if spec.shadow:   # W = H(x_n+1) - H(x_n) - Q over the step (sdekit.shadow)
        H0 = shadow.energy(spec, w.q, w.p) if w.H is None else w.H
        Q = np.zeros(w.q.shape[0])
    for k, (letter, f, new_force, _) in enumerate(s.entries):
        heats = spec.shadow and letter.shadow == "heat"
        if heats:
            before = x.kinetic().astype(np.float64)
        letter.numpy(x, k, f * spec.h, new_force)
        x.after(letter)
        if heats:
            Q = Q + shadow.heat(before, x.kinetic().astype(np.float64))
    if spec.shadow:
        w.H = shadow.energy(spec, w.q, w.p)
        w.heat = w.heat + Q
        w.work = w.work + (w.H - H0 - Q)
    if x.status is not None:
        failed = np.flatnonzero(x.status < 0)
        w.constraint_failed = failed
        if failed.size:
            w.q[failed] = np.nan
            w.p[failed] = np.nan


def q_bound(spec):
    """The bound on |q_i| of a live path: ``spec.max_abs``, at most the overflow bound
    (:func:`sdekit._checks.overflow_bound`; p and xi are held to the latter)."""
    big = overflow_bound(spec.dtype)
    return big if spec.max_abs is None else min(float(spec.max_abs), big)


def bad_paths(spec, w):
    """Indices of paths that are non-finite, beyond :func:`q_bound` (q) or beyond
    :func:`sdekit._checks.overflow_bound` (p, xi). NaN fails every comparison."""
    big = overflow_bound(spec.dtype)
    ok = (np.abs(w.q) <= q_bound(spec)).all(axis=1) & (np.abs(w.xi) <= big)
    if w.p is not None:
        ok &= (np.abs(w.p) <= big).all(axis=1)
    return np.flatnonzero(~ok)


def run(spec, w, rng, n_steps, first_step, record, record_every, on_divergence, progress):
    """Take ``n_steps`` steps; call ``record(w, alive)`` every ``record_every`` steps.

    Returns the indices of the paths that diverged (empty unless
    ``on_divergence == "mask"``; with "raise" the first one raises
    :class:`DivergenceError` naming the step and path).
    """
    alive = np.ones(w.q.shape[0], dtype=bool)
    first_path = lambda paths: int(paths[0]) if w.q.shape[0] > 1 else None  # a single trajectory names none
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(first_step + 1, first_step + n_steps + 1):
            step(spec, w, rng, n - 1)
            failed = w.constraint_failed
            if failed is not None and failed.size and on_divergence == "raise" and alive[failed].any():
                raise divergence_error(spec, n, first_path(failed[alive[failed]]), shake_failed=True)
            bad = bad_paths(spec, w)
            if bad.size:
                new = bad[alive[bad]]
                if new.size and on_divergence == "raise":
                    raise divergence_error(spec, n, first_path(new))
                alive[new] = False
            if (n - first_step) % record_every == 0:
                record(w, alive)
            progress.update(1)
    return np.flatnonzero(~alive)
