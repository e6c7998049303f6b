r"""The compiled kernels' interface, written once: every argument of every generated function.

The generated module (:mod:`sdekit.kernels.codegen`) and its hosts
(:mod:`sdekit.kernels.cpu`, :mod:`sdekit.kernels.cuda`) never spell an argument list:
the ``def`` lines, the calls between the generated functions and the host's calls are
all made here from :data:`KERNELS`, an ordered list of :class:`Argument` per function.
An argument may be *conditional* on a feature of the kernel (:data:`FEATURES`): the
coefficient table ``tab`` exists only in time-dependent kernels, SHAKE's work arrays
``qo, work`` only with a constraint. A kernel module carries its features as
``FEATURES`` (written into its text), and :func:`arguments` builds a host call's tuple
from a dict of values by name, so adding an argument is one line here.

Roles
-----
``range``      which paths a call runs (first, last, first_chunk)
``path``       per-path state: (n_paths, d) arrays on the host, one path's copy in ``step``
``stream``     the Philox stream: the run's key, the draw position
``run``        how many steps, how often to record
``parameter``  the run's scalar parameters
``mass``       the (d,) mass vectors
``constant``   per-path values fixed for the run (the sub-steps ``d``, the OU constants ``cs``)
``work``       scratch arrays (the register form's gradient buffers, normals, SHAKE's)
``output``     what a call writes: records, partial sums, divergence steps
``extra``      optional inputs (the coefficient table)

Examples
--------
>>> names("trajectory", {"cpu", "array"})[:5]
('q', 'p', 'F', 'R', 'xi')
>>> "tab" in names("trajectory", {"cpu", "array", "time_dependent"})
True
"""
from collections import namedtuple

Argument = namedtuple("Argument", "name role when doc")
Argument.__doc__ = """One argument: its name, its role (see the module docstring), the feature it
needs (``when``: None for always, else one of :data:`FEATURES`) and what it is."""

FEATURES = ("cpu", "cuda", "array", "register", "constrained", "time_dependent", "normals_buffer", "metropolis",
            "metropolis_buffers", "girsanov", "girsanov_buffers", "shadow")
"""What decides the optional arguments: the backend, the storage form (per-path arrays or
D-tuples in registers), a constraint, time dependence, a work array for the normals
(register form, or a letter drawing more than one normal per coordinate), a Metropolis
test (the count of accepted proposals) and the arrays that remember the state for it
(array form), a change of drift (the paths' Girsanov log-weights, :mod:`sdekit.girsanov`) and
the array its u(q) is evaluated into (array form), and the shadow-work bookkeeping (each path's
work, heat and energy: :mod:`sdekit.shadow`)."""


def _a(name, role, doc, when=None):
    return Argument(name, role, when, doc)


PATHS = (
    _a("q", "path", "positions (n_paths, d)"),
    _a("p", "path", "momenta (n_paths, d); (1, d) zeros if the state has none"),
    _a("F", "path", "forces F(q) (n_paths, d)"),
    _a("R", "path", "LM's pending normals (n_paths, d); (1, d) zeros if the state has none"),
    _a("p_O", "path", "p right after the word's last O (n_paths, d), kept on the device between launches", "cuda"),
    _a("xi", "path", "thermostat variables (n_paths,)"),
    _a("na", "path", "accepted Metropolis proposals of each path since the run's start (n_paths,)", "metropolis"),
    _a("lw", "path", "Girsanov log-weight of each path since the run's start (n_paths,)", "girsanov"),
    _a("nw", "path", "shadow work of each path since step 0 (n_paths,)", "shadow"),
    _a("nh", "path", "heat of each path since step 0 (n_paths,)", "shadow"),
)
STREAM = (
    _a("key0", "stream", "the run's Philox key, first word"),
    _a("key1", "stream", "the run's Philox key, second word"),
    _a("ctr0", "stream", "every path's draw position at the first step"),
)
RUN = (
    _a("n_steps", "run", "steps to run"),
    _a("record_every", "run", "steps between records", "cpu"),
    _a("step0", "run", "steps already run (divergence steps count from the run's start)", "cuda"),
)
PARAMETERS = (
    _a("h", "parameter", "step size"),
    _a("gamma", "parameter", "friction (unused by a time-dependent kernel: the table has it)"),
    _a("kT", "parameter", "temperature (idem)"),
    _a("eps", "parameter", "thermostat coupling"),
    _a("sigma", "parameter", "noise amplitude of O (idem)"),
    _a("max_abs", "parameter", "divergence bound on |q|"),
)
MASSES = (
    _a("inv_mass", "mass", "1 / mass (d,)"),
    _a("sqrt_mass", "mass", "sqrt(mass) (d,)"),
)
EXTRAS = (
    _a("tab", "extra", "coefficient table, a row per step (codegen.table_columns)", "time_dependent"),
)
SUMS = (
    _a("part", "output", "sums of v, v^2, v^4 of the recorded columns (cpu: per chunk and record, "
                         "cuda: per block)"),
    _a("cnt", "output", "live paths counted with part"),
    _a("bad", "output", "per path: the step at which it diverged (0 if not; minus the step for SHAKE/RATTLE)"),
)
RUN_ARGS = PATHS + STREAM + RUN + PARAMETERS + MASSES

