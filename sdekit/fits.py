r"""Observed orders of convergence and the error curves they are fitted to.

* :func:`fit_order` — the observed order p in :math:`|e(h)| \approx C h^p`, with a
  confidence interval, by weighted least squares on :math:`\log|e|` vs :math:`\log h`
  (a :class:`Fit`);
* :func:`asymptotic_caveat` — why such a slope is not an asymptotic order (a sign
  change, too short a span in h, a bending curve), or "";
* :class:`Curve` — the estimates, standard errors, errors and divergences of one
  observable for one scheme over a list of steps, with its fit;
* :class:`ErrorStudy` — a set of curves with ``.table()``, ``.to_csv()``, ``.to_json()``
  and ``.plot()`` (log-log |error| vs h, fitted lines, reference slopes).

These are the records; the studies that produce them, :func:`sdekit.analysis.stationary_bias`
and :func:`sdekit.analysis.weak_error`, live in :mod:`sdekit.analysis`, which re-exports
every name defined here.
"""
import csv
import json
import math
from dataclasses import dataclass, field

import numpy as np

from ._checks import finite_array, real
from .schemes import Scheme

# ----------------------------------------------------------------------------- order fit

@dataclass
class Fit:
    """Observed order: :math:`\\log|e| = \\log C + p \\log h` fitted by weighted least squares.

    Attributes
    ----------
    order, stderr : the slope p and its standard error
    ci : (low, high) confidence interval of p at ``level``
    prefactor : C
    used : boolean mask of the points used (resolved at ``min_significance`` SE)
    chi2, dof : weighted residual sum of squares and degrees of freedom
    sign_change : True if the used errors do not all have the same sign (the fit of
        log|e| is then not meaningful)
    asymptotic : False if the data say the fitted slope is not an asymptotic order
        (see :func:`asymptotic_caveat`); ``caveat`` then says why ("" otherwise)
    """

    order: float
    stderr: float
    ci: tuple
    level: float
    prefactor: float
    used: np.ndarray
    chi2: float
    dof: int
    sign_change: bool
    caveat: str = ""

    @property
    def asymptotic(self):
        return not self.caveat

    def __str__(self):
        flag = "  [sign change]" if self.sign_change else ""
        if self.caveat and not self.sign_change:
            flag = f"  [not asymptotic: {self.caveat}]"
        return (f"order {self.order:.2f} +- {self.stderr:.2f}  "
                f"({100 * self.level:.0f}% CI [{self.ci[0]:.2f}, {self.ci[1]:.2f}], "
                f"{int(self.used.sum())} points){flag}")

    def to_dict(self):
        return {"order": self.order, "stderr": self.stderr, "ci": list(self.ci), "level": self.level,
                "prefactor": self.prefactor, "used": self.used.tolist(), "chi2": self.chi2,
                "dof": self.dof, "sign_change": self.sign_change, "asymptotic": self.asymptotic,
                "caveat": self.caveat}


def _vector(name, value):
    try:
        arr = finite_array(name, value).reshape(-1)
    except ValueError:
        raise ValueError(f"{name}: must be a non-empty sequence of finite numbers, got {value!r}") from None
    return arr


