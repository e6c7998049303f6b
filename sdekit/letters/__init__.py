r"""The alphabet: one module per letter, and the registry that maps a name to its :class:`Letter`.

Every interpreter of a word (the numpy backend, the kernel generator, the exact
linear chain, the torch optimizer) is a loop over the letters' hooks, and every
table about letters (what they move, where the force and the clock are, how many
normals they draw, what is recorded after them) is read from their metadata. A
letter unknown here raises a ValueError wherever it is used.

Built-in letters
----------------
========  ==============================  ============================================
 name      module                          flow over :math:`\delta = f h`
========  ==============================  ============================================
 A         :mod:`sdekit.letters.drift`      :math:`q \mathrel{+}= \delta M^{-1} p`
 B         :mod:`sdekit.letters.kick`       :math:`p \mathrel{+}= \delta F(q)`
 O         :mod:`sdekit.letters.ou`         :math:`p = c p + s M^{1/2} R` (exact OU)
 D         :mod:`sdekit.letters.thermostat` :math:`\xi \mathrel{+}= \delta\varepsilon(p^TM^{-1}p - Nk_BT)`
 EM, LM    :mod:`sdekit.letters.overdamped` whole overdamped steps (named, not spelled)
========  ==============================  ============================================

Your own letter
---------------
Write its flow on one coordinate as scalar arithmetic (numpy functions, which numba
compiles), give its metadata, and register it::

    import numpy as np
    import sdekit

    def rotate(q, p, delta):          # exact flow of dq = p dt, dp = -q dt
        c, s = np.cos(delta), np.sin(delta)
        return c * q + s * p, -s * q + c * p

    class Harmonic(sdekit.letters.CoordinateLetter):
        name, title, update = "H", "harmonic", "(q, p) rotated by ({f})"
        inputs = moves = ("q", "p")
        flow = staticmethod(rotate)

    sdekit.letters.register(Harmonic())
    sdekit.ensemble("BHOHB", ...)     # numpy and cpu backends; sdekit.linear too

See :class:`CoordinateLetter` and the notebook ``notebooks/new_letter.ipynb``.
"""
from .base import COEFFICIENTS, CONSUMERS, STATE_PARTS, Letter
from .coordinate import CoordinateLetter
from . import drift, kick, ou, thermostat, overdamped, metropolis, mala

ALIASES = {"V": "B", "R": "A"}

RECORDS = ("p_O",)
"""Names a letter may record after itself: the fields a Trajectory and an Ensemble carry."""
"""openmmtools spelling: V = velocity update (our B), R = position update (our A)."""

BUILTIN = (drift.LETTER, kick.LETTER, ou.LETTER, thermostat.LETTER, overdamped.EM, overdamped.LM,
           metropolis.OPEN, metropolis.CLOSE, mala.MALA)

BRACKETS = "{}"
"""Names of the bracket letters (:mod:`sdekit.letters.metropolis`): one punctuation character each."""

_ALPHABET = {}


