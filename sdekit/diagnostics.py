r"""Error bars of time averages, and export of runs to xarray / ArviZ.

A long path of an ergodic chain estimates a stationary average by the time average
:math:`\bar f = N^{-1}\sum_{n=1}^{N} f(x_n)`. Its records are correlated, so the naive
:math:`\sqrt{\operatorname{var}(f)/N}` is too small by the square root of the
*integrated autocorrelation time* (in units of records)

.. math::

    \tau_{\text{int}} = 1 + 2\sum_{k=1}^{\infty} \rho_k, \qquad
    \rho_k = \frac{\operatorname{cov}(f(x_0), f(x_k))}{\operatorname{var} f(x_0)}, \qquad
    \operatorname{var}(\bar f) \approx \frac{\operatorname{var}(f)\,\tau_{\text{int}}}{N},

and the *effective sample size* is :math:`N_{\text{eff}} = N/\tau_{\text{int}}`. (With this
convention an uncorrelated series has :math:`\tau_{\text{int}} = 1`; Sokal's
:math:`\tau_{\text{int}}` is half of it.) For an AR(1) chain
:math:`x_{n+1} = a x_n + \sqrt{1-a^2}\,e_n`, :math:`\rho_k = a^k` and
:math:`\tau_{\text{int}} = (1+a)/(1-a)`.

Three estimators of the sum are offered, all from the empirical autocorrelation
:math:`\hat\rho_k = \hat\gamma_k/\hat\gamma_0`,
:math:`\hat\gamma_k = N^{-1}\sum_{n=1}^{N-k}(x_n-\bar x)(x_{n+k}-\bar x)` (computed by FFT):

* ``"sokal"``: the self-consistent window of Sokal (1997), Sec. 3:
  :math:`\hat\tau(M) = 1 + 2\sum_{k=1}^{M}\hat\rho_k` with M the smallest window such that
  :math:`M \ge c\,\hat\tau(M)/2` (default c = 5, in Sokal's units, where his
  :math:`\tau_{\text{int}} = \hat\tau/2`). Its variance is
  :math:`\operatorname{var}(\hat\tau)/\tau^2 \approx 2(2M+1)/N` (Sokal 1997, Eq. 3.19;
  Madras & Sokal 1988), the ``stderr`` returned with ``full=True``. The rule assumes
  positive correlations: on an anticorrelated series :math:`\hat\tau(1) = 1 + 2\hat\rho_1`
  may already be ~0 and stop the window at M = 1.
* ``"sokal_abs"`` (default): the same estimate :math:`\hat\tau(M)`, the window chosen by
  Sokal's rule on the absolute sum, :math:`M \ge c\,\hat\tau_{|\cdot|}(M)/2` with
  :math:`\hat\tau_{|\cdot|}(M) = 1 + 2\sum_{k=1}^{M}|\hat\rho_k|`, default c = 10. For
  underdamped Langevin the autocorrelation of q oscillates: the signed sum is small
  (cancellations) long before :math:`\rho_k` has decayed, so Sokal's rule stops too early
  (BAOAB, :math:`\omega = 1`, h = 0.7, :math:`\gamma = 0.5`: 5 % bias, six standard errors at
  :math:`N = 10^6`); the absolute sum grows with the decay time of the envelope instead. For
  a positive, monotone autocorrelation (AR(1)) it is Sokal's rule with c = 10. Same variance
  formula, with its own (larger) M.
* ``"geyer"``: Geyer's (1992) initial monotone sequence estimator. With
  :math:`\hat\Gamma_m = \hat\gamma_{2m} + \hat\gamma_{2m+1}`, sum until the first
  :math:`\hat\Gamma_m \le 0`, each :math:`\hat\Gamma_m` lowered to the minimum of those
  before it: :math:`\hat\tau = -1 + 2\sum_{m=0}^{K}\hat\Gamma_m/\hat\gamma_0`. A consistent
  overestimate for *reversible* chains (:math:`\Gamma_m > 0` there), with no tuning constant;
  wrong for oscillating autocorrelations (underdamped Langevin is not reversible: it stops at
  the first negative pair). ArviZ's ``ess(method="mean")`` is this estimator on split chains.

References
----------
A. D. Sokal, "Monte Carlo methods in statistical mechanics: foundations and new algorithms",
in *Functional Integration* (Cargèse 1996), NATO ASI Ser. B 361, Plenum (1997) 131-192.
N. Madras and A. D. Sokal, "The pivot algorithm", J. Stat. Phys. 50 (1988) 109-186 (App. C).
C. J. Geyer, "Practical Markov chain Monte Carlo", Statist. Sci. 7 (1992) 473-483.
A. Vehtari, A. Gelman, D. Simpson, B. Carpenter and P.-C. Bürkner, "Rank-normalization,
folding, and localization: an improved R-hat", Bayesian Anal. 16 (2021) 667-718 (split R-hat).

The xarray / ArviZ export (:func:`to_xarray`, :func:`to_inference_data`) needs the optional
extra ``pip install "sdekit[arviz]"``; nothing else here does. This module imports no other
sdekit module (records, drivers): it reads a run's attributes.
"""
import warnings
from collections import namedtuple