def fit_order(hs, errors, stderr, *, min_significance=2.0, level=0.95):
    r"""Observed order of convergence with a confidence interval.

    Fits :math:`y_k = a + p\,x_k` with :math:`x = \log h`, :math:`y = \log|e|` by
    weighted least squares, weights :math:`w_k = 1/\sigma_k^2` where
    :math:`\sigma_k = \mathrm{SE}_k/|e_k|` is the standard error of :math:`\log|e_k|`
    (delta method). The covariance :math:`(X^TWX)^{-1}` is inflated by
    :math:`\chi^2/\nu` when that exceeds one (:math:`\nu = n - 2`: higher-order terms or
    underestimated errors), and the interval then uses Student's t with
    :math:`\nu` degrees of freedom (else the normal quantile).

    Parameters
    ----------
    hs, errors, stderr : sequences of equal length
        Steps, signed errors and their standard errors (> 0).
    min_significance : float
        Only points with :math:`|e| \ge` ``min_significance`` SE are used: an error
        buried in noise carries no information about the slope, and its logarithm is
        biased.
    level : float
        Confidence level of the interval (default 0.95).

    Returns
    -------
    Fit

    Raises
    ------
    ValueError
        For mismatched lengths, non-positive steps or standard errors, or fewer than
        three resolved points.
    """
    hs, errors, stderr = _vector("hs", hs), _vector("errors", errors), _vector("stderr", stderr)
    if not (hs.shape == errors.shape == stderr.shape):
        raise ValueError(f"errors: hs, errors and stderr must have equal lengths, got "
                         f"{hs.size}, {errors.size}, {stderr.size}")
    if np.any(hs <= 0):
        raise ValueError(f"hs: steps must be positive, got {hs.tolist()}")
    if np.any(stderr <= 0):
        raise ValueError(f"stderr: must be positive, got {stderr.tolist()}")
    real("min_significance", min_significance, low=0.0)
    level = real("level", level, low=0.0, low_open=True)
    if level >= 1:
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    used = np.abs(errors) >= min_significance * stderr
    used &= errors != 0
    n = int(used.sum())
    if n < 3:
        raise ValueError(f"errors: only {n} of {errors.size} errors are resolved at "
                         f"{min_significance} standard errors; at least 3 are needed to fit an order")
    x, y = np.log(hs[used]), np.log(np.abs(errors[used]))
    w = (np.abs(errors[used]) / stderr[used]) ** 2
    X = np.column_stack([np.ones(n), x])
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    a, p = cov @ (X.T @ (w * y))
    chi2 = float(np.sum(w * (y - a - p * x) ** 2))
    dof = n - 2
    scale = chi2 / dof
    from scipy import stats  # deferred: keeps `import sdekit` light

    if scale > 1.0:
        se = math.sqrt(cov[1, 1] * scale)
        z = stats.t.ppf(0.5 + level / 2, dof)
    else:
        se = math.sqrt(cov[1, 1])
        z = stats.norm.ppf(0.5 + level / 2)
    signs = np.sign(errors[used])
    sign_change = bool(np.any(signs != signs[0]))
    return Fit(order=float(p), stderr=se, ci=(float(p - z * se), float(p + z * se)), level=level,
               prefactor=float(math.exp(a)), used=used, chi2=chi2, dof=dof, sign_change=sign_change,
               caveat=asymptotic_caveat(hs[used], errors[used], stderr[used]))


MIN_SPAN = 2.0
"""Smallest ratio h_max/h_min of the resolved steps for a slope to count as an order."""
BEND_SLOPE = 1.0
"""Largest change of the local slope d log|e| / d log h across the fitted steps."""
BEND_SIGNIFICANCE = 3.0
"""Standard errors at which the curvature of log|e| vs log h counts as resolved."""


def asymptotic_caveat(hs, errors, stderr):
    r"""Why the slope of :math:`\log|e|` vs :math:`\log h` through these points is not an
    asymptotic order, or "" if nothing in the data says so.

    An order p is the h -> 0 behaviour :math:`e \approx C h^p`; a fitted slope is one
    only where a single power law describes the points and they cover enough of the
    h-axis. The points (the resolved ones :func:`fit_order` uses) are flagged when

    * the errors change sign ("sign change"): :math:`\log|e|` crosses a zero, no power law;
    * they span less than a factor :data:`MIN_SPAN` = 2 in h ("only h in [a, b]"): the
      slope is then a local one, e.g. of a bias that stays below the noise until just
      before a stability limit and is fitted on that rise alone;
    * the curve bends ("the local slope changes by ..."): in the weighted quadratic fit
      :math:`\log|e| = a + p\,\xi + c\,\xi^2`, :math:`\xi = \log h - \bar x` (weights
      as in :func:`fit_order`, covariance from the standard errors alone), the
      curvature c is resolved at :data:`BEND_SIGNIFICANCE` = 3 standard errors *and*
      the local slope :math:`p + 2c\xi` changes by more than :data:`BEND_SLOPE` = 1
      across the fitted range (:math:`2|c|\,\log(h_{max}/h_{min})`). Both are needed:
      precise data resolve the small higher-order terms of a genuinely second-order
      bias (a chi-square test alone rejects those), and noisy data show large
      apparent curvature that is not resolved.

    An exact power law passes (c = 0, span permitting); so does one with noise
    consistent with its standard errors, except for a 3-sigma fluctuation that is
    also large.
    """
    hs, errors, stderr = (np.asarray(v, dtype=float).reshape(-1) for v in (hs, errors, stderr))
    signs = np.sign(errors)
    if np.any(signs != signs[0]):
        return "sign change"
    span = float(hs.max() / hs.min())
    if span < MIN_SPAN:
        return (f"only h in [{hs.min():.3g}, {hs.max():.3g}] resolved (a factor {span:.2g} < "
                f"{MIN_SPAN:g}): a local slope")
    if hs.size < 3:
        return ""
    x, y = np.log(hs), np.log(np.abs(errors))
    w = (np.abs(errors) / stderr) ** 2
    xi = x - np.sum(w * x) / np.sum(w)
    X = np.column_stack([np.ones_like(xi), xi, xi ** 2])
    try:
        cov = np.linalg.inv(X.T @ (w[:, None] * X))
    except np.linalg.LinAlgError:
        return ""
    c = float((cov @ (X.T @ (w * y)))[2])
    change = 2 * abs(c) * float(x.max() - x.min())
    if abs(c) >= BEND_SIGNIFICANCE * math.sqrt(cov[2, 2]) and change > BEND_SLOPE:
        return (f"the curve bends: the local slope changes by {change:.2g} across "
                f"h in [{hs.min():.3g}, {hs.max():.3g}]")
    return ""


