r"""Time-dependent parameters: gamma(t), kT(t), sigma_A(t) and the per-step coefficient tables.

A non-autonomous Langevin SDE

.. math::

    dq = M^{-1} p\,dt, \qquad
    dp = F(q, t)\,dt - \gamma(t) p\,dt + \sigma(t) M^{1/2} dW, \qquad
    \sigma(t) = \sqrt{2\gamma(t) k_BT(t)},

is made autonomous by adding the clock t with :math:`dt/ds = 1` to the A piece
(Hairer, Lubich & Wanner, *Geometric Numerical Integration*, Springer 2006, ch. II
(splitting methods); Leimkuhler & Matthews, *Molecular Dynamics*, Springer 2015, ch. 7). The
other pieces leave t fixed, so their exact flows are today's letters with
:math:`\gamma, k_BT` frozen at the letter's clock time: O over a sub-step
:math:`\delta` at time t is the exact OU flow with :math:`\gamma(t), \sigma(t)`,
D uses :math:`k_BT(t)`, B the force :math:`F(q, t)`. Step n starts at
:math:`t_n = t_0 + n h` and letter k acts at
:math:`t_n + h\,` :attr:`~sdekit.schemes.Scheme.substep_times` ``[k]``; the
overdamped schemes use :math:`F(q_n, t_n)` and :math:`k_BT(t_n)`.

:func:`coefficient_tables` gives every letter's coefficients for a block of steps:
the numpy backend and the compiled kernels share this one definition. When nothing
depends on t the backends run the constant-parameter code, and callables that return
constants give bitwise the same numbers.

Examples
--------
Annealing: BAOAB on the double well while kT falls from 1 to 1/11 over t in [0, 10]
(``t0`` shifts the clock; a resumed run continues it):

>>> import sdekit
>>> run = sdekit.simulate("BAOAB", sdekit.systems.DoubleWell(), 0.05, 200,
...                       kT=lambda t: 1.0 / (1.0 + t), seed=0, backend="numpy")
>>> float(run.t[-1])
10.0

A force F(q, t) comes from :func:`sdekit.systems.custom` with ``time_dependent=True``.
"""
import math
import numbers
from dataclasses import dataclass

import numpy as np

from . import operators as ops
from ._checks import integer, real
from .letters import COEFFICIENTS


def check(name, value, low=0.0, allow_none=False):
    """A parameter that is a real number >= ``low`` or a callable of t (checked when called)."""
    if callable(value):
        return value
    return real(name, value, low=low, allow_none=allow_none)


def value_at(name, f, t):
    r"""``f(t)`` as a float, or f itself if it is a constant; ValueError naming ``name``,
    the value and the time if it is negative, non-finite or not a real number."""
    if not callable(f):
        return f
    value = f(t)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: {name}(t) must be a finite real number >= 0, got {value!r} at t={t!r}")
    return float(value)


def describe(value):
    """JSON-able description: the number, or "callable <module>.<qualname>"."""
    if callable(value):
        module = getattr(value, "__module__", None) or "?"
        return f"callable {module}.{getattr(value, '__qualname__', type(value).__name__)}"
    return value


def check_spec(spec):
    """Refuse what a time-dependent spec cannot run; evaluate the callables once at t0.

    A word with B but no A never moves the clock within a step, so a lazily reused
    force F(q, t) would go stale: such a word with a time-dependent force is refused.
    """
    scheme = spec.scheme
    reads = any(e.letter.needs_force for e in scheme.entries)
    clocked = any(e.letter.clock and e.letter.moves_positions for e in scheme.entries)
    if spec.system.time_dependent and not scheme.overdamped and reads and not clocked:
        raise ValueError(f"scheme: {scheme.word} has a B but no A, so the force F(q, t) of the time-dependent "
                         f"system {spec.system!r} would never be re-evaluated as t moves")
    coefficient_tables(spec, 0, 1)


def step_start(spec, n):
    r"""Clock time at the start of step n: :math:`t_n = t_0 + n h`."""
    return spec.t0 + n * spec.h


@dataclass(frozen=True)
class CoefficientTables:
    """Per-step coefficients of a block of steps (float64, C-contiguous; one row per step).

    Attributes
    ----------
    t : (n_steps, n_entries)
        Clock time of each entry of ``scheme.steps`` (overdamped: (n_steps, 1), :math:`t_n`).
    gamma, sigma : (n_steps, n_O)
        :math:`\\gamma(t)` and :math:`\\sigma(t)` of each O letter, in word order.
    c, s : (n_steps, n_O)
        :func:`sdekit.operators.ou_coefficients` of each O letter with friction
        :math:`\\gamma(t)`; valid when the word has no D (with D the friction is
        :math:`\\gamma(t) + \\xi`, and c, s are computed per path from gamma and sigma).
    kT : (n_steps, n_D)
        :math:`k_BT(t)` of each D letter (overdamped: (n_steps, 1), :math:`k_BT(t_n)`).
    """

    t: np.ndarray
    gamma: np.ndarray
    sigma: np.ndarray
    c: np.ndarray
    s: np.ndarray
    kT: np.ndarray