import numpy as np

SOKAL_C = {"sokal": 5.0, "sokal_abs": 10.0}
"""Default window constant c of each windowed method (Sokal's units: M >= c tau / 2)."""

METHODS = ("sokal_abs", "sokal", "geyer")

AutocorrelationTime = namedtuple("AutocorrelationTime", "tau window stderr")
AutocorrelationTime.__doc__ = (
    "Integrated autocorrelation time ``tau`` (records), the window M summed to (for Geyer: "
    "the last lag summed), and Sokal's standard error ``tau * sqrt(2 (2M + 1) / N)``.")

TimeAverage = namedtuple("TimeAverage", "mean stderr tau ess")
TimeAverage.__doc__ = (
    "Time average ``mean``, its standard error ``sqrt(var * tau / n)``, the integrated "
    "autocorrelation time ``tau`` (records) and the effective sample size ``ess = n / tau``.")


# ----------------------------------------------------------------------------- inputs

def _series(x, min_length=4):
    """x as a float (n, k) array (time along axis 0, the rest flattened) and the trailing shape."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError(f"x: must be a series (time along axis 0), got a scalar {x!r}")
    if x.shape[0] < min_length:
        raise ValueError(f"x: needs at least {min_length} records, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x: must be finite (a diverged path?)")
    return x.reshape(x.shape[0], -1), x.shape[1:]


def _shaped(values, shape):
    values = np.asarray(values, dtype=np.float64)
    return float(values[0]) if shape == () else values.reshape(shape)


# ----------------------------------------------------------------------------- autocorrelation

def autocovariance(x):
    r"""Empirical autocovariance :math:`\hat\gamma_k = N^{-1}\sum_{n=1}^{N-k}(x_n-\bar x)(x_{n+k}-\bar x)`,
    k = 0 .. N-1, by FFT (zero-padded, so not circular).

    Parameters
    ----------
    x : (N,) or (N, ...) array, time along axis 0 (each other entry a separate series)

    Returns
    -------
    (N,) or (N, ...) array
    """
    y, shape = _series(x, min_length=2)
    n = y.shape[0]
    y = y - y.mean(axis=0)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(y, n=size, axis=0)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=0)[:n] / n
    return acov.reshape((n,) + shape)


def autocorrelation(x):
    r"""Empirical autocorrelation :math:`\hat\rho_k = \hat\gamma_k/\hat\gamma_0` (:func:`autocovariance`);
    a constant series gets :math:`\hat\rho_0 = 1`, :math:`\hat\rho_{k>0} = 0`."""
    acov = autocovariance(x)
    var = acov[0]
    safe = np.where(var > 0, var, 1.0)
    rho = acov / safe
    rho[1:] = np.where(var > 0, rho[1:], 0.0)
    rho[0] = 1.0
    return rho


def _sokal(rho, c, absolute):
    """tau and window M of one autocorrelation sequence: smallest M with M >= c tau(M) / 2
    (tau of |rho| if ``absolute``)."""
    taus = 1.0 + 2.0 * np.cumsum(rho[1:])           # taus[M - 1] = tau(M)
    rule = 1.0 + 2.0 * np.cumsum(np.abs(rho[1:])) if absolute else taus
    window = np.arange(1, max(len(rho) // 4, 2))
    ok = np.flatnonzero(window >= c * rule[:len(window)] / 2.0)
    if not ok.size:
        return np.nan, len(rho) - 1
    m = int(window[ok[0]])
    return float(taus[m - 1]), m


def _geyer(rho):
    """tau and last lag of Geyer's initial monotone sequence estimator."""
    n_pairs = len(rho) // 2
    gamma = rho[:2 * n_pairs:2] + rho[1:2 * n_pairs:2]    # Gamma_m / gamma_0
    neg = np.flatnonzero(gamma <= 0.0)
    k = int(neg[0]) if neg.size else n_pairs
    gamma = np.minimum.accumulate(gamma[:k])
    return float(-1.0 + 2.0 * gamma.sum()), 2 * k - 1