def _check(letter):
    if not isinstance(letter, Letter):
        raise ValueError(f"letter: must be an instance of sdekit.letters.Letter, got {letter!r}")
    name = letter.name
    bracket = getattr(letter, "bracket", None) is not None
    if bracket and not (isinstance(name, str) and len(name) == 1 and name in BRACKETS):
        raise ValueError(f"letter: a bracket letter is named one of {list(BRACKETS)}, got {name!r}")
    if not bracket and (not isinstance(name, str) or not name.isalpha() or not name.isupper() or not name.isascii()):
        raise ValueError(f"letter: name must be upper-case ASCII letters, got {name!r}")
    if not letter.whole_step and len(name) != 1:
        raise ValueError(f"letter: a letter spelled in words has a one-character name, got {name!r} "
                         f"(only whole_step letters such as 'EM' have longer names)")
    if name in ALIASES:
        raise ValueError(f"letter: {name!r} is the openmmtools alias of {ALIASES[name]!r}; choose another name")
    bad = [m for m in letter.moves if m not in STATE_PARTS]
    if bad or not isinstance(letter.moves, tuple):
        raise ValueError(f"letter: {name!r} moves must be a tuple of {STATE_PARTS}, got {letter.moves!r}")
    bad = [c for c in letter.coefficients if c not in COEFFICIENTS]
    if bad:
        raise ValueError(f"letter: {name!r} coefficients must be among {COEFFICIENTS}, got {letter.coefficients!r}")
    if not isinstance(letter.normals, int) or isinstance(letter.normals, bool) or letter.normals < 0:
        raise ValueError(f"letter: {name!r} normals must be an integer >= 0, got {letter.normals!r}")
    if letter.shadow not in (None, "work", "heat"):
        raise ValueError(f"letter: {name!r} shadow must be None, 'work' or 'heat' (sdekit.shadow), got {letter.shadow!r}")
    for item in letter.records:
        if not (isinstance(item, tuple) and len(item) == 2 and item[0] in RECORDS and item[1] in STATE_PARTS):
            raise ValueError(f"letter: {name!r} records must be (record, part) pairs with a record in {RECORDS} "
                             f"(what runs carry), got {letter.records!r}")


def register(letter, replace=False):
    """Add ``letter`` (a :class:`Letter` instance) to the alphabet and return it.

    Parameters
    ----------
    letter : Letter
    replace : bool
        Allow replacing a letter of the same name (never a built-in).

    Raises
    ------
    ValueError
        For a name already taken (unless ``replace``), a built-in name, or metadata
        out of range.
    """
    _check(letter)
    old = _ALPHABET.get(letter.name)
    if old is not None and old is not letter:
        if any(old is b for b in BUILTIN):
            raise ValueError(f"letter: {letter.name!r} is a built-in letter ({old.title}); choose another name")
        if not replace:
            raise ValueError(f"letter: {letter.name!r} is already registered ({old!r}); pass replace=True")
    _ALPHABET[letter.name] = letter
    return letter


def unregister(name):
    """Remove a user's letter from the alphabet (built-ins stay)."""
    letter = get(name)
    if any(letter is b for b in BUILTIN):
        raise ValueError(f"letter: {name!r} is a built-in letter and cannot be removed")
    del _ALPHABET[name]


def get(name):
    """The :class:`Letter` called ``name``; ValueError listing the alphabet if there is none.

    A letter with a force-group form (``grouped``: B) followed by a group number names that
    form: ``get("B1")`` is B kicking with force group 1 (:func:`sdekit.systems.split`)."""
    try:
        return _ALPHABET[name]
    except (KeyError, TypeError):
        pass
    if isinstance(name, str) and len(name) > 1 and name[1:].isdigit() and name[0] in _ALPHABET:
        base = _ALPHABET[name[0]]
        if getattr(base, "grouped", False):
            return base.in_group(int(name[1:]))
    raise ValueError(f"letter: unknown letter {name!r}; the alphabet is {describe_alphabet()}") from None


def alphabet():
    """``{name: Letter}`` of every registered letter, built-ins first."""
    return dict(_ALPHABET)


def spelled():
    """The names of the letters spelled in words (one character; not whole steps), in order."""
    return tuple(n for n, letter in _ALPHABET.items() if not letter.whole_step)


def grouped():
    """The names of the letters that take a force-group number (``B``: ``B0``, ``B1``, ...)."""
    return tuple(n for n in spelled() if getattr(_ALPHABET[n], "grouped", False))


def whole_steps():
    """The names of the whole-step letters (EM, LM, ...)."""
    return tuple(n for n, letter in _ALPHABET.items() if letter.whole_step)


def describe_alphabet():
    """``"A (drift), B (kick), ..."``: the letters spelled in words."""
    return ", ".join(f"{n} ({_ALPHABET[n].title})" for n in spelled())


for _letter in BUILTIN:
    register(_letter)
del _letter

__all__ = ["Letter", "CoordinateLetter", "register", "unregister", "get", "alphabet", "spelled",
           "whole_steps", "ALIASES", "STATE_PARTS", "COEFFICIENTS", "CONSUMERS"]