def coefficient_tables(spec, first_step, n_steps):
    r"""Coefficients of steps ``first_step .. first_step + n_steps - 1`` of ``spec``.

    Letter k of step n acts at :math:`t = t_0 + n h + h\,\tau_k`, :math:`\tau_k` =
    ``spec.scheme.substep_times[k]``; an O letter of fraction f gets
    :math:`\gamma(t)`, :math:`\sigma(t)` (``sigma_A(t)`` if given, else
    :math:`\sqrt{2\gamma(t)k_BT(t)}`) and
    :math:`(c, s)` = ``ou_coefficients(gamma(t), f h, sigma(t))``; a D letter gets
    :math:`k_BT(t)`. Constants give constant columns.

    Parameters
    ----------
    spec : sdekit.simulate.Spec
    first_step, n_steps : int
        The block: global step indices (``State.step`` counts), n_steps >= 0.

    Returns
    -------
    CoefficientTables

    Raises
    ------
    ValueError naming gamma, kT or sigma_A, the value and the time, for a callable
    returning a negative or non-finite value.

    Examples
    --------
    >>> from sdekit import systems
    >>> from sdekit.simulate import make_spec
    >>> spec = make_spec("BAOAB", systems.Harmonic(), 0.1, lambda t: 1.0 + t, 1.0, 1.0,
    ...                  None, None, "float64", None)
    >>> coefficient_tables(spec, 0, 2).gamma.ravel().tolist()
    [1.05, 1.15]
    """
    first_step = integer("first_step", first_step)
    n_steps = integer("n_steps", n_steps)
    scheme, h = spec.scheme, spec.h
    starts = np.array([step_start(spec, n) for n in range(first_step, first_step + n_steps)], dtype=np.float64)
    if scheme.overdamped:
        t = starts[:, None].copy()
        kT = _column(spec, "kT", t[:, 0])[:, None] if "kT" in scheme.whole_step.coefficients else np.zeros((n_steps, 0))
        empty = np.zeros((n_steps, 0))
        return CoefficientTables(t=t, gamma=empty, sigma=empty, c=empty, s=empty.copy(), kT=kT)
    t = starts[:, None] + h * np.array(scheme.substep_times, dtype=np.float64)[None, :]
    t = np.ascontiguousarray(t.reshape(n_steps, len(scheme.steps)))
    entries = coefficient_entries(scheme)
    columns = {name: (np.stack([_COLUMN[name](spec, t[:, k]) for k in ks], axis=1) if ks else np.zeros((n_steps, 0)))
               for name, ks in entries.items()}
    gamma, sigma = columns["gamma"], columns["sigma"]
    # (c, s) of the letters that read both gamma and sigma (O): the exact OU coefficients
    O = [k for k in entries["gamma"] if k in entries["sigma"]]
    g = gamma[:, [entries["gamma"].index(k) for k in O]]
    sg = sigma[:, [entries["sigma"].index(k) for k in O]]
    delta = np.array([scheme.steps[k][1] * h for k in O], dtype=np.float64)
    c, s = ops.ou_coefficients(g, delta[None, :], sg) if O else (g.copy(), g.copy())
    contiguous = lambda a: np.ascontiguousarray(a, dtype=np.float64).reshape(n_steps, -1)
    return CoefficientTables(t=t, gamma=contiguous(gamma), sigma=contiguous(sigma), c=contiguous(c),
                             s=contiguous(s), kT=contiguous(columns["kT"]))


def coefficient_entries(scheme):
    """``{name: [k, ...]}``: for each of gamma, sigma and kT (:data:`sdekit.letters.COEFFICIENTS`),
    the entries of the word whose letter reads it, in word order (the columns of its table).

    Overdamped schemes: ``{"gamma": [], "sigma": [], "kT": [0]}`` if the whole step reads kT.
    """
    if scheme.whole_step is not None:
        return {name: [0] if name in scheme.whole_step.coefficients else [] for name in COEFFICIENTS}
    return {name: list(scheme.occurrences(lambda letter: name in letter.coefficients)) for name in COEFFICIENTS}


def coefficient_columns(scheme):
    """``{name: {k: column}}``: the column of entry k's coefficient ``name`` in its table."""
    return {name: {k: j for j, k in enumerate(ks)} for name, ks in coefficient_entries(scheme).items()}


def _column(spec, name, times):
    f = getattr(spec, name)
    return np.array([value_at(name, f, float(t)) for t in times], dtype=np.float64)


def _sigma_column(spec, times):
    """sigma_A(t) if given, else sqrt(2 gamma(t) kT(t)) (the arithmetic of ``Spec.sigma``)."""
    if spec.sigma_A is not None:
        return _column(spec, "sigma_A", times)
    return np.sqrt(2.0 * _column(spec, "gamma", times) * _column(spec, "kT", times))


_COLUMN = {"gamma": lambda spec, times: _column(spec, "gamma", times), "sigma": _sigma_column,
           "kT": lambda spec, times: _column(spec, "kT", times)}
