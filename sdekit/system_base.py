"""The base class of the systems, :class:`System` (with :class:`UnknownObservable`),
shared by :mod:`sdekit.systems` (the built-ins, the user's own, force groups) and
:mod:`sdekit.torch_systems` (torch modules as systems).

Every name here is also in :mod:`sdekit.systems`, which documents what a system has.
"""
import numpy as np

from ._checks import real


class UnknownObservable(ValueError, KeyError):
    """An observable with no exact value (:meth:`System.exact`): a ``ValueError`` naming the
    argument, and a ``KeyError`` as before (``sdekit.analysis.exact_value`` catches that)."""

    __str__ = BaseException.__str__  # KeyError's would quote the message


class System:
    """Base class. Subclasses set ``dim`` and define ``potential``, ``grad``, ``gradient``
    (no ``gradient`` if ``numpy_only``)."""

    dim: int
    name = "system"
    time_dependent = False
    """True if the force depends on t: then ``grad(q, t)``, ``force(q, t)``, ``gradient(q, t, out)``."""
    numpy_only = False
    """True if the force is not a numba-compilable ``gradient`` (e.g. :func:`torch_module`):
    only the numpy backend runs such a system."""
    energy = None
    """U(q) of one configuration as numba-compilable arithmetic, ``energy(q) -> float`` (None: none)."""
    parts = ()
    """The force groups of a :func:`split` system (its parts); () for a single system."""
    escape_bound = None
    """|q_i| beyond which a path has left the region where the usual steps are stable
    (used by the analysis functions as the default ``max_abs``); None: no such region."""

    def force(self, q, *t):
        """F(q) = -grad U(q) (or F(q, t) = -grad U(q, t) if ``time_dependent``), vectorised."""
        return -self.grad(q, *t)

    def exact(self, name, kT, mass=None):
        """Exact stationary expectation of observable ``name`` at temperature ``kT``.

        ``"p2"`` (per-coordinate <p_i^2> = kT m_i) and ``"p"`` (0) hold for every
        system; position observables are defined by subclasses.
        Raises :class:`UnknownObservable` (a ``ValueError`` naming ``name``, and a
        ``KeyError``) for an observable whose exact value is not known.
        """
        if not isinstance(name, str):
            raise UnknownObservable(f"name: must be the name of an observable (a str), got {name!r}")
        kT = real("kT", kT, low=0)
        mass = np.ones(self.dim) if mass is None else np.broadcast_to(mass, (self.dim,))
        if name == "p":
            return np.zeros(self.dim)
        if name == "p2":
            return kT * np.asarray(mass, dtype=float)
        values = self._exact_positions(kT)
        if name not in values:
            raise UnknownObservable(f"name: {self.name} has no exact value for the observable {name!r}; "
                                    f"it has {sorted(values) + ['p', 'p2']}")
        return values[name]

    def _exact_positions(self, kT):
        return {}

    def _time(self, t):
        """() for a time-independent system, (t,) as a float otherwise (checked)."""
        if not self.time_dependent:
            if t:
                raise ValueError(f"t: {self.name} does not depend on time, got t={t[0]!r}")
            return ()
        if len(t) != 1:
            raise ValueError(f"t: the time-dependent system {self.name} needs the time t, got {t!r}")
        return (real("t", t[0]),)

    def __repr__(self):
        return self.name


def _known_values(exact, kT):
    """The user's known expectations ``{name: array or callable(kT)}`` at ``kT``."""
    return {k: (v(kT) if callable(v) else np.asarray(v, dtype=float)) for k, v in exact.items()}


def potential_missing(system):
    """Why ``system`` gives no potential U(q) (the text of the ValueError its ``potential`` raises,
    probed at q = 0), or None if it gives one: what a Metropolis test and shadow work need."""
    try:
        with np.errstate(all="ignore"):   # a probe only: U(0) of a cluster is infinite
            system.potential(np.zeros((1, system.dim)))
    except ValueError as err:
        return str(err)
    return None
