"""Splitting words -> :class:`Scheme`: validation, fractions, lazy force, the catalogue.

A scheme is a word in the letters of :mod:`sdekit.operators`::

    A  drift       q += delta M^-1 p
    B  kick        p += delta F(q)
    O  OU          p  = c p + s M^1/2 R        (friction gamma + xi)
    D  thermostat  xi += delta eps (p.M^-1 p - N kT)

Each letter runs for h divided by the number of times it occurs, so "BAOAB" is
B(h/2) A(h/2) O(h) A(h/2) B(h/2). Explicit ``[(letter, fraction), ...]`` lists allow
any weights (negative ones too) as long as each letter's fractions sum to one.
The overdamped schemes (Euler–Maruyama, Leimkuhler–Matthews) are whole-step
methods for dq = F dt + sqrt(2 kT) dW and are named, not spelled.

References: Leimkuhler & Matthews, Appl. Math. Res. Express 2013 (BAOAB and the
other splittings); Leimkuhler & Shang, SIAM J. Sci. Comput. 38 (2016) (BADODAB);
openmmtools ``LangevinIntegrator`` for the "V R O R V" spelling.
"""
import math
from collections import namedtuple
from fractions import Fraction

from . import letters as _letters
from ._checks import integer

Entry = namedtuple("Entry", "letter fraction new_force time")
Entry.__doc__ = """One entry of a word: its :class:`~sdekit.letters.Letter`, its fraction of h, whether
it evaluates a new force (lazy, steady state) and its clock time as a fraction of h."""

CATALOGUE = {
    "BAOAB": ("BAOAB", "Leimkuhler & Matthews 2013: exact <q^2> on harmonic, 2nd-order configurational"),
    "ABOBA": ("ABOBA", "Leimkuhler & Matthews 2013"),
    "OBABO": ("OBABO", "Bussi & Parrinello 2007 / velocity Verlet in O: exact <p^2> on harmonic"),
    "OABAO": ("OABAO", "Leimkuhler & Matthews 2013"),
    "BABO": ("BABO", "velocity Verlet followed by an exact OU step"),
    "ABO": ("ABO", "first-order splitting (Lie-Trotter)"),
    "BADODAB": ("BADODAB", "Leimkuhler & Shang 2016: adaptive Langevin (Nose-Hoover-Langevin)"),
    "GHMC": ("O{BAB}O", "Horowitz 1991: generalised hybrid Monte Carlo (velocity Verlet, Metropolis test)"),
    "EM": ("EM", "overdamped Euler-Maruyama: q' = q + h F + sqrt(2 h kT) R"),
    "LM": ("LM", "overdamped Leimkuhler-Matthews: q' = q + h F + sqrt(h kT/2)(R_n + R_n+1)"),
    "MALA": ("MALA", "Roberts & Tweedie 1996: Euler-Maruyama proposal with a Metropolis-Hastings test"),
}
_SYNONYMS = {"EULERMARUYAMA": "EM", "LEIMKUHLERMATTHEWS": "LM"}


def _fraction_text(f):
    r = Fraction(f).limit_denominator(1000)
    r = r if math.isclose(float(r), f, rel_tol=0, abs_tol=1e-15) else None
    if r is None:
        return f"{f:.6g} h"
    if r == 1:
        return "h"
    return f"{r.numerator} h/{r.denominator}" if r.numerator != 1 else f"h/{r.denominator}"


def _tokens(word):
    """The letter names of a word, with openmmtools aliases mapped, spaces dropped, group numbers
    attached (``B1``) and repetitions expanded (``(B0 A O A B0)^4``)."""
    out, stack, i = [], [], 0
    while i < len(word):
        ch = word[i]
        i += 1
        if ch.isspace():
            continue
        if ch == "(":
            stack.append(len(out))
            continue
        if ch == ")":
            if not stack:
                raise ValueError(f"scheme: unbalanced ')' in {word!r}")
            start = stack.pop()
            j = i + 1 if i < len(word) and word[i] == "^" else i
            k = j
            while k < len(word) and word[k].isdigit():
                k += 1
            if j == i or k == j or int(word[j:k]) < 1:
                raise ValueError(f"scheme: a group in parentheses is repeated by '^n' with n >= 1, "
                                 f"as in '(B0 A O A B0)^4', got {word!r}")
            out[start:] = out[start:] * int(word[j:k])
            i = k
            continue
        name = _letters.ALIASES.get(ch, ch)
        k = i
        while k < len(word) and word[k].isdigit():
            k += 1
        if k > i:
            if name not in _letters.grouped():
                raise ValueError(f"scheme: letter {name!r} takes no force-group number (only "
                                 f"{list(_letters.grouped())} do: B0, B1, ...), got {word!r}")
            name += word[i:k]
            i = k
        out.append(name)
    if stack:
        raise ValueError(f"scheme: unbalanced '(' in {word!r}")
    return out