# ----------------------------------------------------------------------------- results

@dataclass
class Curve:
    """Estimates of one observable for one scheme over a list of steps.

    ``errors`` is ``values - exact`` (None if no exact value is known); ``stderr`` the
    standard errors of ``values`` (and of ``errors``: the exact value has none, a
    sampled reference's is included); ``diverged`` the number of paths lost at each
    step size; ``extra`` further per-step columns (e.g. the exact chain error of a
    linear system).
    """

    kind: str
    scheme: str
    system: str
    observable: str
    hs: np.ndarray
    values: np.ndarray
    stderr: np.ndarray
    exact: float | None
    errors: np.ndarray | None
    diverged: np.ndarray
    n_paths: int
    method: str
    extra: dict = field(default_factory=dict)
    fit: Fit | None = None
    fit_note: str = ""

    def fit_errors(self, min_significance=2.0):
        """Fit the order of ``errors`` (stores it in ``.fit`` or the reason in ``.fit_note``)."""
        if self.errors is None:
            self.fit, self.fit_note = None, "no exact value: no error to fit"
            return self
        try:
            self.fit = fit_order(self.hs, self.errors, self.stderr, min_significance=min_significance)
            self.fit_note = ""
        except ValueError as err:  # too few resolved points: recorded, shown in the table
            self.fit, self.fit_note = None, str(err)
        return self

    def rows(self):
        for k, h in enumerate(self.hs):
            row = {"kind": self.kind, "scheme": self.scheme, "system": self.system,
                   "observable": self.observable, "h": float(h), "estimate": float(self.values[k]),
                   "stderr": float(self.stderr[k]),
                   "exact": None if self.exact is None else float(self.exact),
                   "error": None if self.errors is None else float(self.errors[k]),
                   "diverged": int(self.diverged[k]), "n_paths": self.n_paths}
            row.update({name: float(col[k]) for name, col in self.extra.items()})
            row["order"] = None if self.fit is None else self.fit.order
            row["order_low"] = None if self.fit is None else self.fit.ci[0]
            row["order_high"] = None if self.fit is None else self.fit.ci[1]
            yield row

    def to_dict(self):
        arr = lambda a: None if a is None else np.asarray(a).tolist()
        return {"kind": self.kind, "scheme": self.scheme, "system": self.system,
                "observable": self.observable, "hs": arr(self.hs), "values": arr(self.values),
                "stderr": arr(self.stderr), "exact": self.exact, "errors": arr(self.errors),
                "diverged": arr(self.diverged), "n_paths": self.n_paths, "method": self.method,
                "extra": {k: arr(v) for k, v in self.extra.items()},
                "fit": None if self.fit is None else self.fit.to_dict(), "fit_note": self.fit_note}


