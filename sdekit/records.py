r"""What a run returns — :class:`State`, :class:`Trajectory`, :class:`Ensemble` — and
their assembly, shared by every backend.

This module sits below the drivers (:mod:`sdekit.simulate`) and the backends
(:mod:`sdekit.reference`, :mod:`sdekit.kernels`): it imports neither. A backend
runs the steps and hands its arrays to :func:`trajectory` or :func:`ensemble`, which
attach the record times (:func:`record_times`: record r is step
``first_step + r * record_every``, at time :math:`t_0 + h\,\text{step}`) and the final
state (:func:`final_state`). Divergences are worded once (:func:`divergence_error`)
and decoded once from the compiled kernels' per-path codes (:func:`check_paths`).

The momenta of a record: ``p`` is the on-step momentum (after the whole word), the one
the Markov chain defines; ``p_O`` the momentum right after the word's last O (what
kinetic-temperature checks want: for BAOAB on a harmonic oscillator
:math:`\langle p^2\rangle = k_BT(1 - h^2\omega^2/4)` on-step, :math:`k_BT` after O).
"""
import dataclasses
import sys
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from . import diagnostics
from ._checks import DivergenceError

STATE_VERSION = 1
BUILTIN_OBSERVABLES = ("q", "p", "q2", "p2", "p_O", "p2_O", "xi")


@dataclass
class State:
    """A run's full state: continue with ``simulate(..., resume=state)``.

    ``q``, ``p``, ``force``, ``noise`` have shape (n_paths, d); ``xi`` (n_paths,).
    ``rng`` is the random stream's position (JSON-able); ``step`` the number of
    steps taken; ``spec`` the parameters (a resume with others is refused);
    ``accepted`` (n_paths,) each path's accepted Metropolis proposals since step 0 (None
    without a Metropolis test); ``log_weight`` (n_paths,) each path's Girsanov log-weight since
    step 0 (None without a ``drift_change``: :mod:`sdekit.girsanov`); ``work``, ``heat`` (n_paths,)
    each path's shadow work and heat since step 0 (``shadow_work=True``: :mod:`sdekit.shadow`;
    None otherwise).
    """

    q: np.ndarray
    p: np.ndarray | None
    xi: np.ndarray
    force: np.ndarray
    noise: np.ndarray | None
    step: int
    rng: dict
    spec: dict
    backend: str
    version: int = STATE_VERSION
    accepted: np.ndarray | None = None
    log_weight: np.ndarray | None = None
    work: np.ndarray | None = None
    heat: np.ndarray | None = None

    def copy(self):
        cp = lambda a: None if a is None else np.array(a, copy=True)
        return dataclasses.replace(self, q=cp(self.q), p=cp(self.p), xi=cp(self.xi),
                                   force=cp(self.force), noise=cp(self.noise), accepted=cp(self.accepted),
                                   log_weight=cp(self.log_weight), work=cp(self.work), heat=cp(self.heat))

    def or_zeros(self, name):
        """A float64 copy of the per-path array ``name`` ("accepted", "log_weight", "work" or
        "heat": each path's count or sum so far), zeros for a state without one."""
        a = getattr(self, name)
        return np.zeros(self.q.shape[0]) if a is None else np.array(a, dtype=np.float64)


class Acceptance:
    """The acceptance rate of a Metropolis-adjusted run (``{ }`` or MALA): what
    :class:`Trajectory` and :class:`Ensemble` share. ``proposed[r]`` is the number of
    Metropolis tests a path had run by record r (counted from step 0 of the chain: a resumed
    run goes on counting), and the accepted proposals by then are ``accepted`` (a
    trajectory) or ``mean["accepted"]`` (an ensemble: the mean over live paths)."""

    def _counts(self):
        accepted = self._accepted()
        if accepted is None or self.proposed is None:
            raise ValueError(f"scheme: {self.spec.scheme.word} has no Metropolis test ({{ }} or MALA), so it has "
                             f"no acceptance rate")
        return np.asarray(accepted, dtype=float), np.asarray(self.proposed, dtype=float)

    @property
    def acceptance_rate(self):
        """Accepted / proposed from step 0 of the chain to the last record (NaN before any step)."""
        accepted, proposed = self._counts()
        return float(accepted[-1] / proposed[-1]) if proposed[-1] > 0 else float("nan")

    def acceptance_rates(self):
        """The acceptance rate in each record interval, (n_records - 1,)."""
        accepted, proposed = self._counts()
        return np.diff(accepted) / np.diff(proposed)