def integrated_autocorrelation_time(x, *, method="sokal_abs", c=None, full=False):
    r"""Integrated autocorrelation time :math:`\tau_{\text{int}} = 1 + 2\sum_{k\ge1}\rho_k` of a
    series, in units of its records.

    Parameters
    ----------
    x : (N,) or (N, ...) array
        Time along axis 0 (e.g. ``run.q``, one column per coordinate: each is estimated
        separately). Drop the burn-in first.
    method : "sokal_abs" (default), "sokal" or "geyer"
        Sokal's (1997) adaptive window: :math:`\hat\tau(M) = 1 + 2\sum_{k=1}^{M}\hat\rho_k`,
        M the smallest window with :math:`M \ge c\,\hat\tau(M)/2` ("sokal"), or with
        :math:`M \ge c\,(1 + 2\sum_{k\le M}|\hat\rho_k|)/2` ("sokal_abs", safe for the
        oscillating autocorrelations of underdamped Langevin); or Geyer's (1992) initial
        monotone sequence, for reversible chains only (see the module's docstring).
    c : float, optional
        The window constant of "sokal" (default 5) or "sokal_abs" (default 10).
    full : bool
        Return an :class:`AutocorrelationTime` (tau, window M, stderr) instead of tau.
        ``stderr`` is Sokal's :math:`\tau\sqrt{2(2M+1)/N}` (Sokal 1997, Eq. 3.19), for
        either method with its own M.

    Returns
    -------
    float, or array of the trailing shape of x (or an AutocorrelationTime of those);
    nan, with a RuntimeWarning, where no window M < N/4 meets the rule (too short a series)

    Notes
    -----
    The windowed estimate is biased low by :math:`2\sum_{k>M}\rho_k` (negligible when
    :math:`N \gg \tau`: e.g. :math:`2a^{M+1}/(1-a)` for AR(1)); the estimate is reliable
    only when N is at least about 1000 tau (Sokal 1997).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.signal import lfilter
    >>> a = 0.8; e = np.random.default_rng(0).standard_normal(200_000)
    >>> x = lfilter([np.sqrt(1 - a * a)], [1, -a], e)        # AR(1): tau = (1 + a)/(1 - a) = 9
    >>> round(integrated_autocorrelation_time(x), 1)           # stderr 0.3 (full=True)
    9.2
    """
    if method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {method!r}")
    if c is None:
        c = SOKAL_C.get(method)
    elif not (isinstance(c, (int, float)) and not isinstance(c, bool) and np.isfinite(c) and c > 0):
        raise ValueError(f"c: must be a positive number, got {c!r}")
    y, shape = _series(x)
    rho = autocorrelation(y)
    n = y.shape[0]
    taus, windows = [], []
    for j in range(y.shape[1]):
        tau, m = _geyer(rho[:, j]) if method == "geyer" else _sokal(rho[:, j], c, method == "sokal_abs")
        taus.append(tau)
        windows.append(m)
    taus, windows = np.array(taus), np.array(windows)
    if np.isnan(taus).any():
        warnings.warn(f"integrated_autocorrelation_time: {n} records are too few for the window "
                      f"(no M < N/4 with M >= c tau(M)/2): tau is nan; run longer (N >~ 1000 tau)",
                      RuntimeWarning, stacklevel=2)
    if not full:
        return _shaped(taus, shape)
    stderr = taus * np.sqrt(2.0 * (2.0 * windows + 1.0) / n)
    window = int(windows[0]) if shape == () else windows.reshape(shape)
    return AutocorrelationTime(_shaped(taus, shape), window, _shaped(stderr, shape))


def effective_sample_size(x, *, method="sokal_abs", c=None):
    r"""Effective sample size :math:`N/\tau_{\text{int}}` of the time average of a series
    (:func:`integrated_autocorrelation_time`, same arguments)."""
    n = np.asarray(x).shape[0] if np.ndim(x) else 0
    return n / integrated_autocorrelation_time(x, method=method, c=c)