_LABELS = {"q2": r"$\langle q^2\rangle$ (configurational)", "p2": r"$\langle p^2\rangle$ (kinetic, on-step)",
           "p2_O": r"$\langle p^2\rangle$ (kinetic, after O)", "q": r"$\langle q\rangle$",
           "p": r"$\langle p\rangle$", "p_O": r"$\langle p\rangle$ after O"}


class ErrorStudy:
    """A set of :class:`Curve` (schemes x observables) with printing, files and plots.

    Attributes
    ----------
    curves : list of Curve
    settings : dict of the run's parameters (written to JSON)
    """

    def __init__(self, curves, settings=None):
        self.curves = list(curves)
        self.settings = dict(settings or {})

    def __add__(self, other):
        return ErrorStudy(self.curves + other.curves, {**self.settings, **other.settings})

    def __repr__(self):
        return f"ErrorStudy({len(self.curves)} curves)\n{self.table()}"

    def curve(self, scheme=None, observable=None):
        """The one curve matching ``scheme`` and ``observable`` (None matches any)."""
        word = None if scheme is None else Scheme(scheme).word
        found = [c for c in self.curves if (word is None or c.scheme == word)
                 and (observable is None or c.observable == observable)]
        if len(found) != 1:
            raise ValueError(f"scheme/observable: {len(found)} curves match {scheme!r}, {observable!r}")
        return found[0]

    # one-curve conveniences
    @property
    def fit(self):
        return self.curve().fit

    @property
    def errors(self):
        return self.curve().errors

    @property
    def stderr(self):
        return self.curve().stderr

    @property
    def values(self):
        return self.curve().values

    def table(self):
        """A printable table: one row per (scheme, observable, h), then the fitted orders."""
        lines = []
        for c in self.curves:
            exact = "unknown" if c.exact is None else f"{c.exact:.6g}"
            lines.append(f"{c.scheme} on {c.system}: {c.kind} of {c.observable} (exact {exact}), "
                         f"{c.n_paths} paths; stderr: {c.method}")
            head = f"  {'h':>7} {'estimate':>11} {'stderr':>9} {'error':>11} {'err/SE':>7} {'diverged':>8}"
            extra = list(c.extra)
            head += "".join(f" {name:>14}" for name in extra)
            lines.append(head)
            for k, h in enumerate(c.hs):
                err = "" if c.errors is None else f"{c.errors[k]:11.3e}"
                z = "" if c.errors is None else f"{c.errors[k] / c.stderr[k]:7.1f}"
                row = (f"  {h:7.4g} {c.values[k]:11.6f} {c.stderr[k]:9.2e} {err:>11} {z:>7} "
                       f"{int(c.diverged[k]):8d}")
                row += "".join(f" {c.extra[name][k]:14.4e}" for name in extra)
                lines.append(row)
            lines.append(f"  fitted {c.fit}" if c.fit is not None else f"  no order fitted: {c.fit_note}")
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self):
        """The fitted orders, one line per curve."""
        out = ["observed orders (weighted LS on log|error| vs log h; points resolved at >= 2 SE):"]
        for c in self.curves:
            text = str(c.fit) if c.fit is not None else "not resolved"
            lost = int(np.sum(c.diverged))
            lost = f"; {lost} path(s) diverged (masked, see table)" if lost else ""
            out.append(f"  {c.scheme:>8} {c.observable:>5}: {text}{lost}")
        return "\n".join(out)

    def to_csv(self, path):
        """One row per (curve, h) with the fit's order and interval repeated."""
        rows = [row for c in self.curves for row in c.rows()]
        names = list(dict.fromkeys(k for row in rows for k in row))
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in names})
        return path

    def to_json(self, path):
        with open(path, "w") as fh:
            json.dump({"settings": self.settings, "curves": [c.to_dict() for c in self.curves]}, fh, indent=1)
        return path

    def plot(self, target=None, *, slopes=(1, 2), title=None):
        """Log-log |error| vs h with error bars, fitted lines and reference slopes.

        Parameters
        ----------
        target : str/path (a figure file is written, one panel per observable),
            a matplotlib Axes (everything drawn on it), or None (a new figure).
        slopes : reference orders drawn as grey lines :math:`\\propto h^p`.

        Filled markers are positive errors, open markers negative ones. A fit the data
        say is not an asymptotic order (:func:`asymptotic_caveat`) gets no line and is
        labelled "not asymptotic". The legend (proxy artists: a neutral colour patch per
        scheme, black markers for the signs) sits outside the axes, below them. Returns
        the figure.
        """
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        import matplotlib

        to_file = isinstance(target, (str, bytes)) or hasattr(target, "__fspath__")
        if to_file and _headless():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        curves = [c for c in self.curves if c.errors is not None]
        if not curves:
            raise ValueError("target: nothing to plot, no curve has an exact value to measure errors against")
        observables = list(dict.fromkeys(c.observable for c in curves))
        if hasattr(target, "plot") and hasattr(target, "figure"):
            axes, fig = {o: target for o in observables}, target.figure
        else:
            fig, ax = plt.subplots(1, len(observables), figsize=(5.2 * len(observables), 4.3), squeeze=False)
            axes = dict(zip(observables, ax[0]))
        colors, handles = {}, {o: [] for o in observables}
        for c in curves:
            ax = axes[c.observable]
            color = colors.setdefault(c.scheme, f"C{len(colors)}")
            _plot_curve(ax, c, color)
            handles[c.observable].append(Patch(facecolor=color, edgecolor=color, label=_legend_label(c)))
        for obs, ax in axes.items():
            _reference_slopes(ax, [c for c in curves if c.observable == obs], slopes)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("step size h")
            ax.set_ylabel(f"|error| in {_LABELS.get(obs, obs)}")
            ax.grid(True, which="both", alpha=0.25)
            own = handles[obs] + [line for line in ax.get_lines() if line.get_label().startswith("slope ")]
            own += [Line2D([], [], color="k", ls="--", lw=1, label="fitted power law"),
                    Line2D([], [], color="k", marker="o", ls="none", ms=4, label="filled: error > 0"),
                    Line2D([], [], color="k", marker="o", mfc="none", ls="none", ms=4,
                           label="open: error < 0")]
            ax.legend(handles=own, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                      ncol=2, frameon=False)
            kind = curves[0].kind
            ax.set_title(title or f"{kind}: {curves[0].system}", fontsize=10)
        fig.tight_layout()
        if to_file:
            fig.savefig(target, dpi=120, bbox_inches="tight")
            plt.close(fig)
        return fig