def _parse_word(word):
    """(name, fraction) steps of a word: each letter (each group kick) runs for h / its count."""
    names = _tokens(word)
    bad = sorted(set(n for n in names if n[0] not in _letters.spelled()))
    if bad:
        raise ValueError(f"scheme: unknown letter(s) {bad} in {word!r}; letters are "
                         f"{_letters.describe_alphabet()}, or a catalogue name: {sorted(CATALOGUE)}")
    if not names:
        raise ValueError(f"scheme: empty word {word!r}")
    return tuple((n, 1.0 / names.count(n)) for n in names)


def _parse_steps(steps):
    out = []
    for item in steps:
        try:
            letter, frac = item
            frac = float(frac)
        except (TypeError, ValueError):
            raise ValueError(f"scheme: each step must be a (letter, fraction) pair, got {item!r}") from None
        try:
            known = not _letters.get(letter).whole_step
        except ValueError:
            known = False
        if not known:
            raise ValueError(f"scheme: unknown letter {letter!r} in {item!r}; letters are "
                             f"{_letters.describe_alphabet()}")
        if not math.isfinite(frac) or frac == 0.0:
            raise ValueError(f"scheme: fraction of {letter!r} must be finite and non-zero, got {frac!r}")
        out.append((letter, frac))
    if not out:
        raise ValueError("scheme: empty list of steps")
    for letter in set(l for l, _ in out):
        total = math.fsum(f for l, f in out if l == letter)
        if abs(total - 1.0) > 1e-12:
            raise ValueError(f"scheme: fractions of {letter!r} sum to {total!r}, not 1")
    return tuple(out)


def check_brackets(steps, letters):
    """ValueError unless every ``{`` is closed by a ``}``, sub-words are not nested, not empty,
    made of reversible letters (A, B, B0, ...: :attr:`Letter.reversible`) and symmetric
    (the same letters and fractions read backwards), which makes the proposal a
    time-reversible, volume-preserving map: then the test at ``}`` is exact."""
    word = "".join(n for n, _ in steps)
    start = None
    for k, letter in enumerate(letters):
        if letter.bracket == "open":
            if start is not None:
                raise ValueError(f"scheme: Metropolis sub-words do not nest, got {word!r}")
            start = k
        elif letter.bracket == "close":
            if start is None:
                raise ValueError(f"scheme: '}}' without its '{{' in {word!r}")
            inner = steps[start + 1:k]
            if not inner:
                raise ValueError(f"scheme: an empty Metropolis sub-word '{{}}' in {word!r}")
            if inner != inner[::-1]:
                text = "".join(n for n, _ in inner)
                raise ValueError(f"scheme: the Metropolis sub-word {{{text}}} of {word!r} is not symmetric "
                                 f"(its letters and fractions must read the same backwards, as BAB), so the "
                                 f"proposal is not time-reversible and the test would not be exact")
            start = None
        elif start is not None and not letter.reversible:
            raise ValueError(f"scheme: letter {letter.name!r} ({letter.title}) cannot be inside a Metropolis "
                             f"sub-word {{ }} of {word!r}: only reversible, volume-preserving letters "
                             f"(Letter.reversible: A, B, B0, ...) can")
    if start is not None:
        raise ValueError(f"scheme: '{{' without its '}}' in {word!r}")


def lazy_evaluations(letters):
    """Which letters that read the force need a new one in the steady state (first-same-as-last).

    A force is needed by a letter that reads it (``needs_force``: B, or B0, B1, ... for the
    force groups, each cached on its own) only if a letter that moves q (A) has run since
    the last evaluation of that force. The word repeats, so the state at the start of a
    step is the state at the end of the previous one: we scan the word twice and keep the
    second pass. A Metropolis ``}`` restores q and the forces on rejection, so a force
    stays fresh after it if it was fresh both at the ``{`` and just before the ``}``.
    ``letters`` is a word (a string), a sequence of letter names or of Letters.
    """
    word = [name if isinstance(name, _letters.Letter) else _letters.get(name) for name in
            (_tokens(letters) if isinstance(letters, str) else letters)]
    # forces valid at the start of a step: the run starts with every force evaluated, and a
    # start set S is kept if the step ends with (at least) S valid: the greatest such S
    start = {letter.force_group for letter in word if letter.needs_force}
    while True:
        flags, end = _scan(word, start)
        if start <= end:
            return flags
        start &= end


