"""Words cut at their force letters, multirate placement, and the groups' alignment.

:class:`Layout` reads a group's word from the letters' metadata once (cached);
:func:`runs` and :func:`substep` say which letters run in a step of a multirate block and
for how long (the ``multirate`` rules of :class:`~sdekit.torch.SDEOptimizer`);
:func:`aligned` checks that the groups' words evaluate the force at the same times, so that
they can share one gradient evaluation per step.
"""
from functools import lru_cache

from .. import letters as _letters
from ..schemes import Scheme

__all__ = ["Layout", "MULTIRATE_RULES", "active", "runs", "substep", "consumers", "scheme_key", "layout_of",
           "aligned"]

_ALIGN_TOL = 1e-12


class Layout:
    """A word cut at its force letters (B): ``segments[0] B segments[1] B ... B segments[k]``.

    Each item, in ``segments`` and in ``kicks`` (the B's), is ``(letter, fraction, place,
    a_before)``: the :class:`~sdekit.letters.Letter`, its fraction of h, ``a_before`` the
    cumulative fraction of the clock letters (A) before it (its clock time in units of h)
    and ``place`` one of "lead" (before the word's first clock letter), "mid" or "trail"
    (after its last), which decides in which step of a block a multirate group runs the
    letter (:func:`active`). ``times[j]`` is the clock time of the j-th B (where its
    force is evaluated) and ``flags[j]`` whether it needs a fresh gradient in the steady
    state. Everything is read from the letters' metadata: ``needs_force`` (a B),
    ``clock`` (an A), ``moves`` (``"xi"``: the group keeps thermostat variables).
    """

    def __init__(self, scheme):
        self.scheme = scheme
        self.whole_step = scheme.whole_step
        self.letters = (scheme.whole_step,) if scheme.whole_step else tuple(e.letter for e in scheme.entries)
        self.segments, self.kicks, self.times, self.flags = [[]], [], [], []
        clocks = [i for i, e in enumerate(scheme.entries) if e.letter.clock]
        first, last = (clocks[0], clocks[-1]) if clocks else (len(scheme.entries), -1)
        t = 0.0
        for i, e in enumerate(scheme.entries):
            place = "lead" if i < first else "trail" if i > last else "mid"
            item = (e.letter, e.fraction, place, t)
            if e.letter.needs_force:
                self.kicks.append(item)
                self.times.append(t)
                self.flags.append(e.new_force)
                self.segments.append([])
            else:
                self.segments[-1].append(item)
            if e.letter.clock:
                t += e.fraction
        self.has_xi = any("xi" in letter.moves for letter in self.letters)