@dataclass
class Trajectory(Acceptance):
    """A recorded path. Arrays have one row per record (steps 0, k, 2k, ...).

    Attributes
    ----------
    t : (n_records,) times
    q, p : (n_records, d) positions and on-step momenta (p is None if overdamped)
    p_O : (n_records, d) momenta right after the last O of the word (None if no O)
    xi : (n_records,) thermostat variable
    observables : dict of the user's observables, (n_records, ...)
    state : State to resume from
    accepted, proposed : (n_records,) Metropolis proposals accepted and tested since step 0
        (None without a Metropolis test); :attr:`acceptance_rate`
    log_weight : (n_records,) the path's Girsanov log-weight since step 0 (None without a
        ``drift_change``; :mod:`sdekit.girsanov`)
    work, heat : (n_records,) shadow work and heat since step 0 (``shadow_work=True``,
        :mod:`sdekit.shadow`; None otherwise)
    """

    t: np.ndarray
    q: np.ndarray
    p: np.ndarray | None
    p_O: np.ndarray | None
    xi: np.ndarray
    observables: dict
    state: State
    spec: object  # sdekit.simulate.Spec
    accepted: np.ndarray | None = None
    proposed: np.ndarray | None = None
    log_weight: np.ndarray | None = None
    work: np.ndarray | None = None
    heat: np.ndarray | None = None

    def _accepted(self):
        return self.accepted

    def series(self, name):
        """The recorded series ``name`` (time along axis 0): q, p, p_O, xi, a user's
        observable, or the squares q2, p2, p2_O."""
        if name in ("q2", "p2", "p2_O"):
            base = self.series(name[:1] + name[2:])
            return base ** 2
        if name in ("q", "p", "p_O", "xi"):
            value = getattr(self, name)
            if value is None:
                raise ValueError(f"name: {name!r} was not recorded by {self.spec.scheme.word}")
            return value
        if name in self.observables:
            return np.asarray(self.observables[name])
        raise ValueError(f"name: must be one of q, p, p_O, xi, q2, p2, p2_O or an observable "
                         f"{sorted(self.observables)}, got {name!r}")

    def time_average(self, name, burn_in=0, method="sokal_abs"):
        """Time average of ``series(name)`` after ``burn_in`` records, with its error bar:
        ``TimeAverage(mean, stderr, tau, ess)``, stderr = sqrt(var * tau / n), tau the
        integrated autocorrelation time in records (:func:`sdekit.diagnostics.time_average`)."""
        return diagnostics.time_average(self.series(name), burn_in=burn_in, method=method)

    def to_xarray(self):
        """An xarray.Dataset (dims time, dim; :func:`sdekit.diagnostics.to_xarray`; needs xarray)."""
        return diagnostics.to_xarray(self)


@dataclass
class Ensemble(Acceptance):
    """Many independent paths: final states and per-record averages across paths.

    Attributes
    ----------
    q, p, xi : final states, (n_paths, d) and (n_paths,)
    t : (n_records,) record times
    mean, meansq : dict name -> (n_records, ...) averages of each observable and of
        its square across the surviving paths (built-ins: q, p, q2, p2, p_O, p2_O, xi)
    n_alive : (n_records,) number of paths averaged at each record
    diverged : indices of paths that diverged (``on_divergence="mask"``)
    proposed : (n_records,) Metropolis tests per path since step 0 (None without a test);
        ``mean["accepted"]`` the accepted ones (per path: ``state.accepted``), :attr:`acceptance_rate`;
        with ``shadow_work=True`` ``mean["work"]``, ``mean["heat"]`` the shadow work and heat
        since step 0 (per path: ``state.work``, ``state.heat``; :mod:`sdekit.shadow`)
    log_weight : (n_paths,) the paths' final Girsanov log-weights (``state.log_weight``; None
        without a ``drift_change``); ``mean["log_weight"]``, ``meansq["log_weight"]`` per record
    """

    t: np.ndarray
    q: np.ndarray
    p: np.ndarray | None
    xi: np.ndarray
    mean: dict
    meansq: dict
    n_alive: np.ndarray
    diverged: np.ndarray
    state: State
    spec: object  # sdekit.simulate.Spec
    proposed: np.ndarray | None = None
    n_paths: int = field(init=False)

    def _accepted(self):
        return self.mean.get("accepted")

    def __post_init__(self):
        self.n_paths = self.q.shape[0]

    @property
    def log_weight(self):
        """The paths' Girsanov log-weights at the end (:mod:`sdekit.girsanov`); None without a drift change."""
        return self.state.log_weight

    def stderr(self, name):
        """Standard error of ``mean[name]`` from the spread across independent paths."""
        n = self.n_alive.reshape((-1,) + (1,) * (self.mean[name].ndim - 1))
        var = np.maximum(self.meansq[name] - self.mean[name] ** 2, 0.0) * n / np.maximum(n - 1, 1)
        return np.sqrt(var / n)

    def to_xarray(self):
        """An xarray.Dataset of the final states and per-record means and standard errors
        (:func:`sdekit.diagnostics.to_xarray`; needs xarray)."""
        return diagnostics.to_xarray(self)


# ----------------------------------------------------------------------------- assembly

def record_times(spec, first_step, record_every, n_records):
    r"""Times of records 0 .. n_records - 1 of a run that starts at step ``first_step``:
    :math:`t_0 + h\,(\text{first\_step} + r\,\text{record\_every})`."""
    return spec.t0 + spec.h * (first_step + record_every * np.arange(n_records))