KERNELS = {
    "trajectory": RUN_ARGS + (
        _a("rec_q", "output", "recorded q (n_records, d)"),
        _a("rec_p", "output", "recorded p"),
        _a("rec_pO", "output", "recorded p_O"),
        _a("rec_xi", "output", "recorded xi (n_records,)"),
        _a("rec_na", "output", "recorded accepted proposals (n_records,)", "metropolis"),
        _a("rec_lw", "output", "recorded log-weights (n_records,)", "girsanov"),
        _a("rec_nw", "output", "recorded shadow work (n_records,)", "shadow"),
        _a("rec_nh", "output", "recorded heat (n_records,)", "shadow"),
    ) + EXTRAS,
    "ensemble": (_a("first_chunk", "range", "chunk of part[0]"),) + RUN_ARGS + SUMS + EXTRAS,
    "advance": RUN_ARGS + SUMS + EXTRAS,
    "reduce_blocks": (_a("part", "output", "the blocks' sums"), _a("cnt", "output", "the blocks' counts"),
                      _a("S", "output", "per-record sums"), _a("counts", "output", "live paths per record"),
                      _a("r", "range", "the record")),
    "step": (
        _a("q", "path", "the path's q"), _a("p", "path", "its p"), _a("F", "path", "its force"),
        _a("R", "path", "its pending normals"), _a("pO", "path", "its p after the last O"),
        _a("xi", "path", "its thermostat variable"),
        _a("na", "path", "its accepted Metropolis proposals", "metropolis"),
        _a("U", "path", "its potential U(q), carried along the path", "metropolis"),
        _a("lw", "path", "its Girsanov log-weight", "girsanov"),
        _a("W", "path", "its shadow work so far", "shadow"),
        _a("Qh", "path", "its heat so far", "shadow"),
        _a("E", "path", "its energy H(q, p) at the step's start, carried along the path", "shadow"),
        _a("ctr", "stream", "its draw position"), _a("spare", "stream", "the second normal of its pair"),
        _a("path", "stream", "its index (the Philox counter's second word)"),
        _a("key0", "stream", "key"), _a("key1", "stream", "key"),
        _a("d", "constant", "the sub-steps f h (deltas)"), _a("cs", "constant", "the OU constants (ou_constants)"),
        _a("gamma", "parameter", "friction"), _a("kT", "parameter", "temperature"),
        _a("eps", "parameter", "thermostat coupling"), _a("sigma", "parameter", "noise amplitude"),
        _a("inv_mass", "mass", "1 / mass (register form: a D-tuple in the storage type)"),
        _a("sqrt_mass", "mass", "sqrt(mass) (idem)"),
        _a("qa", "work", "the gradient's input (register form)", "register"),
        _a("Fa", "work", "the gradient's output (register form)", "register"),
        _a("za", "work", "normals drawn ahead of their use", "normals_buffer"),
        _a("q0", "work", "q at the Metropolis sub-word's start (array form)", "metropolis_buffers"),
        _a("p0", "work", "p at its start", "metropolis_buffers"),
        _a("F0", "work", "the forces at its start", "metropolis_buffers"),
        _a("uq", "work", "the drift change u(q), then the log-weight increments (array form)", "girsanov_buffers"),
        _a("qo", "work", "q before the drift (SHAKE)", "constrained"),
        _a("work", "work", "SHAKE's and RATTLE's scratch", "constrained"),
        _a("tab", "extra", "coefficient table", "time_dependent"),
        _a("row", "extra", "this step's row of tab", "time_dependent"),
    ),
}
"""Each generated function's arguments, in order (conditions filtered by :func:`names`)."""

