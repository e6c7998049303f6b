r"""The letters' writer: the ``g`` a :meth:`~sdekit.letters.Letter.source` hook writes with.

:class:`Writer` collects the lines of ``step`` (one path, one step), letter by letter in
word order, and what they ask of the module around it: per-path constants
(``ou_constants``), registered scalar functions, the arrays they write. The storage
strategy (:mod:`sdekit.kernels.storage`) makes each coordinate-wise statement a loop or
a D-tuple, so a hook is written once for both. :data:`RATTLE` is the line that
projects p on a constrained system. The generator (:mod:`sdekit.kernels.codegen`)
runs the hooks and puts the lines into the module.
"""
from .. import letters as _letters
from .. import schedules as _schedules
from .. import schemes as _schemes
from . import runtime
from .storage import _targets

RATTLE = "ok &= rattle(q, p, inv_mass, work)     # RATTLE: p onto the cotangent space"
"""The line that projects p onto the cotangent space of a constrained system (after a letter moving p)."""


class Writer:
    r"""What a letter's :meth:`~sdekit.letters.Letter.source` hook writes its lines with.

    A hook appends the lines of its letter to ``step`` (one path, one step) through the
    methods below. A coordinate-wise statement is a template with ``{j}`` for the
    coordinate (and ``{z}`` or ``{z0}, {z1}, ...`` for its normals); the storage strategy
    makes it a loop over arrays or a D-tuple of scalars, so one hook serves both forms.

    In the text the hook writes: ``q``, ``p``, ``F``, ``R``, ``pO`` (the path's state),
    ``xi``, ``d[k]`` (the sub-steps), ``gamma``, ``kT``, ``eps``, ``sigma`` (scalars; use
    :meth:`coefficient` for those that may depend on t), ``inv_mass[j]``,
    ``sqrt_mass[j]``, ``DT`` (the storage type), the flows of :mod:`sdekit.operators`
    (``drift``, ``kick``, ``ou_coefficients``, ``ou``, ``thermostat``, ...) and
    ``kinetic(p, inv_mass)``.

    Built by :func:`~sdekit.kernels.codegen.generate`, which passes what it reads of the
    scheme: ``adaptive`` (:func:`~sdekit.kernels.codegen.adaptive`) and ``table``, the first
    column of each name in the coefficient table (:func:`~sdekit.kernels.codegen.table_columns`).

    Attributes
    ----------
    backend : "cpu" or "cuda"
    storage : ArrayStorage or RegisterStorage
    constraint : namespace or None
        :func:`~sdekit.kernels.codegen.constraint_info` of a constrained kernel (array form): ``geodesic_steps``;
        the lines may use ``qo``, ``work``, ``shake(...)``, :data:`RATTLE` and ``ok``.
    time_dependent : bool
    adaptive : bool
        Some letter of the word moves xi (friction gamma + xi changes along a path).
    n_dof : str
        N of the thermostat: ``"D"``, or ``"NDOF"`` (D - M) with a constraint.
    """

    RATTLE = RATTLE

    def __init__(self, scheme, dim, storage, backend, constraint=None, time_dependent=False, *, adaptive, table,
                 drift_change=False):
        self.scheme, self.dim, self.storage, self.backend = scheme, dim, storage, backend
        self.drift_change = drift_change   # the paths carry Girsanov log-weights (lw): sdekit.girsanov
        self.constraint, self.time_dependent = constraint, time_dependent
        self.adaptive = adaptive
        self.n_dof = "D" if constraint is None else "NDOF"
        self.lines, self.constants, self.functions, self.stable = [], [], {}, True
        self.written = set()   # what the letters' statements assign (R: the drivers then carry it)
        self.letter = self.k = None
        self._cols = table
        self._entries = _schedules.coefficient_columns(scheme)

    # -- what a hook calls

    def fraction(self, k):
        """The text of entry k's fraction of h (``h/2``); ``h`` for a whole step."""
        return "h" if self.scheme.whole_step is not None else _schemes._fraction_text(self.scheme.steps[k][1])

    def comment(self, text):
        """``# A  drift       text``: the letter's name (and title, for a letter spelled in words)."""
        letter = self.letter
        title = "" if letter.whole_step else f"{letter.title:<11} "
        self.lines.append(f"# {letter.name}  {title}{text}")

    def line(self, *lines):
        """Lines as they are (scalars, or statements that work in both storage forms)."""
        self.lines.extend(lines)

    def each(self, targets, expr, cast=False, **kw):
        """``targets[j] = expr`` for every coordinate j (``targets``: a name or a tuple of names
        the expression's tuple is unpacked into); ``expr`` is formatted with ``j`` and ``kw``.
        ``cast``: the value may be wider than the storage type (a register is then wrapped in DT;
        an array's store converts it)."""
        self.written.update(_targets(targets))
        self.lines += self.storage.each(targets, expr, cast, kw)

    def each_normal(self, assignments, normals=1, cast=False, **kw):
        """Draw ``normals`` standard normals per coordinate from the path's Philox stream and
        run ``assignments`` (``[(targets, expr), ...]``, as :meth:`each`) for every
        coordinate, ``{z}`` (or ``{z0}``, ``{z1}``, ...) its normals."""
        for targets, _ in assignments:
            self.written.update(_targets(targets))
        self.lines += self.storage.each_normal(assignments, normals, cast, kw)

    def force(self, k, group=None):
        """Evaluate F(q) into F (at entry k's clock time for a time-dependent kernel); with
        ``group``, force group g's F_g(q) into its slots of the stacked forces."""
        if group is not None:
            self.lines.append(self.storage.force(group=group))
        elif self.time_dependent:
            self.lines.append(self.storage.force(f"tab[row, {k}]")
                              + f"     # F(q, t) at t_n + {self.scheme.substep_times[k]:g} h")
        else:
            self.lines.append(self.storage.force())

    def force_of(self, group):
        """A template value (for :meth:`each`) of coordinate j of force group ``group``'s cached
        force in the stacked forces: ``F[{j}]`` for group 0, ``F[D + {j}]`` for group 1, ..."""
        return self.storage.force_of(group)

    def save(self, parts):
        """Remember ``parts`` (of q, p, F) as q0, p0, F0 (a Metropolis sub-word's start)."""
        self.lines += self.storage.save(tuple(parts))

    def accept(self, test, parts, negate=()):
        """A Metropolis decision: if ``test`` holds, count it (``na``) and carry U1 as the path's U;
        else put ``parts`` back from q0, p0, F0 (those in ``negate`` negated). The register form selects (no
        branch to mispredict), the array form branches (it copies only on a rejection)."""
        self.lines += self.storage.accept(test, tuple(parts), tuple(negate))

    def potential(self):
        """The text of U(q) of the path (the system's compiled ``energy``)."""
        return self.storage.potential()

    def uniform(self, name):
        """Draw a uniform on (0, 1) into ``name``: the next slot of the path's normal stream, read as
        u = Phi(z) of its normal z (:func:`sdekit.kernels.philox.uniform`)."""
        self.lines += [f"{name}, ctr, spare = uniform(key0, key1, path, ctr, spare)     # one slot: Phi(z) of its normal"]

    def reduce(self, target, expr, **kw):
        """``target`` = the sum over coordinates j of ``expr`` (a template as in :meth:`each`)."""
        self.lines += self.storage.reduce(target, expr, kw)

    def log_weight(self, increment):
        """With a change of drift (``drift_change``): u(q) into ``uq`` (an array, or a D-tuple), then
        ``uq[j] = increment`` (a template with ``{u}`` for u_j, ``{z}`` for coordinate j's normal),
        summed into the path's log-weight ``lw``. Returns the assignment for :meth:`each_normal`
        (run it before the letter's own, which sees the same normals), and the lines that add
        the sum (to append after it); ``(None, [])`` without a change of drift."""
        if not self.drift_change:
            return None, []
        self.lines.append(self.storage.drift_force() + "     # u(q) of the drift change (sdekit.girsanov)")
        self.function(_letters.ou.increment, "girsanov_increment")
        return ("uq", increment.replace("{u}", "uq[{j}]")), \
            self.storage.reduce("dlw", "uq[{j}]", {}) + ["lw += dlw     # log w += m.z - |m|^2/2 (Girsanov)"]

    def end_force(self):
        """F(q_n+1) (at t_n+1): the force that ends a whole step."""
        self.lines.append(self.storage.force("tab[row + 1, 0]") + "     # F(q_n+1, t_n+1)"
                          if self.time_dependent else self.storage.force())

    def coefficient(self, name, k):
        """The text of entry k's coefficient ``name`` (gamma, sigma, kT): the scalar argument,
        or its column of the table at this step (time-dependent kernels)."""
        if not self.time_dependent:
            return name
        try:
            col = self._entries[name][k]
        except KeyError:
            raise ValueError(f"letter {self.letter.name!r}: reads the coefficient {name!r}, which its "
                             f"coefficients {self.letter.coefficients} do not declare") from None
        return f"tab[row, {self._cols[name] + col}]"

    def path_constants(self, names, expr):
        """Values fixed along a path, computed once per path by ``ou_constants(xi, gamma, sigma, d)``
        (``expr`` may read those four): returns the text of their slots (``cs[0], cs[1]``)."""
        start = sum(len(n) for _, n, _ in self.constants)
        self.constants.append((self.k, tuple(names), expr))
        return ", ".join(f"cs[{start + i}]" for i in range(len(names)))

    def function(self, f, name):
        """Make the Python function ``f`` (numba-compilable scalar code) callable as ``name`` in the
        generated module: registered with :mod:`sdekit.kernels.runtime` under a fingerprint of
        its code, compiled there for the backend. Returns ``name``."""
        key, stable = runtime.register_function(f)
        self.stable &= stable
        where = f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', '?')}"
        self.functions[name] = (f'{name} = _function("{key}", "{self.backend}")   '
                                f'# letter {self.letter.name}: {where} (registered by its fingerprint)')
        return name

    # -- the loop

    def run(self, letter, k, delta, new_force):
        """Entry k's lines: ``letter``'s source hook, once it is known to run on this kernel."""
        if not isinstance(letter, _letters.Letter):
            raise ValueError(f"letter: unknown letter {letter!r} for backend {self.backend!r}")
        if not letter.supports("source"):
            raise ValueError(f"letter {letter.name!r} ({letter.title or type(letter).__name__}): backend "
                             f"{self.backend!r} cannot run it: it defines no source() hook (the compiled kernels' "
                             f"lines, sdekit.letters.Letter.source); use backend='numpy'")
        if self.constraint is not None and not letter.constrained:
            raise ValueError(f"letter {letter.name!r} ({letter.title}): does not run on constrained systems "
                             f"(its constrained attribute is False)")
        self.letter, self.k = letter, k
        letter.source(self, k, delta, new_force)

    def features(self):
        """The kernel's features (:mod:`sdekit.kernels.abi`): backend, storage and what the lines use."""
        features = {self.backend, self.storage.name}
        if self.constraint is not None:
            features.add("constrained")
        if self.time_dependent:
            features.add("time_dependent")
        if self.storage.name == "register" or self.storage.normals > 1:
            features.add("normals_buffer")
        if self.scheme.tests:
            features.add("metropolis")
            if self.storage.name == "array":
                features.add("metropolis_buffers")
        if self.drift_change:
            features.add("girsanov")
            if self.storage.name == "array":
                features.add("girsanov_buffers")
        if self.storage.shadow:
            features.add("shadow")
        return frozenset(features)