def _headless():
    import os

    return not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")


def _plot_curve(ax, c, color):
    mag = np.abs(c.errors)
    low = np.minimum(c.stderr, 0.9 * mag)          # log axes: keep the lower bar above zero
    ax.errorbar(c.hs, mag, yerr=[low, c.stderr], fmt="none", ecolor=color, capsize=3, lw=1)
    pos = c.errors > 0
    ax.plot(c.hs[pos], mag[pos], "o", color=color, label="_nolegend_")
    ax.plot(c.hs[~pos], mag[~pos], "o", mfc="none", color=color, label="_nolegend_")
    if c.fit is not None and c.fit.asymptotic:  # drawn over the resolved points it was fitted to
        used = c.hs[c.fit.used]
        hh = np.geomspace(used.min(), used.max(), 50)
        ax.plot(hh, c.fit.prefactor * hh ** c.fit.order, "--", color=color, lw=1)


def _legend_label(c):
    if c.fit is None:
        return f"{c.scheme} (no order resolved)"
    text = f"{c.scheme} (p = {c.fit.order:.2f} [{c.fit.ci[0]:.2f}, {c.fit.ci[1]:.2f}]"
    return text + (")" if c.fit.asymptotic else ": not asymptotic, no line)")


def _reference_slopes(ax, curves, slopes):
    hs = np.concatenate([c.hs for c in curves])
    mags = np.concatenate([np.abs(c.errors) for c in curves])
    h0, h1 = hs.min(), hs.max()
    anchor = np.median(mags[mags > 0]) if np.any(mags > 0) else 1.0
    hh = np.geomspace(h0, h1, 20)
    hm = math.sqrt(h0 * h1)
    for k, p in enumerate(slopes):
        ax.plot(hh, anchor * (hh / hm) ** p, color="0.5", lw=1.2, ls=[":", "-.", "--", "-"][k % 4],
                label=f"slope {p} (reference)")