def time_average(x, *, burn_in=0, method="sokal_abs", c=None):
    r"""Time average of a series with an honest error bar.

    .. math::

        \bar x = \frac1n\sum_{i=1}^{n} x_i,\qquad
        \operatorname{se}(\bar x) = \sqrt{\frac{s^2\,\tau_{\text{int}}}{n}},\qquad
        N_{\text{eff}} = \frac{n}{\tau_{\text{int}}},

    :math:`s^2` the sample variance (divisor n), :math:`\tau_{\text{int}}` from
    :func:`integrated_autocorrelation_time`, all in units of records.

    Parameters
    ----------
    x : (N,) or (N, ...) array, time along axis 0
    burn_in : int
        Number of leading records dropped (>= 0).
    method, c : as in :func:`integrated_autocorrelation_time`

    Returns
    -------
    TimeAverage (mean, stderr, tau, ess), each a float or an array of x's trailing shape
    """
    if isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)) or burn_in < 0:
        raise ValueError(f"burn_in: must be an integer >= 0 (records), got {burn_in!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError(f"x: must be a series (time along axis 0), got a scalar {x!r}")
    if x.shape[0] - burn_in < 4:
        raise ValueError(f"burn_in: leaves {x.shape[0] - burn_in} of {x.shape[0]} records; need at least 4")
    y = x[int(burn_in):]
    n = y.shape[0]
    tau = integrated_autocorrelation_time(y, method=method, c=c)
    mean = y.mean(axis=0)
    stderr = np.sqrt(y.var(axis=0) * tau / n)
    as_out = (lambda v: float(v)) if y.ndim == 1 else np.asarray
    return TimeAverage(as_out(mean), as_out(stderr), tau, as_out(n / np.asarray(tau)))


def mean_with_error(x, *, burn_in=0, method="sokal_abs", c=None):
    r"""(mean, standard error) of the time average of a series: :math:`\sqrt{s^2\tau_{\text{int}}/n}`
    (:func:`time_average`, same arguments)."""
    avg = time_average(x, burn_in=burn_in, method=method, c=c)
    return avg.mean, avg.stderr


def split_rhat(chains):
    r"""Split :math:`\hat R` (Gelman–Rubin, split chains; Vehtari et al. 2021, without rank
    normalization) of independent chains of the same length.

    Each of the m chains is split into halves (2m chains of n draws, the middle draw of an
    odd length dropped); with W the mean within-chain variance (divisor n - 1) and B/n the
    variance of the chain means,

    .. math::

        \hat R = \sqrt{\frac{\frac{n-1}{n}W + \frac{B}{n}}{W}}.

    Near 1 (< 1.01) when the chains have mixed.

    Parameters
    ----------
    chains : (m, N) array (e.g. ``np.stack([run.q[:, 0] for run in runs])``)
    """
    x = np.asarray(chains, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 4:
        raise ValueError(f"chains: must be an (m, N) array with N >= 4, got shape {x.shape}")
    half = x.shape[1] // 2
    x = np.concatenate([x[:, :half], x[:, -half:]], axis=0)
    n = x.shape[1]
    w = x.var(axis=1, ddof=1).mean()
    b_over_n = x.mean(axis=1).var(ddof=1)
    return float(np.sqrt(((n - 1) / n * w + b_over_n) / w))


# ----------------------------------------------------------------------------- export

def _xarray():
    try:
        import xarray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_xarray needs xarray: pip install 'sdekit[arviz]'") from e
    return xarray


def _is_trajectory(run):
    return hasattr(run, "observables") and hasattr(run, "t") and not hasattr(run, "n_alive")


def _is_ensemble(run):
    return hasattr(run, "n_alive") and hasattr(run, "mean")


def _trajectory_arrays(run):
    """name -> (array, extra dims) of a Trajectory's recorded series (time first)."""
    out = {"q": (np.asarray(run.q), ("dim",))}
    if run.p is not None:
        out["p"] = (np.asarray(run.p), ("dim",))
    if getattr(run, "p_O", None) is not None:
        out["p_O"] = (np.asarray(run.p_O), ("dim",))
    out["xi"] = (np.asarray(run.xi), ())
    for name, value in run.observables.items():
        value = np.asarray(value)
        out[name] = (value, tuple(f"{name}_dim_{i}" for i in range(value.ndim - 1)))
    return out


def to_xarray(run):
    """A run as an :class:`xarray.Dataset`.

    * Trajectory: variables q, p, p_O (where recorded), xi and the user's observables,
      dims ``time`` (coordinate: the record times ``run.t``) and ``dim`` (coordinates
      0 .. d-1).
    * Ensemble: final states q, p, xi (dims ``path``, ``dim``), and per record (dim ``time``)
      ``mean_<name>``, ``stderr_<name>`` of every averaged observable and ``n_alive``.

    The run's scheme word and step are attributes. Needs xarray (``sdekit[arviz]``).
    """
    xr = _xarray()
    attrs = _attrs(run)
    if _is_trajectory(run):
        data = {name: (("time",) + dims, value) for name, (value, dims) in _trajectory_arrays(run).items()}
        coords = {"time": np.asarray(run.t), "dim": np.arange(np.asarray(run.q).shape[1])}
        return xr.Dataset(data, coords=coords, attrs=attrs)
    if _is_ensemble(run):
        data = {"q": (("path", "dim"), np.asarray(run.q)), "xi": (("path",), np.asarray(run.xi)),
                "n_alive": (("time",), np.asarray(run.n_alive))}
        if run.p is not None:
            data["p"] = (("path", "dim"), np.asarray(run.p))
        d = np.asarray(run.q).shape[1]
        for name, mean in run.mean.items():
            mean = np.asarray(mean)
            if name in ("q", "p", "q2", "p2", "p_O", "p2_O") and mean.shape[1:] == (d,):
                dims = ("time", "dim")
            else:
                dims = ("time",) + tuple(f"{name}_dim_{i}" for i in range(mean.ndim - 1))
            data[f"mean_{name}"] = (dims, mean)
            data[f"stderr_{name}"] = (dims, np.asarray(run.stderr(name)))
        coords = {"time": np.asarray(run.t), "dim": np.arange(np.asarray(run.q).shape[1]),
                  "path": np.arange(np.asarray(run.q).shape[0])}
        return xr.Dataset(data, coords=coords, attrs=attrs)
    raise TypeError(f"run: expected a Trajectory or an Ensemble, got {type(run).__name__}")


def _attrs(run):
    spec, state = getattr(run, "spec", None), getattr(run, "state", None)
    attrs = {}
    word = getattr(getattr(spec, "scheme", None), "word", None)
    if word is not None:
        attrs["scheme"] = str(word)
    for name in ("h", "t0"):
        value = getattr(spec, name, None)
        if isinstance(value, (int, float)):
            attrs[name] = float(value)
    if state is not None:
        attrs["step"] = int(state.step)
    return attrs


def to_inference_data(runs, *, burn_in=0):
    """Runs as an ArviZ :class:`arviz.InferenceData`, its ``posterior`` group holding the
    states with ArviZ's dims ``chain`` and ``draw``.

    Parameters
    ----------
    runs : Trajectory, list of Trajectory, or Ensemble
        * A Trajectory or a list of them (independent runs, e.g. different seeds, the same
          number of records): chain = run, draw = record; variables q, p, p_O, xi and the
          observables (q, p with dim ``dim``). ArviZ's ``ess`` and ``rhat`` then apply.
          ``p_O`` is nan at record 0 (no O yet): use ``burn_in >= 1`` for its diagnostics.
        * An Ensemble: chain = path, one draw each (its final state; diverged paths dropped).
    burn_in : int
        Leading records dropped from each Trajectory.

    Needs arviz and xarray (``pip install "sdekit[arviz]"``).
    """
    try:
        import arviz
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_inference_data needs arviz: pip install 'sdekit[arviz]'") from e
    if isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)) or burn_in < 0:
        raise ValueError(f"burn_in: must be an integer >= 0 (records), got {burn_in!r}")
    if _is_ensemble(runs):
        alive = np.setdiff1d(np.arange(np.asarray(runs.q).shape[0]), np.asarray(runs.diverged, dtype=int))
        data = {"q": np.asarray(runs.q)[alive, None], "xi": np.asarray(runs.xi)[alive, None]}
        if runs.p is not None:
            data["p"] = np.asarray(runs.p)[alive, None]
        with warnings.catch_warnings():   # "more chains than draws": one draw per path, by design
            warnings.simplefilter("ignore", UserWarning)
            idata = arviz.from_dict(posterior=data, dims={"q": ["dim"], "p": ["dim"]})
        return _with_attrs(idata, runs)
    runs = [runs] if _is_trajectory(runs) else list(runs)
    if not runs or not all(_is_trajectory(r) for r in runs):
        raise TypeError("runs: expected a Trajectory, a list of Trajectory or an Ensemble")
    arrays = [_trajectory_arrays(r) for r in runs]
    lengths = {len(r.t) for r in runs}
    names = set(arrays[0])
    if len(lengths) != 1 or any(set(a) != names for a in arrays):
        raise ValueError(f"runs: need the same records and variables in every run (lengths {sorted(lengths)})")
    if burn_in > lengths.pop() - 1:
        raise ValueError(f"burn_in: {burn_in} leaves no record")
    posterior = {name: np.stack([a[name][0][burn_in:] for a in arrays]) for name in arrays[0]}
    dims = {name: list(d) for name, (_, d) in arrays[0].items() if d}
    coords = {"draw": np.arange(burn_in, burn_in + posterior["q"].shape[1])}
    return _with_attrs(arviz.from_dict(posterior=posterior, dims=dims, coords=coords), runs[0])


def _with_attrs(idata, run):
    idata.posterior.attrs.update(_attrs(run))
    return idata
