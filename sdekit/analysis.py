r"""Discretization error of splitting schemes: stationary bias, weak error, observed order.

* :func:`stationary_bias` — the bias :math:`\langle f\rangle_h - \langle f\rangle` of
  the discrete chain's long-time average of an observable, for a list of steps;
* :func:`weak_error` — the error :math:`E[f(X_N)] - E[f(X(T))]` at a fixed time
  :math:`T = N h`;
* :func:`fit_order` — the observed order p in :math:`|e(h)| \approx C h^p`, with a
  confidence interval, by weighted least squares on :math:`\log|e|` vs :math:`\log h`
  (defined in :mod:`sdekit.fits`, with the result records, and re-exported here);
* :func:`kl_estimate` — bias without an exact answer: the near-equilibrium estimate of the KL
  divergence of the sampled configuration (and phase-space) law from the target, from shadow
  work (Fass et al., Entropy 2018; :mod:`sdekit.kl`, with :func:`gaussian_kl` its exact value
  on Gaussians).

Every estimate carries a standard error computed from the data (never assumed), and
paths that escape and diverge are counted and reported, never dropped silently.
Results are :class:`ErrorStudy` objects: ``.table()``, ``.to_csv()``, ``.to_json()``,
``.plot()``; they, :class:`Curve`, :class:`Fit`, :func:`fit_order` and
:func:`asymptotic_caveat` are defined in :mod:`sdekit.fits` and re-exported here.

The observables are the built-ins streamed by :func:`sdekit.ensemble`: ``"q2"``
(configurational, :math:`q_i^2`), ``"p2"`` (kinetic, the on-step momentum the chain
defines), ``"p2_O"`` (the momentum right after the word's last O), ``"q"``, ``"p"``,
``"p_O"``. For d > 1 coordinates the value is the average over coordinates unless
``coordinate`` picks one.

References
----------
B. Leimkuhler and C. Matthews, Appl. Math. Res. Express 2013, 34-56 (configurational
and kinetic orders of BAOAB, ABOBA, OBABO; high-friction superconvergence of BAOAB).
D. Talay and L. Tubaro, Stoch. Anal. Appl. 8 (1990) 483-509 (expansion of the global
error). H. Flyvbjerg and H. G. Petersen, J. Chem. Phys. 91 (1989) 461 (batch means /
blocking for correlated averages).
"""
import math
import warnings

import numpy as np

from . import linear
from ._checks import finite_array, integer, real
from .fits import (BEND_SIGNIFICANCE, BEND_SLOPE, MIN_SPAN, Curve, ErrorStudy, Fit,  # noqa: F401  (re-exported)
                   asymptotic_caveat, fit_order)
from .schemes import Scheme
from .simulate import BUILTIN_OBSERVABLES, ensemble
from .systems import Gaussian, Harmonic, System
from .kl import KLEstimate, gaussian_kl, kl_estimate, near_equilibrium_kl  # noqa: F401  (bias without an exact answer)

_EXACT_NAME = {"p_O": "p", "p2_O": "p2"}  # the momentum marginal is N(0, kT M) before and after O


# ----------------------------------------------------------------------------- helpers

def _seed(seed):
    """A SeedSequence from an int >= 0, a SeedSequence or None (fresh entropy)."""
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(seed) if seed is None else seed
    return np.random.SeedSequence(integer("seed", seed, low=0))


def _start_vector(name, value, d):
    """A deterministic initial q0/p0: a scalar (every coordinate) or a (d,) vector."""
    v = finite_array(name, value)
    if v.ndim == 0:
        v = np.full(d, float(v))
    if v.shape != (d,):
        raise ValueError(f"{name}: must be a scalar or have shape ({d},), got shape {v.shape}")
    return v


def escape_bound(system, max_abs):
    """``max_abs`` if given, else the system's ``escape_bound`` (None: no bound)."""
    return max_abs if max_abs is not None else getattr(system, "escape_bound", None)


