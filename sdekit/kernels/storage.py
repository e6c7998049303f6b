r"""Storage strategies: how a generated kernel holds one path's state.

A strategy turns the letters' coordinate-wise statements (written through
:class:`~sdekit.kernels.writer.Writer`) into Python source, and writes the pieces of
the module that depend on the storage: the ``force``, ``kinetic``, ``healthy`` and
``accumulate`` helpers and the cpu drivers' loads, records and stores.

* :class:`ArrayStorage` — q, p, F, R and p_O are per-path arrays of D; a statement is
  one loop ``for j in range(D)`` (cuda, constrained or time-dependent kernels, and cpu
  systems with d > :data:`UNROLL`).
* :class:`RegisterStorage` — they are D-tuples of scalars, the statement unrolled over
  the coordinates, so LLVM keeps them in registers (cpu, d <= :data:`UNROLL`); only the
  force goes through two small work arrays (the system's ``gradient(q, out)`` takes
  arrays), written just before and read just after the call, which LLVM forwards. p_O is
  then a register copy, and the divergence check (``healthy``, once per record block) a few
  compares: ``|q_j| <= max_abs``, ``|p_j| <= BIG``, ``|xi| <= BIG`` (NaN fails each; BIG is
  :func:`sdekit._checks.overflow_bound`), with the block's running max of ``|q_j|``
  (:meth:`largest`, the one per-step check; see :func:`sdekit.kernels.drivers._blocks`).
* :func:`scalar_form` — which of the two a kernel gets.

Normals: a letter drawing n normals per coordinate takes them from the path's Philox
stream in the numpy backend's order — every coordinate's first normal, then every
coordinate's second, ... (n = 1: coordinate j's normal right before its update, as O).
With d > 1 they are drawn in a loop (one inlined copy of the generator per letter,
whatever d).

Also the small text helpers the generator shares: :func:`_tup`, :func:`_tuple_lines`,
:func:`_indent`.
"""

UNROLL = 4
"""cpu kernels for systems with at most this many coordinates keep a path's q, p, F, R
and p_O in tuples of scalars (LLVM keeps them in registers); larger systems use arrays.
The unrolled code compiles slower as d grows (BADODAB with d = 10 unrolled: ~8 s against
~6 s with arrays), and the gain is in the small systems where the state fits in registers."""

DRAW = "z, ctr, spare = normal(key0, key1, path, ctr, spare)"
"""One normal from the path's Philox stream (``z``), advancing its counter and spare."""


def scalar_form(backend, dim, array_only=False):
    """Whether the generated cpu kernel keeps the per-path state in scalars (see UNROLL);
    never with a constraint (SHAKE and RATTLE work on arrays) or time dependence
    (``array_only``)."""
    return backend == "cpu" and dim <= UNROLL and not array_only


# ----------------------------------------------------------------------------- text

def _tup(items):
    """``(a, b, ...)``: the source of a tuple (a 1-tuple gets its comma)."""
    items = list(items)
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _tuple_lines(head, items, width=100):
    """``head (a, b, ...)`` as one line, or one item per line (aligned) if longer than ``width``."""
    line = head + _tup(items)
    if len(line) <= width or len(items) == 1:
        return [line]
    pad = " " * (len(head) + 1)
    return [head + "(" + items[0] + ","] + [pad + item + "," for item in items[1:-1]] + [pad + items[-1] + ")"]


def _targets(targets):
    """A statement's targets as a tuple of names (``"p"`` or ``("p", "R")``)."""
    return (targets,) if isinstance(targets, str) else tuple(targets)


def _format(expr, j, kw):
    """``expr`` with ``{j}`` the coordinate and ``kw`` (a callable value is called with j: a force
    group's index into the stacked forces, :meth:`_Storage.force_of`)."""
    return expr.format(j=j, **{k: v(j) if callable(v) else v for k, v in kw.items()})


def _indent(lines, n):
    """``lines`` joined, each non-empty one indented by ``n`` spaces."""
    pad = " " * n
    return "\n".join(pad + line if line else line for line in lines)