def potential_evaluations(letters):
    """Which ``{`` of a word must evaluate U(q) in the steady state: those after a letter that
    moved q since the last ``}`` (which leaves U of the state it keeps: the proposal's, or the
    start's on rejection) or since the run's start, as :func:`lazy_evaluations` for forces.
    The compiled kernels carry U(q) along a path; a whole-step test (MALA) always has it."""
    word = [name if isinstance(name, _letters.Letter) else _letters.get(name) for name in letters]
    for fresh in (True, False):
        flags, now = [], fresh
        for letter in word:
            flags.append(letter.bracket == "open" and not now)
            if letter.bracket is not None:
                now = True
            elif letter.stales_force:
                now = False
        if now or not fresh:   # the step ends with U valid (or we assumed nothing)
            return tuple(flags)


def _scan(word, fresh):
    """One step's evaluation flags from the valid forces ``fresh`` (force groups; None is the
    whole force), and the forces valid at its end."""
    fresh, at_open, flags = set(fresh), set(), []
    for letter in word:
        if letter.needs_force:
            flags.append(letter.force_group not in fresh)
            fresh.add(letter.force_group)
        else:
            flags.append(False)
        if letter.bracket == "open":
            at_open = set(fresh)
        elif letter.bracket == "close":
            fresh &= at_open
        elif letter.stales_force:
            fresh.clear()
    return tuple(flags), fresh