def batch_means(series, n_batches):
    r"""Mean of a correlated series and its standard error by batch means.

    The series is cut into ``n_batches`` contiguous batches (the first
    ``len % n_batches`` values dropped); with :math:`\bar x_b` the batch averages,
    :math:`\mathrm{SE} = \mathrm{sd}(\bar x_b)/\sqrt{B}` (Flyvbjerg & Petersen 1989).
    Returns (mean of the batches, SE, lag-1 autocorrelation of the batch means: near
    zero when the batches are long enough to be independent).
    """
    series = finite_array("series", series).reshape(-1)
    n_batches = integer("n_batches", n_batches, low=2)
    if series.size < n_batches:
        raise ValueError(f"n_batches: {n_batches} batches need at least as many records after "
                         f"burn-in, got {series.size}")
    b = series.size // n_batches
    means = series[series.size - b * n_batches:].reshape(n_batches, b).mean(axis=1)
    centred = means - means.mean()
    denom = float(np.sum(centred ** 2))
    lag1 = float(np.sum(centred[1:] * centred[:-1]) / denom) if denom > 0 else 0.0
    return float(means.mean()), float(means.std(ddof=1) / math.sqrt(n_batches)), lag1


def _observables(observable):
    if isinstance(observable, str):
        names = [observable]
    elif isinstance(observable, (list, tuple)):
        names = list(observable)
    else:
        raise ValueError(f"observable: must be a name or a list of names, got {observable!r}")
    if not names:
        raise ValueError("observable: give at least one name")
    for name in names:
        if not isinstance(name, str) or name not in BUILTIN_OBSERVABLES or name == "xi":
            raise ValueError(f"observable: must be one of {[o for o in BUILTIN_OBSERVABLES if o != 'xi']}, "
                             f"got {name!r}")
    return names


def _steps_list(name, value, hs):
    vals = [value] * len(hs) if np.ndim(value) == 0 else list(value)
    if len(vals) != len(hs):
        raise ValueError(f"{name}: must be an integer or one per step size ({len(hs)}), got {value!r}")
    return [integer(name, int(v) if isinstance(v, np.integer) else v, low=0) for v in vals]


def _hs(hs):
    try:
        arr = np.atleast_1d(finite_array("hs", hs))
    except ValueError:
        raise ValueError(f"hs: must be a non-empty list of positive step sizes, got {hs!r}") from None
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"hs: must be a non-empty list of positive step sizes, got {hs!r}")
    return arr


def _select(values, coordinate):
    """The coordinate's column, or the average over coordinates (last axis)."""
    values = np.asarray(values, dtype=float)
    if coordinate is None:
        return values.mean(axis=-1)
    return values[..., coordinate]


def _coordinate(coordinate, dim):
    if coordinate is None:
        return None
    coordinate = integer("coordinate", coordinate, low=0)
    if coordinate >= dim:
        raise ValueError(f"coordinate: must be < {dim} (the system's dimension), got {coordinate}")
    return coordinate


def exact_value(system, name, kT, mass=None, coordinate=None):
    """The exact stationary value of a built-in observable, or None if unknown."""
    try:
        value = system.exact(_EXACT_NAME.get(name, name), kT, mass)
    except KeyError:
        return None
    return float(_select(value, coordinate))


def _momenta(rng, system, kT, mass, n_paths, overdamped):
    if overdamped:
        return None
    m = np.ones(system.dim) if mass is None else np.broadcast_to(np.asarray(mass, float), (system.dim,))
    return rng.standard_normal((n_paths, system.dim)) * np.sqrt(kT * m)


def _bar(progress, total, desc):
    from tqdm.auto import tqdm

    if progress is None or progress is False:
        return tqdm(total=total, disable=True)
    if progress is True:
        return tqdm(total=total, desc=desc, unit="step")
    return progress  # a tqdm-like object owned by the caller


# ----------------------------------------------------------------------------- stationary bias

