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

from . import operators as ops
from . import schedules
from ._checks import DivergenceError, overflow_bound


class Walker:
    """Mutable state of a batch of paths: q, p (None if overdamped), xi, cached force F,
    Leimkuhler–Matthews' pending noise R, and p right after the last O (``p_O``)."""

    def __init__(self, q, p, xi, force, noise):
        self.q, self.p, self.xi, self.F, self.R = q, p, xi, force, noise
        self.p_O = None
        self.constraint_failed = None  # paths whose SHAKE/RATTLE failed in the last step


def initial_force(spec, q, step=0):
    """F(q, t) at the start of step ``step`` (zeros for a scheme without B)."""
    return spec.force(q, schedules.step_start(spec, step)) if spec.scheme.uses_force else np.zeros_like(q)


def step(spec, w, rng, n=0):
    """Advance the walker ``w`` by one step of ``spec.scheme`` (in place), from step n.

    Step n starts at :math:`t_n = t_0 + n h`; a time-dependent spec runs letter k at
    :math:`t_n + h \\tau_k` (``scheme.substep_times``) with the coefficients of
    :func:`sdekit.schedules.coefficient_tables`; EM and LM use :math:`k_BT(t_n)` and
    end with :math:`F(q_{n+1}, t_{n+1})`.

    With ``spec.constraint`` (:mod:`sdekit.constraints`): each A is
    ``scheme.geodesic_steps`` sub-steps of drift, SHAKE and RATTLE; each B and O is
    followed by RATTLE; D counts d - m degrees of freedom. Paths whose SHAKE fails
    are set to NaN and listed in ``w.constraint_failed``.
    """
    s, h, dt = spec.scheme, spec.h, spec.dtype
    con = spec.constraint
    if con is not None:
        from . import constraints

        status = np.zeros(w.q.shape[0], dtype=np.int64)
    tab = schedules.coefficient_tables(spec, n, 1) if spec.time_dependent else None
    # Python floats, not numpy scalars, so that float32 paths stay float32
    at = lambda name, j: float(getattr(tab, name)[0, j])
    if s.overdamped:
        R = rng.standard_normal(w.q.shape, dtype=dt)
        kT = spec.kT if tab is None else at("kT", 0)
        # astype: sqrt of Python floats is a float64 scalar, which would promote float32 paths
        if s.overdamped == "EM":
            w.q = ops.euler_maruyama(w.q, w.F, h, kT, R).astype(dt, copy=False)
        else:
            w.q = ops.leimkuhler_matthews(w.q, w.F, h, kT, w.R, R).astype(dt, copy=False)
            w.R = R
        w.F = spec.force(w.q, schedules.step_start(spec, n + 1))
        return
    n_O = n_D = 0
    for k, ((letter, f), new_force) in enumerate(zip(s.steps, s.evaluations)):
        delta = f * h
        if letter == "A":
            if con is None:
                w.q = ops.drift(w.q, w.p, delta, spec.inv_mass)
            else:
                constraints.constrained_drift(spec, w, delta, status)
        elif letter == "B":
            if new_force:
                w.F = spec.force(w.q, None if tab is None else at("t", k))
            w.p = ops.kick(w.p, w.F, delta)
            if con is not None:
                constraints.project_momenta(spec, w, status)
        elif letter == "O":
            if tab is None:
                gamma, sigma = spec.gamma, spec.sigma
            else:
                gamma, sigma = at("gamma", n_O), at("sigma", n_O)
            n_O += 1
            c, sc = ops.ou_coefficients(gamma + w.xi[:, None], delta, sigma)
            R = rng.standard_normal(w.p.shape, dtype=dt)
            w.p = ops.ou(w.p, c, sc, spec.sqrt_mass, R)
            if con is not None:
                constraints.project_momenta(spec, w, status)
            w.p_O = w.p
        else:  # "D"
            kinetic = np.sum(w.p * w.p * spec.inv_mass, axis=1)
            n_dof = spec.dim - (con.codim(spec.dim) if con is not None else 0)
            kT = spec.kT if tab is None else at("kT", n_D)
            w.xi = ops.thermostat(w.xi, kinetic, n_dof, kT, spec.eps, delta)
            n_D += 1
    if con is not None:
        failed = np.flatnonzero(status < 0)
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


def divergence_error(spec, step, path, shake_failed=False):
    """The DivergenceError of every backend: naming the step and, in an ensemble, the first
    failing path; a SHAKE/RATTLE failure (``shake_failed``) or a non-finite/out-of-bound state."""
    where = f" (path {path})" if path is not None else ""
    if shake_failed:
        return DivergenceError(
            f"constraint: SHAKE/RATTLE failed at step {step}{where}: SHAKE did not converge to tol within "
            f"max_iter (or G M^-1 G^T is singular) for {spec.constraint!r} (h={spec.h}, scheme "
            f"{spec.scheme.word}); reduce h or raise geodesic_steps", step=step, path=path)
    return DivergenceError(
        f"divergence at step {step}{where}: non-finite or out-of-bound state "
        f"(h={spec.h}, scheme {spec.scheme.word}); reduce h or see on_divergence", step=step, path=path)


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