def _healthy(jit, body):
    """The ``healthy`` function (the divergence check at a record block's end) with the lines ``body``."""
    return f'''

{jit}
def healthy(q, p, xi, max_abs):
    """False once the path is non-finite or some |q_i| > max_abs (as sdekit.reference.bad_paths).

    max_abs is finite (at most BIG), so NaN and inf fail every test."""
{_indent(body, 4)}
'''


# ----------------------------------------------------------------------------- strategies

SCALARS = ("na", "lw", "W", "Qh")
"""The per-path scalars a row of sums accumulates besides xi: the Metropolis count, the Girsanov
log-weight, the shadow work and the heat (one column each)."""


class _Storage:
    """What a strategy provides (``dim``: D; ``normals``: the most normals a letter of the word
    draws per coordinate).

    ``name`` (a feature of :mod:`sdekit.kernels.abi`), ``doc`` (for ``step``'s docstring);
    for the letters' lines ``each``, ``each_normal``, ``force``, ``copy``; for the module
    ``helpers`` (force, kinetic) and ``checks`` (healthy, accumulate); for the cpu drivers
    ``work``, ``trajectory_setup``, ``paths_setup``, ``paths_load``, ``store``, ``record`` and
    the record blocks' ``block_save``, ``block_restore`` (the state at a block's start, for a
    replay) and ``largest`` (the running max of |q_j|).
    """

    def __init__(self, dim, normals, groups=1, metropolis=False, girsanov=False, shadow=False):
        self.dim, self.normals, self.groups, self.metropolis = dim, normals, groups, metropolis
        self.girsanov = girsanov   # the paths' Girsanov log-weights lw (a change of drift: sdekit.girsanov)
        self.shadow = shadow   # the paths carry shadow work, heat and energy (sdekit.shadow)

    def force_of(self, group):
        """``j -> text`` of coordinate j of force group ``group`` in the stacked forces F (G D of them)."""
        if group is None or group == 0:
            return lambda j: f"F[{j}]"
        return lambda j: f"F[{group * self.dim + j}]" if isinstance(j, int) else f"F[{group} * D + {j}]"

    def _group_helpers(self, body):
        """``force<g>`` for each force group g: its part's gradient into F's slots of group g."""
        return "".join(body(g) for g in range(self.groups)) if self.groups > 1 else ""

    def potential(self):
        """The text of U(q) of the path's q (:meth:`potential_of` in each form)."""
        return self.potential_of("q")

    def accept(self, test, parts, negate):
        """A Metropolis decision as a branch (see :meth:`Writer.accept`)."""
        return ([f"if {test}:", "    na += 1.0", "    U = U1", "else:"]
                + ["    " + line for line in self.restore(parts, negate)])

    def _scalars(self):
        """The per-path scalars after xi that a driver carries and accumulates (the Metropolis count,
        the Girsanov log-weight, the shadow work and heat)."""
        return (", na" if self.metropolis else "") + (", lw" if self.girsanov else "") + (", W, Qh" if self.shadow else "")

    def _scalar_records(self, r):
        """The trajectory's records of the carried scalars at record ``r``."""
        return ([f"rec_na[{r}] = a"] if self.metropolis else []) + ([f"rec_lw[{r}] = gw"] if self.girsanov else []) + \
            ([f"rec_nw[{r}] = Wi", f"rec_nh[{r}] = Qi"] if self.shadow else [])

    def _drift_helper(self, jit, body, args):
        """``drift_force``: u(q) of the drift change (its system's gradient_u, negated)."""
        if not self.girsanov:
            return ""
        return f'''

{jit}
def drift_force({args}):
    """u(q) = -grad U_u(q): the drift change's force (sdekit.girsanov), from its gradient_u."""
{_indent(body, 4)}
'''