RESULTS = {
    "step": (_a("xi", "path", "new xi"), _a("ctr", "stream", "new draw position"),
             _a("spare", "stream", "new spare"), _a("na", "path", "new count", "metropolis"),
             _a("U", "path", "new U(q)", "metropolis"), _a("lw", "path", "new log-weight", "girsanov"),
             _a("W", "path", "new shadow work", "shadow"), _a("Qh", "path", "new heat", "shadow"),
             _a("E", "path", "new H(q, p)", "shadow"),
             _a("ok", "output", "SHAKE and RATTLE succeeded", "constrained"),
             _a("q", "path", "new q", "register"), _a("p", "path", "new p", "register"),
             _a("F", "path", "new F", "register"), _a("R", "path", "new R", "register"),
             _a("pO", "path", "new pO", "register")),
    "trajectory": (_a("ctr", "stream", "draw position after the run"),
                   _a("bad", "output", "step at which the path diverged (0 if not)")),
}
"""What a generated function returns, in order."""


def _applies(arg, features):
    return arg.when is None or arg.when in features


def _check_features(features):
    bad = sorted(set(features) - set(FEATURES))
    if bad:
        raise ValueError(f"features: unknown kernel features {bad}; known: {FEATURES}")


def names(kernel, features, table=None):
    """The argument names of ``kernel`` for a kernel with ``features``, in order."""
    _check_features(features)
    table = KERNELS if table is None else table
    try:
        args = table[kernel]
    except KeyError:
        raise ValueError(f"kernel: no generated function {kernel!r}; known: {sorted(table)}") from None
    return tuple(a.name for a in args if _applies(a, features))


def results(kernel, features, **rename):
    """The text of the names ``kernel`` returns (``xi, ctr, spare``), renamed by ``rename``."""
    return ", ".join(rename.get(n, n) for n in names(kernel, features, RESULTS))


def _wrap(head, items, tail, indent, width):
    """``head + ", ".join(items) + tail``, broken after commas with continuation lines
    aligned under the first item, each line at most ``width`` long where possible."""
    text = head + ", ".join(items) + tail
    if len(indent) + len(text) <= width:
        return indent + text
    pad = indent + " " * len(head)
    lines, line = [], indent + head
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else tail)
        if i == 0:
            line += piece
        elif len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = pad + piece
        else:
            line += " " + piece
    lines.append(line)
    return "\n".join(lines)


def define(kernel, features, indent="", width=110):
    """The ``def`` line of ``kernel`` (wrapped)."""
    return _wrap(f"def {kernel}(", names(kernel, features), "):", indent, width)


def call(kernel, features, indent="", width=110, assign=None, **values):
    """A call of ``kernel`` passing ``values[name]`` (an expression) for each argument it
    renames, the argument's own name otherwise; ``assign`` is the left-hand side, if any."""
    unknown = sorted(set(values) - set(names(kernel, features)))
    if unknown:
        raise ValueError(f"{kernel}: no arguments {unknown} in a kernel with features {sorted(features)}")
    head = f"{assign} = {kernel}(" if assign else f"{kernel}("
    return _wrap(head, [values.get(n, n) for n in names(kernel, features)], ")", indent, width)


def arguments(module, kernel, values):
    """The argument tuple of a host call of ``module.<kernel>`` (a generated module, which
    carries its ``FEATURES``): ``values[name]`` for each of its arguments, in order.

    Raises ValueError naming the kernel and the missing arguments."""
    order = names(kernel, module.FEATURES)
    missing = [n for n in order if n not in values]
    if missing:
        raise ValueError(f"{kernel}: no value for the kernel arguments {missing}")
    return tuple(values[n] for n in order)


def describe(kernel, features):
    """A readable table of ``kernel``'s arguments (name, role, meaning)."""
    return "\n".join(f"{a.name:<13}{a.role:<10}{a.doc}" for a in KERNELS[kernel] if _applies(a, features))