def final_state(start, n_steps, rng, q, p, xi, force, noise, accepted=None, log_weight=None, work=None, heat=None):
    """The state ``n_steps`` steps after ``start``, with the random stream at ``rng``
    (JSON-able). ``p`` and ``noise`` are dropped where ``start`` has none (overdamped,
    not Leimkuhler–Matthews: the compiled backends pass placeholders there); ``accepted``
    the paths' Metropolis counts (None without a test); ``log_weight`` their Girsanov
    log-weights (kept only where ``start`` has them); ``work``, ``heat`` their shadow work and
    heat (None unless asked for)."""
    return State(q=q, p=None if start.p is None else p, xi=xi, force=force,
                 noise=None if start.noise is None else noise, step=start.step + n_steps,
                 rng=rng, spec=start.spec, backend=start.backend, accepted=accepted,
                 log_weight=None if start.log_weight is None else np.asarray(log_weight, dtype=np.float64),
                 work=work, heat=heat)


def proposals(spec, first_step, record_every, n_records):
    """Metropolis tests a path has run by each record (since step 0); None without one."""
    tests = spec.scheme.tests
    return None if not tests else tests * (first_step + record_every * np.arange(n_records))


def trajectory(spec, start, record_every, q, p, p_O, xi, observables, final, accepted=None, log_weight=None,
               shadow=None):
    """The :class:`Trajectory` of a run from ``start`` to ``final`` (records q, p, p_O,
    xi stacked, one row per record; ``p`` dropped if overdamped, ``p_O`` if the word
    has no O; ``accepted`` the path's accepted Metropolis proposals at each record; ``shadow``
    its (work, heat) at each record, or None)."""
    proposed = proposals(spec, start.step, record_every, len(q))
    return Trajectory(t=record_times(spec, start.step, record_every, len(q)), q=q,
                      p=None if start.p is None else p, p_O=p_O if "p_O" in spec.scheme.records else None,
                      xi=xi, observables=observables, state=final, spec=spec,
                      accepted=None if proposed is None else np.asarray(accepted, dtype=float), proposed=proposed,
                      log_weight=None if spec.drift_change is None else np.asarray(log_weight, dtype=float),
                      **({} if shadow is None else dict(work=np.asarray(shadow[0], float),
                                                        heat=np.asarray(shadow[1], float))))


def ensemble(spec, start, record_every, mean, meansq, n_alive, diverged, final):
    """The :class:`Ensemble` of a run from ``start`` to ``final``, unless every path had
    diverged by some record (under ``on_divergence="mask"``): then there is nothing to
    average, and a DivergenceError names the first such record's step."""
    empty = np.flatnonzero(n_alive == 0)
    if empty.size:
        step = start.step + record_every * int(empty[0])
        raise DivergenceError(f"divergence: all {final.q.shape[0]} paths had diverged by step {step} "
                              f"(on_divergence='mask' leaves nothing to average); reduce h", step=step)
    return Ensemble(t=record_times(spec, start.step, record_every, len(n_alive)), q=final.q, p=final.p,
                    xi=final.xi, mean=mean, meansq=meansq, n_alive=n_alive, diverged=diverged,
                    state=final, spec=spec, proposed=proposals(spec, start.step, record_every, len(n_alive)))


def in_notebook():
    """True inside a Jupyter kernel (IPython's ZMQ shell), where stderr is no terminal but a
    bar is seen. Looks only at an IPython already imported: sdekit does not import it."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:  # noqa: BLE001  (a broken or partial IPython: no notebook)
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def interactive():
    """True if a progress bar would be seen: stderr is a terminal or we run in a Jupyter kernel."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        tty = False
    return tty or in_notebook()


def progress_bar(show, n_steps, work, desc):
    """tqdm bar (``tqdm.auto``: a widget in Jupyter, text in a terminal); ``show=None`` shows
    it for long runs (work > 5e7 path-coordinate steps) that someone sees (:func:`interactive`)."""
    if show is None:
        show = work > 5e7 and interactive()
    return tqdm(total=n_steps, disable=not show, desc=desc, unit="step", mininterval=0.5)


# ----------------------------------------------------------------------------- divergences

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


def first_divergence(bad):
    """(signed step, path) of the earliest entry of the per-path codes ``bad`` (0: none; n > 0:
    non-finite or out of bound at step n; -n: SHAKE/RATTLE failed at step n), SHAKE/RATTLE
    failures before other divergences at the same step (as the numpy backend checks them),
    then the lowest path index; None if none."""
    hit = np.flatnonzero(bad != 0)
    if hit.size == 0:
        return None
    first = int(np.abs(bad[hit]).min())
    for signed in (-first, first):
        at = hit[bad[hit] == signed]
        if at.size:
            return signed, int(at[0])


def check_paths(spec, first_step, bad):
    """Raise the DivergenceError of the earliest divergence in the per-path codes ``bad``
    (:func:`first_divergence`; steps counted from ``first_step``) if there is one. A single
    path (``len(bad) == 1``) is not named."""
    bad = np.asarray(bad).reshape(-1)
    first = first_divergence(bad)
    if first is None:
        return
    signed, path = first
    raise divergence_error(spec, first_step + abs(signed), path if bad.size > 1 else None,
                           shake_failed=signed < 0)
