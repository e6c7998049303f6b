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
  then a register copy, and the per-step divergence check (``healthy``) a few compares:
  ``|q_j| <= max_abs``, ``|p_j| <= BIG``, ``|xi| <= BIG`` (NaN fails each; BIG is
  :func:`sdekit._checks.overflow_bound`).
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


def _indent(lines, n):
    """``lines`` joined, each non-empty one indented by ``n`` spaces."""
    pad = " " * n
    return "\n".join(pad + line if line else line for line in lines)


def _healthy(jit, body):
    """The ``healthy`` function (the per-step divergence check) with the lines ``body``."""
    return f'''

{jit}
def healthy(q, p, xi, max_abs):
    """False once the path is non-finite or some |q_i| > max_abs (as sdekit.reference.bad_paths).

    max_abs is finite (at most BIG), so NaN and inf fail every test."""
{_indent(body, 4)}
'''


# ----------------------------------------------------------------------------- strategies

class _Storage:
    """What a strategy provides (``dim``: D; ``normals``: the most normals a letter of the word
    draws per coordinate).

    ``name`` (a feature of :mod:`sdekit.kernels.abi`), ``doc`` (for ``step``'s docstring);
    for the letters' lines ``each``, ``each_normal``, ``force``, ``copy``; for the module
    ``helpers`` (force, kinetic) and ``checks`` (healthy, accumulate); for the cpu drivers
    ``work``, ``trajectory_setup``, ``paths_setup``, ``paths_load``, ``store``, ``record``.
    """

    def __init__(self, dim, normals):
        self.dim, self.normals = dim, normals