def active(place, phase, rate):
    """Whether a non-A letter at ``place`` runs in the step of phase ``phase`` (= step mod rate).

    A group with rate k runs the letters placed by this rule once per block of k steps
    (its B's under the "published" rule, all but its A's under "impulse", see
    :func:`runs`): those before the word's first A in the block's first step, those
    after its last A in the block's last step, the others in its middle step
    (k - 1) // 2 (the centre of the block for odd k). Rate 1: every letter every step.
    """
    if rate == 1:
        return True
    return phase == (0 if place == "lead" else rate - 1 if place == "trail" else (rate - 1) // 2)


MULTIRATE_RULES = ("published", "impulse")
"""The meanings of a group's ``rate=k`` (its ``multirate`` setting; see :class:`SDEOptimizer`)."""


def runs(item, phase, rate, rule="published"):
    """Whether the letter of a layout item runs in the step of phase ``phase`` of a multirate
    block: a clock letter (A) in every step; a force letter (B) as :func:`active` says; the
    others (O, D) in every step under the ``"published"`` rule, as :func:`active` says under
    ``"impulse"``."""
    letter, _, place, _ = item
    if rate == 1 or letter.clock or (rule == "published" and not letter.needs_force):
        return True
    return active(place, phase, rate)


def substep(item, h, phase, rate, rule="published"):
    """The sub-step of a layout item in the step of phase ``phase``: f h for a clock letter (A)
    and, under the ``"published"`` rule, for every letter; f h k for the non-clock letters
    under ``"impulse"`` (k = ``rate``); None if it does not run in that step (:func:`runs`)."""
    if not runs(item, phase, rate, rule):
        return None
    f = item[1]
    return f * h if (item[0].clock or rule == "published") else f * h * rate


@lru_cache(maxsize=256)
def consumers(flags, j):
    """The B's that use a force evaluated at the j-th B: ((step offset, B index), ...).

    They are B j and the following B's up to the next fresh evaluation; if there is
    none later in the word, also the next step's first B's (first-same-as-last)."""
    out = [(0, j)]
    b = j + 1
    while b < len(flags) and not flags[b]:
        out.append((0, b))
        b += 1
    if b == len(flags):
        b = 0
        while b < len(flags) and not flags[b]:
            out.append((1, b))
            b += 1
    return tuple(out)


def scheme_key(value):
    """A hashable form of a group's ``scheme`` entry (a word or (letter, fraction) pairs)."""
    if isinstance(value, Scheme):
        if getattr(value, "geodesic_steps", 1) != 1:
            raise ValueError(f"scheme: geodesic sub-steps (constrained runs) are not supported by "
                             f"SDEOptimizer, got {value!r}")
        value = value.word if value.overdamped else [[l, f] for l, f in value.steps]
    if isinstance(value, dict):
        raise ValueError(f"scheme: expected a word or a list of (letter, fraction) pairs, got {value!r}")
    if isinstance(value, str):
        return value
    try:
        return tuple((str(l), float(f)) for l, f in value)
    except (TypeError, ValueError):
        raise ValueError(f"scheme: expected a word or a list of (letter, fraction) pairs, got {value!r}") from None


_WHERE = "the torch optimizer (sdekit.torch.SDEOptimizer)"


@lru_cache(maxsize=256)
def _cached_layout(key):
    try:
        scheme = Scheme(list(key) if isinstance(key, tuple) else key)
    except ValueError as err:
        raise ValueError(f"{err}; in a parameter group of {_WHERE}") from None
    layout = Layout(scheme)
    for letter in layout.letters:
        if not letter.supports("torch"):
            raise ValueError(f"scheme: {letter.missing('torch', _WHERE)}")
    if not scheme.whole_step and not (any(letter.moves_positions for letter in layout.letters)
                                      and any(letter.needs_force for letter in layout.letters)):
        raise ValueError(f"scheme: a parameter group's word must contain A and B (a letter that moves the "
                         f"parameters and one that reads the gradient), or be 'EM'/'LM', got {scheme.word!r}")
    return layout


def layout_of(key):
    """The :class:`Layout` of a group's ``scheme`` key (cached while the alphabet keeps its letters)."""
    layout = _cached_layout(key)
    alphabet = _letters.alphabet()
    if any(alphabet.get(letter.name) is not letter for letter in layout.letters):
        _cached_layout.cache_clear()     # a letter was replaced or removed since: read the word again
        layout = _cached_layout(key)
    return layout


def aligned(layouts):
    """Check that the groups' words can share gradients; return the combined B flags.

    Rule: either every word is overdamped (EM/LM: one gradient at the start of the
    step), or none is and all words have the same number of B's with the same
    cumulative A fraction before each B (the B's come at the same *times*, so the
    positions of all groups are at the same point when the force is evaluated). The
    B fractions may differ, and between two B's each group runs its own letters:
    "BAOAB", "BADODAB", "BAODOAB" and "OBABO" all align; "ABOBA" does not align
    with "BAOAB" (its B's come at time h/2).
    """
    first = layouts[0]
    kinds = {lay.whole_step is not None for lay in layouts}
    if len(kinds) > 1:
        words = [lay.scheme.word for lay in layouts]
        raise ValueError(f"scheme: overdamped (EM/LM) and underdamped groups cannot share gradients, got {words}")
    if first.whole_step is not None:
        return ()
    for lay in layouts[1:]:
        if (len(lay.times) != len(first.times)
                or any(abs(a - b) > _ALIGN_TOL for a, b in zip(lay.times, first.times))):
            raise ValueError(
                f"scheme: groups' words cannot share gradients: {first.scheme.word!r} evaluates the force "
                f"at times {list(first.times)} (in units of h, cumulative A fraction before each B) but "
                f"{lay.scheme.word!r} at {list(lay.times)}")
    return tuple(any(lay.flags[j] for lay in layouts) for j in range(len(first.times)))