def stationary_bias(scheme, system, observable, hs, *, gamma=1.0, kT=1.0, n_paths=10_000,
                    n_steps=10_000, burn_in=1_000, seed=0, backend=None, mass=None, q0=None,
                    p0=None, n_batches=20, n_records=400, max_abs=None, coordinate=None,
                    exact=None, min_significance=2.0, progress=None):
    r"""Stationary bias :math:`\langle f\rangle_h - \langle f\rangle` for each step h.

    For each h, ``n_paths`` independent paths run ``n_steps`` steps
    (:func:`sdekit.ensemble`); after ``burn_in`` steps the across-path average
    :math:`\bar f_t` is recorded at ``n_records`` equally spaced times, and the
    estimate of :math:`\langle f\rangle_h` is their time average. Its standard error
    is computed from the data by batch means over those record averages
    (:func:`batch_means`, ``n_batches`` batches): the paths are independent, so
    :math:`\bar f_t` is a stationary series whose only correlations are in time,
    and the spread of the batch averages measures them. The lag-1 autocorrelation of
    the batch means is checked (a warning if > 0.5: batches too short).

    Paths that diverge (non-finite, or :math:`|q_i| >` ``max_abs``) are masked by
    :func:`sdekit.ensemble` and counted in the result's ``diverged`` column and
    summary: the average is then over the survivors, and the table says so.

    Parameters
    ----------
    scheme : Scheme or str
    system : sdekit.systems.System
    observable : str or list of str
        Built-in names: ``"q2"`` (configurational), ``"p2"`` (kinetic, on-step),
        ``"p2_O"`` (kinetic, after O), ``"q"``, ``"p"``, ``"p_O"``.
    hs : sequence of float
        Step sizes.
    gamma, kT, mass : as in :func:`sdekit.ensemble`.
    n_paths : int
    n_steps, burn_in : int or one per h
        Total steps and discarded initial steps (choose them so the run covers the
        same physical time at every h: ``int(t / h)``).
    seed : int or SeedSequence
        Each h gets an independent child stream (``SeedSequence.spawn``).
    backend : None (the fastest available), "numpy", "cpu" or "cuda".
    q0 : initial positions, default zeros; p0 default :math:`N(0, k_BT M)` draws.
    max_abs : float, optional
        Positions beyond this bound count as divergence. Default: the system's
        ``escape_bound`` (5 for the double well, whose steps are unstable for
        |q| > 2 at moderate h), so that escaping paths, huge but still finite for a
        few steps before they overflow, are masked rather than averaged in.
    coordinate : int, optional
        Use one coordinate; default the average over coordinates.
    exact : float or dict name -> float, optional
        Override ``system.exact``.
    progress : bool or tqdm
        A bar counting the steps taken (a caller's tqdm is advanced, not closed).

    Returns
    -------
    ErrorStudy with one Curve per observable (errors None where no exact value is
    known), fitted orders where at least three errors are resolved.
    """
    scheme = scheme if isinstance(scheme, Scheme) else Scheme(scheme)
    if not isinstance(system, System):
        raise ValueError(f"system: must be an sdekit.systems.System, got {system!r}")
    names = _observables(observable)
    hs = _hs(hs)
    n_steps = _steps_list("n_steps", n_steps, hs)
    burn_in = _steps_list("burn_in", burn_in, hs)
    n_paths = integer("n_paths", n_paths, low=2)
    n_records = integer("n_records", n_records, low=2)
    n_batches = integer("n_batches", n_batches, low=2)
    gamma, kT = real("gamma", gamma, low=0.0), real("kT", kT, low=0.0)
    real("min_significance", min_significance, low=0.0)
    coordinate = _coordinate(coordinate, system.dim)
    for k, (n, b) in enumerate(zip(n_steps, burn_in)):
        if n - b < n_batches:
            raise ValueError(f"n_steps: need at least n_batches={n_batches} steps after burn_in "
                             f"at h={hs[k]}, got n_steps={n}, burn_in={b}")
    seeds = _seed(seed).spawn(len(hs))
    collected = {name: ([], [], [], []) for name in names}
    diverged = []
    bar = _bar(progress, sum(n_steps), scheme.word)
    for h, n, b, ss in zip(hs, n_steps, burn_in, seeds):
        run_seed, p_seed = ss.spawn(2)
        every = max(1, (n - b) // n_records)
        p_init = p0 if p0 is not None else _momenta(np.random.default_rng(p_seed), system, kT, mass,
                                                     n_paths, scheme.overdamped)
        ens = ensemble(scheme, system, float(h), n, n_paths, gamma=gamma, kT=kT, mass=mass, q0=q0,
                       p0=p_init, seed=run_seed, record_every=every, backend=backend,
                       max_abs=escape_bound(system, max_abs), on_divergence="mask", progress=False)
        steps = np.rint(ens.t / h).astype(int) - int(np.rint(ens.t[0] / h))
        after = steps >= b
        diverged.append(int(np.size(ens.diverged)))
        for name in names:
            if name not in ens.mean:
                raise ValueError(f"observable: {name!r} is not recorded for scheme {scheme.word}")
            series = _select(ens.mean[name][after], coordinate)
            mean, se, lag1 = batch_means(series, n_batches)
            for lst, v in zip(collected[name], (mean, se, lag1, int(ens.n_alive[-1]))):
                lst.append(v)
        bar.update(n)
    if progress is True:
        bar.close()
    chain = _exact_chain_values(scheme, system, names, hs, gamma, kT, mass, coordinate)
    curves = []
    for name in names:
        values, ses, lags, _ = (np.array(v) for v in collected[name])
        bad = hs[lags > 0.5]
        if bad.size:
            warnings.warn(f"stationary_bias: batch means of {name} are correlated (lag-1 > 0.5) at "
                          f"h = {bad.tolist()}; the standard errors may be too small: run longer "
                          f"or use fewer batches", RuntimeWarning, stacklevel=2)
        ex = exact.get(name) if isinstance(exact, dict) else exact
        ex = exact_value(system, name, kT, mass, coordinate) if ex is None else float(ex)
        extra = {"batch_lag1": lags}
        if name in chain and ex is not None:
            extra = {"exact_chain_error": chain[name] - ex, **extra}
        curve = Curve(kind="stationary bias", scheme=scheme.word, system=repr(system), observable=name,
                      hs=hs, values=values, stderr=ses, exact=ex,
                      errors=None if ex is None else values - ex, diverged=np.array(diverged),
                      n_paths=n_paths,
                      method=(f"batch means ({n_batches} batches) over the post-burn-in averages of "
                              f"{n_paths} independent paths"),
                      extra=extra)
        curves.append(curve.fit_errors(min_significance))
    settings = {"scheme": scheme.to_json(), "system": repr(system), "observable": names,
                "hs": hs.tolist(), "gamma": gamma, "kT": kT, "n_paths": n_paths, "n_steps": n_steps,
                "burn_in": burn_in, "seed": seed if isinstance(seed, int) else repr(seed),
                "backend": backend, "max_abs": max_abs, "n_batches": n_batches}
    return ErrorStudy(curves, settings)


def _exact_chain_values(scheme, system, names, hs, gamma, kT, mass, coordinate):
    r"""Exact stationary values of the discrete chain (:mod:`sdekit.linear`) of the
    built-ins ``names`` on a linear system: ``{name: array over hs}`` (NaN at a step
    where the chain has no stationary law: unstable, or no friction); ``{}`` for a
    nonlinear system or a word without an exact Gaussian law (e.g. with D). A
    Metropolis-adjusted word's chain keeps the target law exactly at every step: its values
    are the target's (:math:`k_BT K^{-1}`, :math:`k_BT M`).

    The chain's stationary law at the start of a step is :math:`N(0, \Sigma)`,
    :func:`sdekit.linear.stationary_covariance`; ``p_O``/``p2_O`` (right after the
    word's last O) propagate :math:`\Sigma` through the letters up to that O."""
    K = linear_hessian(system)
    if K is None or any("xi" in e.letter.moves for e in scheme.entries):
        return {}
    d = system.dim
    if scheme.tests:   # Metropolis-adjusted: every letter keeps exp(-H/kT), the chain's law is the target's
        m = np.ones(d) if mass is None else np.broadcast_to(np.asarray(mass, float), (d,))
        var = np.concatenate([kT * np.diag(np.linalg.inv(K)), kT * m])
        second = {"q2": var[:d], "p2": var[d:], "p2_O": var[d:]}
        return {name: np.full(len(hs), float(_select(second.get(name, np.zeros(d)), coordinate)))
                for name in names if not (scheme.overdamped and name not in ("q", "q2"))}
    writers = scheme.occurrences(lambda l: any(r == "p_O" for r, _ in l.records))
    out = {}
    for name in names:
        if scheme.overdamped and name not in ("q", "q2"):
            continue
        if name in ("p_O", "p2_O") and not writers:
            continue
        col = []
        for h in hs:
            try:
                sigma = linear.stationary_covariance(scheme, K, float(h), gamma, kT, mass)
            except ValueError:  # unstable at this h, or no unique stationary law
                col.append(math.nan)
                continue
            if name in ("p_O", "p2_O"):
                for letter, f, _, _ in scheme.entries[:writers[-1] + 1]:
                    T, Q = linear.letter_map(letter, f * float(h), K, np.broadcast_to(gamma, (d,)),
                                             np.broadcast_to(kT, (d,)),
                                             np.ones(d) if mass is None else np.broadcast_to(mass, (d,)))
                    sigma = T @ sigma @ T.T + Q
            var = np.diag(sigma)
            second = {"q2": var[:d], "p2": var[d:2 * d], "p2_O": var[d:2 * d]}
            value = second.get(name, np.zeros(d))  # the stationary mean is zero
            col.append(float(_select(value, coordinate)))
        out[name] = np.array(col)
    return out


# ----------------------------------------------------------------------------- weak error

def linear_hessian(system):
    """K of a quadratic system (Harmonic, Gaussian), or None."""
    if isinstance(system, Harmonic):
        return np.diag(system.omega ** 2)
    if isinstance(system, Gaussian):
        return system.precision
    return None


def _moment_of(name, moments, d, overdamped):
    """E[f] per coordinate of a built-in f from a Gaussian law of (q, p) or q."""
    second = linear.second_moments(moments)
    first = moments.mean
    table = {"q": first[:d], "q2": second[:d]}
    if not overdamped:
        table.update(p=first[d:2 * d], p2=second[d:2 * d])
    if name not in table:
        raise ValueError(f"observable: {name!r} has no exact moment for this scheme (use q, q2, p, p2)")
    return table[name]


def _n_steps_for(T, h):
    n = T / h
    if abs(n - round(n)) > 1e-9 * max(1.0, n) or round(n) < 1:
        raise ValueError(f"hs: T/h must be a positive integer, got T={T!r}, h={h!r} (T/h = {n!r})")
    return int(round(n))


def _final_estimate(ens, name, coordinate):
    if name not in ens.mean:
        raise ValueError(f"observable: {name!r} is not recorded for scheme {ens.spec.scheme.word}")
    return float(ens.mean[name][-1][coordinate]), float(ens.stderr(name)[-1][coordinate])


def weak_error(scheme, system, observable, T, hs, *, gamma=1.0, kT=1.0, n_paths=100_000, seed=0,
               q0=1.0, p0=0.0, mass=None, backend=None, coordinate=None, reference="auto",
               h_ref=None, ref_paths=None, max_abs=None, min_significance=2.0, progress=None):
    r"""Weak error :math:`E[f(X_N)] - E[f(X(T))]`, :math:`N = T/h`, from a fixed start.

    For each h, ``n_paths`` independent paths start at (``q0``, ``p0``) and run
    ``T/h`` steps; :math:`E[f(X_N)]` is the across-path average at the end and its
    standard error the across-path spread over :math:`\sqrt{n}` (independent paths).

    The exact value :math:`E[f(X(T))]`:

    * linear systems (Harmonic, Gaussian): exact, from :func:`sdekit.linear.exact_moments`
      (matrix exponential); the result then also holds the exact error of the
      discrete chain itself, :func:`sdekit.linear.transient_moments` minus the
      exact value, in the column ``exact_chain_error`` (no sampling error);
    * otherwise a fine-step reference: the same scheme with ``h_ref`` (default the
      smallest h / 8) and ``ref_paths`` paths (default ``4 n_paths``); its standard
      error is added in quadrature, and its own :math:`O(h_{ref}^p)` error is not
      corrected (it is small against the errors measured if ``h_ref`` is small).

    Parameters
    ----------
    scheme, system, observable : as in :func:`stationary_bias` (one observable: q, q2, p, p2)
    T : float
        Final time; every ``T/h`` must be an integer.
    hs : sequence of float
    q0, p0 : initial state (deterministic), scalars or (d,) arrays.
    coordinate : int, optional
        Which coordinate (required when d > 1: the across-path standard error of a
        sum over coordinates would need their covariances).
    reference : "auto", "exact" or "fine"

    Returns
    -------
    ErrorStudy with one Curve (its fit: the observed weak order).
    """
    scheme = scheme if isinstance(scheme, Scheme) else Scheme(scheme)
    if not isinstance(system, System):
        raise ValueError(f"system: must be an sdekit.systems.System, got {system!r}")
    (name,) = _observables(observable) if isinstance(observable, str) else (None,)
    if name is None:
        raise ValueError(f"observable: weak_error takes one name, got {observable!r}")
    hs = _hs(hs)
    T = real("T", T, low=0.0, low_open=True)
    steps = [_n_steps_for(T, h) for h in hs]
    n_paths = integer("n_paths", n_paths, low=2)
    if coordinate is None and system.dim > 1:
        raise ValueError(f"coordinate: the system has {system.dim} coordinates; choose one (0..{system.dim - 1})")
    coordinate = 0 if coordinate is None else _coordinate(coordinate, system.dim)
    if reference not in ("auto", "exact", "fine"):
        raise ValueError(f"reference: must be 'auto', 'exact' or 'fine', got {reference!r}")
    K = linear_hessian(system)
    if reference == "exact" and K is None:
        raise ValueError(f"reference: 'exact' needs a linear system (Harmonic, Gaussian), got {system!r}")
    use_exact = K is not None and reference != "fine"
    d = system.dim
    q0v = _start_vector("q0", q0, d)
    p0v = None if scheme.overdamped else _start_vector("p0", p0, d)
    gamma, kT = real("gamma", gamma, low=0.0), real("kT", kT, low=0.0)
    real("min_significance", min_significance, low=0.0)
    seeds = _seed(seed).spawn(len(hs) + 1)
    run = lambda h, n, paths, ss: ensemble(scheme, system, float(h), n, paths, gamma=gamma, kT=kT, mass=mass,
                                           q0=q0v, p0=p0v, seed=ss, backend=backend,
                                           max_abs=escape_bound(system, max_abs),
                                           on_divergence="mask", progress=False)
    extra = {}
    if use_exact:
        mean0 = q0v if scheme.overdamped else np.concatenate([q0v, p0v])
        truth = linear.exact_moments(K, T, gamma, kT, mean0, 0.0, mass, overdamped=bool(scheme.overdamped))
        exact = float(_moment_of(name, truth, d, scheme.overdamped)[coordinate])
        ref_se = 0.0
        chain = [float(_moment_of(name, linear.transient_moments(scheme, K, h, n, gamma, kT, mean0, 0.0, mass),
                                  d, scheme.overdamped)[coordinate]) - exact for h, n in zip(hs, steps)]
        extra["exact_chain_error"] = np.array(chain)
        method = f"across {n_paths} independent paths; exact reference (matrix exponential)"
    else:
        h_ref = float(hs.min() / 8 if h_ref is None else real("h_ref", h_ref, low=0.0, low_open=True))
        ref_paths = 4 * n_paths if ref_paths is None else integer("ref_paths", ref_paths, low=2)
        ens = run(h_ref, _n_steps_for(T, h_ref), ref_paths, seeds[-1])
        exact, ref_se = _final_estimate(ens, name, coordinate)
        method = (f"across {n_paths} independent paths; reference: same scheme at h={h_ref:g} with "
                  f"{ref_paths} paths (its stderr {ref_se:.2e} included)")
    values, ses, diverged = [], [], []
    bar = _bar(progress, len(hs), scheme.word)
    for h, n, ss in zip(hs, steps, seeds):
        ens = run(h, n, n_paths, ss)
        v, se = _final_estimate(ens, name, coordinate)
        values.append(v)
        ses.append(math.hypot(se, ref_se))
        diverged.append(int(np.size(ens.diverged)))
        bar.update(1)
    if progress is True:
        bar.close()
    values = np.array(values)
    curve = Curve(kind="weak error", scheme=scheme.word, system=repr(system), observable=name, hs=hs,
                  values=values, stderr=np.array(ses), exact=exact, errors=values - exact,
                  diverged=np.array(diverged), n_paths=n_paths, method=method, extra=extra)
    curve.fit_errors(min_significance)
    settings = {"scheme": scheme.to_json(), "system": repr(system), "observable": name, "T": T,
                "hs": hs.tolist(), "gamma": gamma, "kT": kT, "n_paths": n_paths, "seed": seed
                if isinstance(seed, int) else repr(seed), "backend": backend, "q0": q0v.tolist(),
                "p0": None if p0v is None else p0v.tolist()}
    return ErrorStudy([curve], settings)