class ArrayStorage(_Storage):
    """A path's q, p, F, R, pO are arrays of D: a letter's statement is one loop ``for j in range(D)``."""

    name = "array"
    doc = ", in place on q, p, F, R, pO"

    @staticmethod
    def _assign(targets, expr):
        return ", ".join(f"{t}[j]" for t in targets) + " = " + expr

    @property
    def fwidth(self):
        """The length of the stacked forces F: D, or G D for G force groups."""
        return "D" if self.groups == 1 else f"{self.groups} * D"

    def each(self, targets, expr, cast, kw):
        return [f"for j in range(D): {self._assign(_targets(targets), _format(expr, 'j', kw))}"]

    def save(self, parts):
        lines = ["for j in range(D): " + "; ".join(f"{v}0[j] = {v}[j]" for v in parts if v != "F")]
        if "F" in parts:
            lines.append(f"for j in range({self.fwidth}): F0[j] = F[j]")
        return lines

    def restore(self, parts, negate):
        sign = lambda v: "-" if v in negate else ""
        lines = ["for j in range(D): " + "; ".join(f"{v}[j] = {sign(v)}{v}0[j]" for v in parts if v != "F")]
        if "F" in parts:
            lines.append(f"for j in range({self.fwidth}): F[j] = F0[j]")
        return lines

    def potential_of(self, q):
        return f"energy({q})"

    def reduce(self, target, expr, kw):
        return [f"{target} = 0.0", f"for j in range(D): {target} += {_format(expr, 'j', kw)}"]

    def each_normal(self, assignments, n, cast, kw):
        if n == 1:  # coordinate j's normal right before its update (O's order)
            lines, z = ["for j in range(D):", "    " + DRAW], {"z": "z", "z0": "z"}
        else:       # every coordinate's first normal, then the second, ... (the numpy backend's order)
            lines = [f"for j in range({n} * D):     # drawn ahead: every coordinate's first normal, then second, ...",
                     "    " + DRAW, "    za[j] = z", "for j in range(D):"]
            z = {f"z{i}": f"za[{i} * D + j]" if i else "za[j]" for i in range(n)}
        for targets, expr in assignments:
            lines.append("    " + self._assign(_targets(targets), _format(expr, "j", {**z, **kw})))
        return lines

    def force(self, t=None, group=None):
        if group is not None:
            return f"force{group}(q, F)"
        return f"force(q, F{'' if t is None else ', ' + t})"

    def drift_force(self):
        return "drift_force(q, uq)"

    def copy(self, dst, src):
        return f"for j in range(D): {dst}[j] = {src}[j]"

    def block_save(self):
        return ["for j in range(D): q_b[j] = qi[j]; p_b[j] = pi[j]; R_b[j] = Ri[j]; pO_b[j] = pO[j]",
                f"for j in range({self.fwidth}): F_b[j] = Fi[j]"]

    def block_restore(self):
        return ["for j in range(D): qi[j] = q_b[j]; pi[j] = p_b[j]; Ri[j] = R_b[j]; pO[j] = pO_b[j]",
                f"for j in range({self.fwidth}): Fi[j] = F_b[j]"]

    def largest(self, q, worst):
        return [f"for j in range(D): {worst} = max({worst}, abs({q}[j]))"]

    # -- module text

    def helpers(self, jit, td, gradient_t):
        targ = ", t" if gradient_t else ""
        return f'''

{jit}
def force(q, F{", t" if td else ""}):
    """F = -grad U(q{targ}): the system's gradient(q{targ}, out), negated."""
    gradient(q{targ}, F)
    for j in range(D):
        F[j] = -F[j]


{jit}
def kinetic(p, inv_mass):
    """p^T M^-1 p of one path."""
    acc = 0.0
    for j in range(D):
        acc += p[j] * p[j] * inv_mass[j]
    return acc
''' + self._drift_helper(jit, ["gradient_u(q, uq)", "for j in range(D):", "    uq[j] = -uq[j]"], "q, uq") \
            + self._group_helpers(lambda g: f'''

{jit}
def force{g}(q, F):
    """F[{g} D:{g + 1} D] = -grad U_{g}(q): force group {g} (its part's gradient{g}(q, out)), negated."""
    gradient{g}(q, F[{g} * D:{g + 1} * D])
    for j in range({g} * D, {g + 1} * D):
        F[j] = -F[j]
''')

    def checks(self, jit, jit_call, has_p, accumulated):
        acc = []
        for var, start in accumulated:
            if var in SCALARS:
                acc.append(f"add(row, {start}, {var})")
                continue
            acc.append(f"for j in range(D): add(row, {start} + j, {var}[j])" if start
                       else f"for j in range(D): add(row, j, {var}[j])")
        acc.append("add(row, K - 1, xi)")
        ok = ["ok = abs(xi) <= BIG", "for j in range(D):",
              "    ok = ok & (abs(q[j]) <= max_abs)" + (" & (abs(p[j]) <= BIG)" if has_p else ""), "return ok"]
        return _healthy(jit, ok) + f'''

{jit}
def add(row, k, v):
    """Add v, v^2, v^4 to column k of a (3, K) row of sums."""
    v2 = v * v
    row[0, k] += v
    row[1, k] += v2
    row[2, k] += v2 * v2


{jit}
def accumulate(row, q, p, pO, xi{self._scalars()}):
    """Add one path's recorded values to a (3, K) row of sums."""
{_indent(acc, 4)}
'''

    # -- the cpu drivers' pieces

    def work(self, features):
        lines = []
        if "constrained" in features:
            lines.append("qo, work = np.empty(D), np.empty(WORK)   # SHAKE's q before the drift, its scratch")
        if "normals_buffer" in features:
            lines.append(f"za = np.empty({self.normals} * D)   # normals drawn ahead of their use")
        if "metropolis_buffers" in features:
            lines.append(f"q0, p0, F0 = np.empty(D, DT), np.empty(D, DT), np.empty({self.fwidth}, DT)"
                         "   # the state at a Metropolis sub-word's start")
        if "girsanov_buffers" in features:
            lines.append("uq = np.empty(D)   # u(q) of the drift change, then the log-weight increments")
        lines.append(f"q_b, p_b, R_b, pO_b, F_b = np.empty(D, DT), np.empty(D, DT), np.empty(D, DT), np.empty(D, DT), "
                     f"np.empty({self.fwidth}, DT)   # the state at a record block's start")
        return lines

    def trajectory_setup(self, features):
        return (["qi, pi, Fi, Ri = q[0].copy(), p[0].copy(), F[0].copy(), R[0].copy()   # private copies: no aliasing"]
                + self.work(features) + ["pO = np.empty(D, DT)", "for j in range(D):", "    pO[j] = NAN"])

    def paths_setup(self, features):
        return ([f"qi = np.empty(D, DT); pi = np.zeros(D, DT); Fi = np.empty({self.fwidth}, DT); "
                 "Ri = np.zeros(D, DT); pO = np.empty(D, DT)"] + self.work(features))

    def _split_forces(self, parts):
        """The parts loaded in the coordinate loop, and the stacked forces' own loop (G > 1)."""
        if self.groups == 1:
            return parts, None
        return [(h, l) for h, l in parts if h != "F"], next(((h, l) for h, l in parts if h == "F"), None)

    def paths_load(self, row, parts):
        parts, forces = self._split_forces(parts)
        loads = "; ".join(f"{local}[j] = {host}[{row}, j]" for host, local in parts)
        lines = ["for j in range(D):", f"    {loads}; pO[j] = NAN"]
        if forces:
            lines.append(f"for j in range({self.fwidth}): {forces[1]}[j] = {forces[0]}[{row}, j]")
        return lines

    def store(self, row, parts):
        parts, forces = self._split_forces(parts)
        lines = ["for j in range(D):", "    " + "; ".join(f"{host}[{row}, j] = {local}[j]" for host, local in parts)]
        if forces:
            lines.append(f"for j in range({self.fwidth}): {forces[0]}[{row}, j] = {forces[1]}[j]")
        return lines

    def record(self, r):
        lines = ["for j in range(D):", f"    rec_q[{r}, j] = qi[j]; rec_p[{r}, j] = pi[j]; rec_pO[{r}, j] = pO[j]",
                 f"rec_xi[{r}] = x"]
        return lines + self._scalar_records(r)