class ArrayStorage(_Storage):
    """A path's q, p, F, R, pO are arrays of D: a letter's statement is one loop ``for j in range(D)``."""

    name = "array"
    doc = ", in place on q, p, F, R, pO"

    @staticmethod
    def _assign(targets, expr):
        return ", ".join(f"{t}[j]" for t in targets) + " = " + expr

    def each(self, targets, expr, cast, kw):
        return [f"for j in range(D): {self._assign(_targets(targets), expr.format(j='j', **kw))}"]

    def each_normal(self, assignments, n, cast, kw):
        if n == 1:  # coordinate j's normal right before its update (O's order)
            lines, z = ["for j in range(D):", "    " + DRAW], {"z": "z", "z0": "z"}
        else:       # every coordinate's first normal, then the second, ... (the numpy backend's order)
            lines = [f"for j in range({n} * D):     # drawn ahead: every coordinate's first normal, then second, ...",
                     "    " + DRAW, "    za[j] = z", "for j in range(D):"]
            z = {f"z{i}": f"za[{i} * D + j]" if i else "za[j]" for i in range(n)}
        for targets, expr in assignments:
            lines.append("    " + self._assign(_targets(targets), expr.format(j="j", **z, **kw)))
        return lines

    def force(self, t=None):
        return f"force(q, F{'' if t is None else ', ' + t})"

    def copy(self, dst, src):
        return f"for j in range(D): {dst}[j] = {src}[j]"

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
'''

    def checks(self, jit, jit_call, has_p, accumulated):
        acc = []
        for var, start in accumulated:
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
def accumulate(row, q, p, pO, xi):
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
        return lines

    def trajectory_setup(self, features):
        return (["qi, pi, Fi, Ri = q[0].copy(), p[0].copy(), F[0].copy(), R[0].copy()   # private copies: no aliasing"]
                + self.work(features) + ["pO = np.empty(D, DT)", "for j in range(D):", "    pO[j] = NAN"])

    def paths_setup(self, features):
        return (["qi = np.empty(D, DT); pi = np.zeros(D, DT); Fi = np.empty(D, DT); Ri = np.zeros(D, DT); "
                 "pO = np.empty(D, DT)"] + self.work(features))

    def paths_load(self, row, parts):
        loads = "; ".join(f"{local}[j] = {host}[{row}, j]" for host, local in parts)
        return ["for j in range(D):", f"    {loads}; pO[j] = NAN"]

    def store(self, row, parts):
        return ["for j in range(D):", "    " + "; ".join(f"{host}[{row}, j] = {local}[j]" for host, local in parts)]

    def record(self, r):
        return ["for j in range(D):", f"    rec_q[{r}, j] = qi[j]; rec_p[{r}, j] = pi[j]; rec_pO[{r}, j] = pO[j]",
                f"rec_xi[{r}] = x"]


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
        return self._each(_targets(targets), lambda j: expr.format(j=j, **kw), cast)

    def each_normal(self, assignments, n, cast, kw):
        D = self.dim
        if n * D == 1:
            lines, z = ["z0, ctr, spare = normal(key0, key1, path, ctr, spare)"], (lambda i, j: "z0")
        else:  # one copy of the (inlined) generator per letter, whatever D: the normals go through za
            lines = [f"for j in range({'D' if n == 1 else f'{n} * D'}):", "    " + DRAW, "    za[j] = z"]
            z = lambda i, j: f"za[{i * D + j}]"
        for targets, expr in assignments:
            value = lambda j: expr.format(j=j, z=z(0, j), **{f"z{i}": z(i, j) for i in range(n)}, **kw)
            lines += self._each(_targets(targets), value, cast)
        return lines

    def force(self, t=None):
        if t is not None:
            raise ValueError("time dependence: the register form has no F(q, t) (array form only)")
        return "F = force(q, qa, Fa)"

    def copy(self, dst, src):
        return f"{dst} = {src}"

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
'''

    def checks(self, jit, jit_call, has_p, accumulated):
        D = self.dim
        # the same tests as healthy() in the array form and reference.bad_paths (NaN fails each)
        ok = ([f"(abs(q[{j}]) <= max_abs)" for j in range(D)] + ["(abs(xi) <= BIG)"]
              + ([f"(abs(p[{j}]) <= BIG)" for j in range(D)] if has_p else []))
        sums = [(f"{start + j}", f"{var}[{j}]") for var, start in accumulated for j in range(D)] + [("K - 1", "xi")]
        acc = [line for k, v in sums for line in
               (f"v = {v}", "v2 = v * v", f"k = {k}", "row[0, k] += v", "row[1, k] += v2", "row[2, k] += v2 * v2")]
        return _healthy(jit, ["return " + " & ".join(ok)]) + f'''

{jit_call}
def accumulate(row, q, p, pO, xi):
    """Add one path's recorded values to a (3, K) row of sums: v, v^2, v^4 of each column."""
{_indent(acc, 4)}
'''

    # -- the cpu drivers' pieces

    def _row(self, fmt):
        return _tup(fmt.format(j=j) for j in range(self.dim))

    def work(self, features):
        za = "np.empty(D)" if self.normals <= 1 else f"np.empty({self.normals} * D)"
        return [f"im, sm = {self._row('DT(inv_mass[{j}])')}, {self._row('DT(sqrt_mass[{j}])')}",
                f"qa, Fa, za = np.empty(D, DT), np.empty(D, DT), {za}   # work arrays: the gradient's, the normals'"]

    def trajectory_setup(self, features):
        rows = ", ".join(self._row(f"{a}[0, {{j}}]") for a in ("q", "p", "F", "R"))
        return self.work(features) + [f"qi, pi, Fi, Ri = {rows}", f"pO = {self._row('DT(NAN)')}"]

    def paths_setup(self, features):
        return self.work(features)

    def paths_load(self, row, parts):
        have = dict(parts)
        zero = self._row("DT(0.0)")
        rows = ", ".join(self._row(f"{host}[{row}, {{j}}]") if host in have else zero for host in ("q", "p", "F", "R"))
        return [f"qi, pi, Fi, Ri = {rows}", f"pO = {self._row('DT(NAN)')}"]

    def store(self, row, parts):
        return ["; ".join(f"{host}[{row}, {j}] = {local}[{j}]" for host, local in parts for j in range(self.dim))]

    def record(self, r):
        D = range(self.dim)
        return ["; ".join([f"rec_q[{r}, {j}] = qi[{j}]" for j in D] + [f"rec_p[{r}, {j}] = pi[{j}]" for j in D]
                          + [f"rec_pO[{r}, {j}] = pO[{j}]" for j in D] + [f"rec_xi[{r}] = x"])]