class Scheme:
    """A splitting scheme: a word of letters, each run for a fraction of the step.

    Parameters
    ----------
    definition : str or sequence of (letter, fraction) or Scheme
        A word such as ``"BAOAB"`` (each letter runs for h / its count), an
        openmmtools spelling such as ``"V R O R V"`` (V = B, R = A), a catalogue
        name (``"BADODAB"``, ``"EM"``, ``"Leimkuhler-Matthews"``, ...), or an
        explicit list ``[("B", .5), ("A", 1), ("O", 1), ("B", .5)]`` whose
        fractions, per letter, sum to one (negative fractions allowed); or the
        dict ``{"steps": ..., "geodesic_steps": K}`` that :meth:`to_json` writes.
    geodesic_steps : int, optional
        K >= 1 (default 1, or the Scheme's own): in a constrained run
        (``constraint=``) each A(delta) becomes K geodesic sub-steps, each a drift of
        delta/K followed by SHAKE and RATTLE — g-BAOAB is ``Scheme("BAOAB",
        geodesic_steps=K)`` (Leimkuhler & Matthews, Proc. R. Soc. A 472, 2016). Without
        a constraint the K drifts add up to one A, so K changes nothing.

    Attributes
    ----------
    steps : tuple of (str, float)
        The letters in order with their fractions of h; empty for overdamped schemes.
    word : str
        The letters alone (``"EM"``/``"LM"`` for the overdamped schemes).
    overdamped : str or None
        ``"EM"`` or ``"LM"`` for the overdamped whole-step schemes.
    evaluations : tuple of bool
        For each step, whether it evaluates the force (lazy, steady state).
    force_evaluations : int
        Force evaluations per step in the steady state (BAOAB: 1).
    geodesic_steps : int
        Geodesic sub-steps per A in constrained runs (see above).

    Examples
    --------
    >>> Scheme("BAOAB").force_evaluations
    1
    >>> Scheme("V R O R V") == Scheme("BAOAB")
    True
    """

    def __init__(self, definition, geodesic_steps=None):
        if isinstance(definition, dict):
            geodesic_steps = definition.get("geodesic_steps", 1) if geodesic_steps is None else geodesic_steps
            if set(definition) - {"steps", "geodesic_steps"} or "steps" not in definition:
                raise ValueError(f"scheme: a dict definition has keys 'steps' and 'geodesic_steps', "
                                 f"got {sorted(definition)}")
            definition = definition["steps"]
        if isinstance(definition, Scheme):
            self.steps, self.overdamped = definition.steps, definition.overdamped
            geodesic_steps = definition.geodesic_steps if geodesic_steps is None else geodesic_steps
        elif isinstance(definition, str):
            key = definition.strip().upper().replace("-", "").replace("_", "").replace(" ", "")
            key = _SYNONYMS.get(key, key)
            if key in _letters.whole_steps():
                self.steps, self.overdamped = (), key
            else:
                spelled = CATALOGUE[key][0] if key in CATALOGUE else definition
                self.steps, self.overdamped = _parse_word(spelled), None
        elif isinstance(definition, (list, tuple)):
            self.steps, self.overdamped = _parse_steps(definition), None
        else:
            raise ValueError(f"scheme: expected a word, a list of (letter, fraction) pairs "
                             f"or a Scheme, got {definition!r}")
        self.word = self.overdamped or "".join(letter for letter, _ in self.steps)
        self.geodesic_steps = 1 if geodesic_steps is None else integer("geodesic_steps", geodesic_steps, low=1)
        # the Letter objects now, so that the scheme keeps its meaning if the alphabet changes later
        self._letters = tuple(_letters.get(letter) for letter, _ in self.steps)
        check_brackets(self.steps, self._letters)
        groups = {letter.force_group for letter in self._letters if letter.needs_force}
        if None in groups and len(groups) > 1:
            raise ValueError(f"scheme: {self.word!r} kicks with the whole force (B) and with force groups "
                             f"(B0, B1, ...); use one or the other")
        self.force_groups = tuple(sorted(groups - {None}))
        if self.force_groups and self.force_groups != tuple(range(len(self.force_groups))):
            raise ValueError(f"scheme: the force groups of {self.word!r} must be 0, 1, ..., {len(groups) - 1} "
                             f"(one B<g> for each part of sdekit.systems.split, numbered from 0), got "
                             f"{list(self.force_groups)}")
        if self.geodesic_steps != 1 and not any(l.geodesic for l in self._letters):
            raise ValueError(f"geodesic_steps: scheme {self.word} has no A to split, "
                             f"got geodesic_steps={geodesic_steps!r}")
        self.whole_step = _letters.get(self.overdamped) if self.overdamped else None
        self.evaluations = lazy_evaluations([l.name for l in self._letters]) if not self.overdamped else ()
        self.force_evaluations = 1 if self.overdamped else sum(self.evaluations)
        self.potential_evaluations = potential_evaluations(self._letters) if not self.overdamped else ()
        self.group_evaluations = {g: sum(new for letter, new in zip(self._letters, self.evaluations)
                                         if letter.force_group == g and letter.needs_force)
                                  for g in self.force_groups}
        self.entries = tuple(Entry(letter, f, new, t) for letter, (_, f), new, t in
                             zip(self._letters, self.steps, self.evaluations, self.substep_times))

    @property
    def letters(self):
        """The set of letter names used."""
        return frozenset(l for l, _ in self.steps)

    @property
    def tests(self):
        """Metropolis tests per step (a ``}`` each, or MALA's): the uniforms a step draws per path."""
        return sum(letter.uniforms for letter in self.alphabet_entries)

    @property
    def alphabet_entries(self):
        """The Letter of every entry in word order (a whole-step scheme: its one letter)."""
        return (self.whole_step,) if self.whole_step is not None else self._letters

    @property
    def needs_potential(self):
        """Whether a step evaluates U(q) (a Metropolis test: ``{ }`` or MALA)."""
        return self.tests > 0

    @property
    def uses_force(self):
        """Whether a step reads the force (a B, or a whole overdamped step)."""
        return self.overdamped is not None or any(letter.needs_force for letter in self._letters)

    @property
    def alphabet(self):
        """The distinct :class:`~sdekit.letters.Letter` objects of a step, in order of first use
        (the whole-step letter of an overdamped scheme)."""
        if self.whole_step is not None:
            return (self.whole_step,)
        return tuple(dict.fromkeys(self._letters))

    @property
    def records(self):
        """Names recorded after some letter of the word (``{"p_O"}`` if it has an O)."""
        return frozenset(record for letter in self.alphabet for record, _ in letter.records)

    def occurrences(self, predicate):
        """Indices k of the entries whose Letter satisfies ``predicate`` (e.g. ``lambda l: l.normals``)."""
        return tuple(k for k, letter in enumerate(self._letters) if predicate(letter))

    def draws(self, dim):
        """Slots of its normal stream one path draws per step (the same for every path): d per
        normal per coordinate, one per Metropolis test (:attr:`tests`)."""
        return sum(dim * letter.normals + letter.uniforms for letter in self.alphabet_entries)

    @property
    def substep_times(self):
        r"""Clock time of each entry of :attr:`steps`, as a fraction of h after the step's start.

        The time t rides with A: the extended autonomous system (q, p, xi, t) with
        dt/ds = 1 put into the A piece, so entry k acts at
        :math:`t_n + h \sum_{j<k,\ \text{letter}_j = A} f_j` (the A fractions before it).
        A symmetric word stays symmetric in the extended system, so the order is kept
        (Strang splitting of a non-autonomous system made autonomous: Hairer, Lubich &
        Wanner, *Geometric Numerical Integration*, Springer 2006, ch. II; Leimkuhler &
        Matthews, *Molecular Dynamics*, Springer 2015, ch. 7). Lazy force
        reuse stays valid because q and t change together. The times lie in [0, 1] and
        never decrease for positive fractions; negative A fractions run the clock
        backwards within the step, as they do q. Overdamped schemes: ``()`` (they use
        the force and kT at :math:`t_n`).

        Examples
        --------
        >>> Scheme("BAOAB").substep_times
        (0.0, 0.0, 0.5, 0.5, 1.0)
        """
        times, before = [], []
        for letter, (_, f) in zip(self._letters, self.steps):
            times.append(math.fsum(before))
            if letter.clock:
                before.append(f)
        return tuple(times)

    def fraction(self, letter):
        """Total fraction of h run by ``letter`` (1 if present, 0 if absent)."""
        return math.fsum(f for l, f in self.steps if l == letter)

    def __eq__(self, other):
        if not isinstance(other, Scheme):
            return NotImplemented
        return (self.steps == other.steps and self.overdamped == other.overdamped
                and self.geodesic_steps == other.geodesic_steps)

    def __hash__(self):
        return hash((self.steps, self.overdamped, self.geodesic_steps))

    def __repr__(self):
        extra = "" if self.geodesic_steps == 1 else f", geodesic_steps={self.geodesic_steps}"
        if self.overdamped or self.steps == _parse_word(self.word):
            return f"Scheme({self.word!r}{extra})"
        return f"Scheme({list(self.steps)!r}{extra})"

    def describe(self):
        """A readable account of one step: each letter, its sub-step and its update."""
        if self.overdamped:
            test = ", 1 Metropolis test" if self.tests else ""
            return f"{self.word}: {CATALOGUE[self.word][1]}  (1 force evaluation per step{test})"
        n, K = self.force_evaluations, self.geodesic_steps
        geo = "" if K == 1 else f", {K} geodesic sub-steps per A"
        if self.force_groups:
            geo += " (" + ", ".join(f"group {g}: {c}" for g, c in self.group_evaluations.items()) + ")"
        if self.tests:
            geo += f", {self.tests} Metropolis test{'s' if self.tests != 1 else ''}"
        lines = [f"{self.word}  ({n} force evaluation{'s' if n != 1 else ''} per step{geo})"]
        for letter, f, new_force, _ in self.entries:
            which = "" if letter.force_group is None else f"_{letter.force_group}"
            note = f"   [new force F{which}(q)]" if new_force else ""
            if letter.geodesic and K != 1:
                note += f"   [{K} x (drift {_fraction_text(f / K)}, SHAKE, RATTLE) if constrained]"
            lines.append(f"  {letter.name}  {letter.describe(_fraction_text(f))}{note}")
        return "\n".join(lines)

    def to_json(self):
        """JSON-able definition; ``Scheme(s.to_json())`` round-trips.

        A word or a list of [letter, fraction]; with ``geodesic_steps`` K != 1 the dict
        ``{"steps": [...], "geodesic_steps": K}``.
        """
        if self.overdamped:
            return self.word
        steps = [[l, f] for l, f in self.steps]
        return steps if self.geodesic_steps == 1 else {"steps": steps, "geodesic_steps": self.geodesic_steps}


def catalogue():
    """The named schemes: ``{name: (Scheme, description)}``."""
    return {name: (Scheme(name), text) for name, (_, text) in CATALOGUE.items()}