class RegisterStorage(_Storage):
    """A path's q, p, F, R, pO are D-tuples of scalars: a letter's statement is unrolled over
    the coordinates into one tuple (cpu, d <= :data:`UNROLL`)."""

    name = "register"
    doc = " on D-tuples q, p, F, R, pO (qa, Fa: the gradient's work arrays, za: the normals')"

    def _each(self, targets, value, cast):
        wrap = (lambda v: f"DT({v})") if cast else (lambda v: v)
        D = self.dim
        if len(targets) == 1:
            return _tuple_lines(f"{targets[0]} = ", [wrap(value(j)) for j in range(D)])
        lines = [", ".join(f"{t}_{j}" for t in targets) + f" = {value(j)}" for j in range(D)]
        return lines + [f"{t} = " + _tup(wrap(f"{t}_{j}") for j in range(D)) for t in targets]

    def each(self, targets, expr, cast, kw):
        return self._each(_targets(targets), lambda j: _format(expr, j, kw), cast)

    def save(self, parts):
        return [", ".join(f"{v}0" for v in parts) + " = " + ", ".join(parts)]

    def restore(self, parts, negate, unless=None):
        """``parts`` back from q0, p0, F0; with ``unless``, as selects that keep each part's value
        where ``unless`` holds."""
        pick = (lambda now, old: old) if unless is None else (lambda now, old: f"{now} if {unless} else {old}")
        lines = []
        for v in parts:
            if v in negate:
                lines += _tuple_lines(f"{v} = ", [pick(f"{v}[{j}]", f"-{v}0[{j}]") for j in range(self.dim)])
            else:
                lines.append(f"{v} = {pick(v, v + '0')}")
        return lines

    def potential_of(self, q):
        return f"potential({q}, qa)"

    def accept(self, test, parts, negate):
        """A Metropolis decision as selects: every part of the state takes the proposal's or the
        start's value (see :meth:`Writer.accept`)."""
        return ([f"accept = {test}", "na += 1.0 if accept else 0.0", "U = U1 if accept else U"]
                + self.restore(parts, negate, unless="accept"))

    def reduce(self, target, expr, kw):
        return [f"{target} = " + " + ".join(_format(expr, j, kw) for j in range(self.dim))]

    def each_normal(self, assignments, n, cast, kw):
        D = self.dim
        if n * D == 1:
            lines, z = ["z0, ctr, spare = normal(key0, key1, path, ctr, spare)"], (lambda i, j: "z0")
        else:  # one copy of the (inlined) generator per letter, whatever D: the normals go through za
            lines = [f"for j in range({'D' if n == 1 else f'{n} * D'}):", "    " + DRAW, "    za[j] = z"]
            z = lambda i, j: f"za[{i * D + j}]"
        for targets, expr in assignments:
            value = lambda j: _format(expr, j, {"z": z(0, j), **{f"z{i}": z(i, j) for i in range(n)}, **kw})
            lines += self._each(_targets(targets), value, cast)
        return lines

    def force(self, t=None, group=None):
        if t is not None:
            raise ValueError("time dependence: the register form has no F(q, t) (array form only)")
        if group is not None:
            return f"F = force{group}(q, F, qa, Fa)"
        return "F = force(q, qa, Fa)"

    def drift_force(self):
        return "uq = drift_force(q, qa, Fa)"

    def copy(self, dst, src):
        return f"{dst} = {src}"

    def block_save(self):
        return ["q_b, p_b, F_b, R_b, pO_b = qi, pi, Fi, Ri, pO"]

    def block_restore(self):
        return ["qi, pi, Fi, Ri, pO = q_b, p_b, F_b, R_b, pO_b"]

    def largest(self, q, worst):
        return [f"{worst} = max({worst}, " + ", ".join(f"abs({q}[{j}])" for j in range(self.dim)) + ")"]

    # -- module text

    def helpers(self, jit, td, gradient_t):
        D = self.dim
        each = lambda fmt: "; ".join(fmt.format(j=j) for j in range(D))
        kin = [f"acc += p[{j}] * p[{j}] * inv_mass[{j}]" for j in range(D)]
        return f'''

{jit}
def force(q, qa, Fa):
    """F = -grad U(q) as a D-tuple: the system's gradient(qa, Fa) on the work arrays qa, Fa."""
    {each("qa[{j}] = q[{j}]")}
    gradient(qa, Fa)
    return {_tup(f"-Fa[{j}]" for j in range(D))}


{jit}
def kinetic(p, inv_mass):
    """p^T M^-1 p of one path."""
    acc = 0.0
{_indent(kin, 4)}
    return acc
''' + self._group_helpers(lambda g: self._group_force(jit, g)) + self._potential(jit) + self._drift_helper(
            jit, [each("qa[{j}] = q[{j}]"), "gradient_u(qa, Fa)", "return " + _tup(f"-Fa[{j}]" for j in range(D))],
            "q, qa, Fa")

    def _copy_in(self):
        """``qa[0] = q[0]; qa[1] = q[1]; ...``: a D-tuple into the work array qa."""
        return "; ".join(f"qa[{j}] = q[{j}]" for j in range(self.dim))

    def _group_force(self, jit, g):
        D, G = self.dim, self.groups
        items = [f"-Fa[{j - g * D}]" if g * D <= j < (g + 1) * D else f"F[{j}]" for j in range(G * D)]
        return f'''

{jit}
def force{g}(q, F, qa, Fa):
    """The stacked forces F (a G D-tuple) with group {g}'s replaced by -grad U_{g}(q) (gradient{g}(qa, Fa))."""
    {self._copy_in()}
    gradient{g}(qa, Fa)
    return {_tup(items)}
'''

    def _potential(self, jit):
        if not (self.metropolis or self.shadow):
            return ""
        return f'''

{jit}
def potential(q, qa):
    """U(q) of a D-tuple: the system's energy(qa) on the work array qa."""
    {self._copy_in()}
    return energy(qa)
'''

    def checks(self, jit, jit_call, has_p, accumulated):
        D = self.dim
        # the same tests as healthy() in the array form and reference.bad_paths (NaN fails each)
        ok = ([f"(abs(q[{j}]) <= max_abs)" for j in range(D)] + ["(abs(xi) <= BIG)"]
              + ([f"(abs(p[{j}]) <= BIG)" for j in range(D)] if has_p else []))
        sums = [(f"{start}", var) if var in SCALARS else (f"{start + j}", f"{var}[{j}]")
                for var, start in accumulated for j in range(1 if var in SCALARS else D)] + [("K - 1", "xi")]
        acc = [line for k, v in sums for line in
               (f"v = {v}", "v2 = v * v", f"k = {k}", "row[0, k] += v", "row[1, k] += v2", "row[2, k] += v2 * v2")]
        return _healthy(jit, ["return " + " & ".join(ok)]) + f'''

{jit_call}
def accumulate(row, q, p, pO, xi{self._scalars()}):
    """Add one path's recorded values to a (3, K) row of sums: v, v^2, v^4 of each column."""
{_indent(acc, 4)}
'''

    # -- the cpu drivers' pieces

    def _row(self, fmt, width=None):
        return _tup(fmt.format(j=j) for j in range(self.dim if width is None else width))

    def _rows(self, fmt_of, have=None):
        """The tuples of q, p, F, R (F: the G D stacked forces); zeros for those not in ``have``."""
        out = []
        for host in ("q", "p", "F", "R"):
            width = self.dim * self.groups if host == "F" else self.dim
            out.append(self._row(fmt_of(host), width) if have is None or host in have else self._row("DT(0.0)", width))
        return ", ".join(out)

    def work(self, features):
        za = "np.empty(D)" if self.normals <= 1 else f"np.empty({self.normals} * D)"
        return [f"im, sm = {self._row('DT(inv_mass[{j}])')}, {self._row('DT(sqrt_mass[{j}])')}",
                f"qa, Fa, za = np.empty(D, DT), np.empty(D, DT), {za}   # work arrays: the gradient's, the normals'"]

    def trajectory_setup(self, features):
        rows = self._rows(lambda a: f"{a}[0, {{j}}]")
        return self.work(features) + [f"qi, pi, Fi, Ri = {rows}", f"pO = {self._row('DT(NAN)')}"]

    def paths_setup(self, features):
        return self.work(features)

    def paths_load(self, row, parts):
        rows = self._rows(lambda host: f"{host}[{row}, {{j}}]", dict(parts))
        return [f"qi, pi, Fi, Ri = {rows}", f"pO = {self._row('DT(NAN)')}"]

    def store(self, row, parts):
        width = lambda host: self.dim * self.groups if host == "F" else self.dim
        return ["; ".join(f"{host}[{row}, {j}] = {local}[{j}]" for host, local in parts for j in range(width(host)))]

    def record(self, r):
        D = range(self.dim)
        return ["; ".join([f"rec_q[{r}, {j}] = qi[{j}]" for j in D] + [f"rec_p[{r}, {j}] = pi[{j}]" for j in D]
                          + [f"rec_pO[{r}, {j}] = pO[{j}]" for j in D] + [f"rec_xi[{r}] = x"]
                          + self._scalar_records(r))]

