r"""Generate the Python source of a kernel from a :class:`~sdekit.schemes.Scheme`.

The generated module reads like the scheme: its ``step`` function has one line per
letter, in word order, each calling the letter's flow from :mod:`sdekit.operators`
(compiled for the backend by :mod:`sdekit.kernels.runtime`), with the letter's
fraction of h folded into a literal in ``deltas``. The force is evaluated only
where :attr:`Scheme.evaluations` says so (lazily, first-same-as-last), exactly as
in the numpy reference :func:`sdekit.reference.step`.

One generator, in three modules:

* here: what the scheme says of a kernel (:func:`columns`,
  :func:`table_columns`, :func:`adaptive`, :func:`letters_fingerprint`), the module
  text (:func:`generate`: the header, ``step``, the drivers) and :func:`constraint_info`;
* :mod:`sdekit.kernels.writer`: the letters write their own lines: ``step`` is a loop
  over ``scheme.entries`` calling each letter's :meth:`~sdekit.letters.Letter.source`
  hook with a :class:`~sdekit.kernels.writer.Writer`
  (``g.each("p", "kick(p[{j}], F[{j}], {delta})", delta=delta)``); a letter without the
  hook raises a ValueError naming it and the backend;
* :mod:`sdekit.kernels.drivers`: the text of the drivers around ``step`` (below);
* :mod:`sdekit.kernels.storage`: the storage of a path's state is a strategy (arrays,
  or D-tuples of scalars in registers for cpu systems with d <= ``UNROLL``) that turns
  the letters' coordinate-wise statements into loops or unrolled tuples and writes the
  drivers' loads, records and stores, so a letter's hook is written once for both.

Every argument list (``def`` lines, the calls between the generated functions, the
host's calls) comes from :mod:`sdekit.kernels.abi`, which lists each function's
arguments once with the feature (backend, storage, constraint, time dependence) each
needs; the module's ``FEATURES`` says which it was generated with.

Around ``step`` the module defines the drivers:

* ``trajectory`` (cpu) — one long path, recording every ``record_every`` steps;
  both cpu drivers run a path one record block at a time and check it at the block's end
  (a failing block is replayed step by step to name the step:
  :func:`sdekit.kernels.drivers._blocks`), so a step carries no bookkeeping but a running max;
* ``ensemble`` (cpu) — paths in parallel over fixed chunks of ``CHUNK`` paths: it runs a
  slice of the chunks without the GIL and the host's threads run the slices (no parfor, which
  took a third of the compile time; one function: a chunk loop calling a per-chunk function
  took ~0.9 s more to compile); each chunk sums its paths' recorded values in path order
  and the chunks' partial sums are added in chunk order (by the host, sdekit.kernels.cpu), so
  the result does not depend on the number of threads;
* ``advance`` and ``reduce_blocks`` (cuda) — one thread per path, a fixed-shape
  tree reduction per block, then the blocks summed in order on the device.

Everything a step calls per step is inlined at numba IR level
(``inline="always"``): measured about 2x faster than calls. Work done once per path
or per record (``deltas``, ``ou_constants``, ``accumulate``, the Philox
``first_spare``) is called instead (``jit_call``), which keeps compilation short:
numba's IR inliner copies and re-types the callee at every call site. The cpu kernels
use numba's ``error_model="numpy"`` (no ZeroDivisionError checks in the hot loop; a
division by zero gives inf or NaN, which the divergence check reports).

With a constraint (:func:`constraint_info`) the kernel has the array form, ``step``
takes SHAKE's work arrays (``qo``, ``work``) and returns an ``ok`` flag, the A letter
drifts, SHAKEs and RATTLEs (``geodesic_steps`` sub-steps), and every letter that moves
p is followed by RATTLE; a path whose SHAKE or RATTLE fails is recorded in the
drivers' ``bad`` as minus the step.

Time-dependent kernels (``time_dependent``; cpu, array form) take the per-step table
``tab`` (:func:`table_columns`) and ``row``: a letter reads its coefficients at its
clock time from the table (``g.coefficient("kT", k)``), the force is
``force(q, F, t)``.

Recorded columns (``K`` of them): q (d), p (d, not for whole-step schemes), each
letter's records (O: p right after the word's last O, d) and xi (1). For each
column the sums of v, v^2 and v^4 are kept: mean/meansq of q are the first two,
mean/meansq of q2 the last two.
"""
import hashlib
import textwrap
import types

from .. import letters as _letters
from .. import schedules as _schedules
from .. import shadow as _shadow
from .._checks import overflow_bound
from . import abi, drivers, runtime
from .storage import UNROLL, ArrayStorage, RegisterStorage, _indent, _tup, scalar_form  # noqa: F401
# (UNROLL, scalar_form: still readable as codegen.*; scalar_form reads storage.UNROLL, so patch that one)
from .writer import RATTLE, Writer

CHUNK = 256
"""Paths per chunk (cpu): the unit of the deterministic reduction."""

BLOCK = 128
"""Threads (paths) per block (cuda): the unit of the device reduction."""

RECORDS = {"p_O": "pO"}
"""The records the drivers carry (a letter's ``records`` name -> the kernel's variable)."""


# ----------------------------------------------------------------------------- what the letters say

def _records(scheme):
    """``{record: (part, k)}``: each record of the word's letters with the index of its last writer."""
    out = {}
    for k, letter in enumerate(scheme.alphabet_entries):
        for record, part in letter.records:
            if record not in RECORDS:
                raise ValueError(f"letter {letter.name!r} ({letter.title}): records {record!r}; the compiled "
                                 f"kernels record only {sorted(RECORDS)} (use backend='numpy')")
            out[record] = (part, k)
    return out


def columns(scheme, dim, weighted=False, shadow=False):
    """Names and slices of the recorded columns: ``{name: (start, stop)}`` and K (``weighted``: the
    paths carry Girsanov log-weights, a column ``log_weight``; ``shadow``: a column each for the
    paths' shadow work and heat)."""
    cols, k = {}, 0
    names = ["q"] + ([] if scheme.whole_step is not None else ["p"]) + list(_records(scheme))
    for name in names:
        cols[name] = (k, k + dim)
        k += dim
    if scheme.tests:   # the accepted Metropolis proposals of the path since the run's start
        cols["accepted"] = (k, k + 1)
        k += 1
    if weighted:   # the Girsanov log-weight of the path since the run's start (sdekit.girsanov)
        cols["log_weight"] = (k, k + 1)
        k += 1
    if shadow:   # the paths' shadow work and heat since step 0 (sdekit.shadow)
        cols["work"], cols["heat"] = (k, k + 1), (k + 1, k + 2)
        k += 2
    cols["xi"] = (k, k + 1)
    return cols, k + 1


def table_columns(scheme):
    r"""Column layout of a time-dependent kernel's coefficient table ``tab`` (one row per
    step, :func:`sdekit.schedules.coefficient_tables` side by side): the clock time of each
    entry of the word (whole-step schemes: :math:`t_n`), then for each coefficient of
    :data:`sdekit.letters.COEFFICIENTS` (gamma, sigma, kT) one column per entry whose letter
    reads it (:func:`sdekit.schedules.coefficient_entries`). Returns ``{name: first column}``
    and the width."""
    entries = _schedules.coefficient_entries(scheme)
    at = 1 if scheme.whole_step is not None else len(scheme.entries)
    cols = {"t": 0}
    for name in _letters.COEFFICIENTS:
        cols[name] = at
        at += len(entries[name])
    return cols, at


def adaptive(scheme):
    """Whether some letter moves xi (the friction gamma + xi then changes within a path)."""
    return any("xi" in letter.moves for letter in scheme.alphabet_entries)


def _builtin(letter):
    return any(letter is b for b in _letters.BUILTIN)


def letters_fingerprint(scheme):
    """``(digest, stable)`` of what the word's user letters put into a kernel beyond their
    names: each one's class, metadata, ``source`` hook and ``flow`` (hashed as
    :func:`runtime.register_gradient` hashes a gradient). ``("", True)`` for built-in letters
    alone. Part of the kernel's cache key and of its text, so a changed flow recompiles."""
    users = [letter for letter in dict.fromkeys(scheme.alphabet_entries) if not _builtin(letter)]
    if not users:
        return "", True
    h, stable = hashlib.sha256(), True
    for letter in users:
        cls = type(letter)
        h.update(f"{letter.name}|{cls.__module__}.{cls.__qualname__}".encode())
        meta = (letter.moves, letter.needs_force, letter.normals, letter.clock, letter.records,
                letter.coefficients, letter.whole_step, letter.constrained, getattr(letter, "inputs", None),
                getattr(letter, "parameters", None))
        stable &= runtime._feed(h, meta, set())
        stable &= runtime._feed(h, cls.source, set())
        if getattr(letter, "flow", None) is not None:
            stable &= runtime._feed(h, letter.flow, set())
    return h.hexdigest()[:16], stable


# ----------------------------------------------------------------------------- the module's text

def _step_lines(scheme, g):
    """Body of ``step``: the letters' lines in word order, each followed by RATTLE if it moved p
    on a constrained system and by its records after the word's last writer of each."""
    if scheme.whole_step is not None:
        g.run(scheme.whole_step, 0, "d[0]", True)
        return g.lines
    last = _records(scheme)
    shadow = g.storage.shadow
    if shadow:
        g.line("Qs = 0.0     # the step's heat: the O letters' kinetic-energy changes (sdekit.shadow)")
    for k, entry in enumerate(scheme.entries):
        letter = entry.letter
        heats = shadow and letter.shadow == "heat"
        if heats:
            g.line("K0 = kinetic(p, inv_mass)")
        g.run(letter, k, f"d[{k}]", entry.new_force)
        if heats:
            g.line(f"Qs += {g.function(_shadow.heat, 'heat')}(K0, kinetic(p, inv_mass))")
        if g.constraint is not None and "p" in letter.moves:
            g.line(RATTLE)
        for record, part in letter.records:
            if last[record][1] == k:
                g.line(g.storage.copy(RECORDS[record], part) + f"        # {part} right after the last {letter.name}")
    if shadow:
        g.line(f"E1 = hamiltonian({g.storage.potential()}, kinetic(p, inv_mass))",
               "W += E1 - E - Qs     # shadow work: the energy change less the heat",
               "Qh += Qs",
               "E = E1")
    if g.constraint is not None:
        g.line("if not ok:     # SHAKE or RATTLE failed: the path is lost (NaN), as in sdekit.reference.step",
               "    for j in range(D):",
               "        q[j] = NAN",
               "        p[j] = NAN")
    return g.lines


def _deltas_expr(scheme):
    """``deltas``' tuple: each entry's fraction of h in the storage type (a whole step: h)."""
    if scheme.whole_step is not None:
        return _tup(["DT(h)"])
    return _tup(f"DT({f!r} * h)" for _, f in scheme.steps)


def _ou_constants_body(constants):
    """``ou_constants``' body: the per-path constants the letters asked for (:meth:`Writer.path_constants`)."""
    if not constants:
        return ["return ()"]
    lines = [", ".join(f"{n}{i}" for n in names) + f" = {expr}" for i, names, expr in constants]
    lines.append("return (" + ", ".join(f"DT({n}{i})" for i, names, _ in constants for n in names) + ")")
    return lines


def _docstring(text, indent=4, width=100):
    """A docstring of ``text``, wrapped."""
    pad = " " * indent
    return textwrap.fill(f'"""{text}"""', width=width, initial_indent=pad, subsequent_indent=pad,
                         break_long_words=False, break_on_hyphens=False)


def constraint_info(constraint, dim, scheme, name):
    """What the generated code needs of a constraint: its registry ``name``, M = codim, the
    work buffer's length, the geodesic sub-steps per A and a label (the repr)."""
    return types.SimpleNamespace(name=name, m=constraint.codim(dim), work=constraint.work_size(dim),
                                 geodesic_steps=scheme.geodesic_steps, label=repr(constraint))


def _constraint_text(con, backend):
    """Module-level lines of a constrained kernel: its SHAKE and RATTLE, M, N, work size, K."""
    if con is None:
        return ""
    return f'''
from sdekit.kernels.runtime import constraint_functions as _constraint_functions

shake, rattle = _constraint_functions("{con.name}", "{backend}")   # {con.label}: sdekit.constraints' per-path functions
M = {con.m}                # constraints g(q) = 0
NDOF = D - M         # degrees of freedom (N of the D letter)
WORK = {con.work}             # length of SHAKE/RATTLE's work buffer
GEO = {con.geodesic_steps}              # geodesic sub-steps per A
'''


def _header(scheme, system_name, dtype, backend, letters_key):
    doc = scheme.describe()
    letters = "" if not letters_key else \
        f'LETTERS = "{letters_key}"   # fingerprint of the user letters (their metadata, source hooks and flows)\n'
    return f'''\
"""sdekit generated kernel: {scheme.word} on {system_name}, {dtype}, backend "{backend}".

{textwrap.indent(doc, "    ")}

Generated by sdekit.kernels.codegen from the Scheme; the letters' arithmetic is
sdekit.operators (compiled for this backend), the noise sdekit.kernels.philox.
Edit the generator, not this file.
"""
OPERATORS = "{runtime.fingerprint()}"   # fingerprint of sdekit.operators + philox this was built from
{letters}'''


def _system_functions(backend, energy_name, group_names, drift_name=None):
    """Module lines binding the Metropolis tests' functions and the system's energy, and the
    force groups' gradients (none for other kernels, whose text stays as it was)."""
    lines = []
    if energy_name is not None:
        lines += ['hamiltonian, metropolis, mala_correction = _f["hamiltonian"], _f["metropolis"], '
                  '_f["mala_correction"]',
                  'uniform = _f["uniform"]',
                  f'energy = _compiled_gradient("{energy_name}", "{backend}")   # the system\'s U(q)']
    lines += [f'gradient{g} = _compiled_gradient("{name}", "{backend}")   # force group {g}'
              for g, name in enumerate(group_names)]
    if drift_name is not None:
        lines.append(f'gradient_u = _compiled_gradient("{drift_name}", "{backend}")   # the drift change u = -grad U_u')
    return "".join(line + "\n" for line in lines)


def generate(scheme, dim, dtype, backend, grad_name, system_name="system", cache=True, constraint=None,
             time_dependent=False, gradient_t=False, energy_name=None, group_names=(), drift_name=None,
             shadow=False):
    """The source text of the kernel module for ``scheme`` on a ``dim``-coordinate system.

    Parameters
    ----------
    scheme : Scheme
    dim : int
        Coordinates per path (the system's d; also the D letter's N).
    dtype : "float64" or "float32"
        Storage type of q, p, xi.
    backend : "cpu" or "cuda"
    grad_name : str
        Name of the system's gradient in :mod:`sdekit.kernels.runtime`'s registry.
    system_name : str
        For the module docstring only.
    cache : bool
        Whether numba may cache the compiled functions on disk (cpu; also False when a
        user letter's flow has no stable fingerprint).
    constraint : namespace, optional
        :func:`constraint_info` of the run's constraint: the kernel then applies SHAKE
        and RATTLE as :func:`sdekit.reference.step` does (array form only).
    time_dependent : bool
        The letters take their clock time and coefficients from a per-step table
        (:func:`table_columns`; cpu, array form only).
    gradient_t : bool
        The system's gradient takes the time, ``gradient(q, t, out)`` (a time-dependent
        system; needs ``time_dependent``).
    energy_name : str, optional
        Name of the system's ``energy(q)`` in the registry (a word with a Metropolis test).
    group_names : sequence of str
        Names of the force groups' gradients (a word with B0, B1, ...).
    drift_name : str, optional
        Name of the gradient of a change of drift (its system's; :mod:`sdekit.girsanov`): the
        paths then carry Girsanov log-weights ``lw``, added by the O (and EM) letters.
    shadow : bool
        The paths carry their shadow work, heat and energy (:mod:`sdekit.shadow`; needs
        ``energy_name``): each O letter's kinetic-energy change is heat, and at the end of the
        step :math:`W \\mathrel{+}= H(x_{n+1}) - H(x_n) - Q_n`.

    Raises
    ------
    ValueError
        For a backend other than cpu and cuda, time dependence on cuda, or a letter the
        kernels cannot run (no source hook, naming the letter and the backend).
    """
    if time_dependent and backend != "cpu":
        raise ValueError(f"backend: time-dependent kernels are generated for backend 'cpu' only, got {backend!r}")
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"backend: must be 'cpu' or 'cuda' for generated kernels, got {backend!r}")
    normals = max((letter.normals for letter in scheme.alphabet_entries), default=0)
    register = scalar_form(backend, dim, constraint is not None or time_dependent)
    if scheme.tests and energy_name is None:
        raise ValueError(f"potential: {scheme.word}'s Metropolis test needs the system's compiled energy(q)")
    if shadow and energy_name is None:
        raise ValueError("shadow_work: the kernels carry shadow work with the system's compiled energy(q); "
                         "none was given")
    if len(group_names) != len(scheme.force_groups):
        raise ValueError(f"system: {scheme.word} kicks with force groups {list(scheme.force_groups)}, "
                         f"got {len(group_names)} group gradients")
    weighted = drift_name is not None
    storage = (RegisterStorage if register else ArrayStorage)(dim, normals, max(1, len(group_names)),
                                                              bool(scheme.tests), weighted, bool(shadow))
    g = Writer(scheme, dim, storage, backend, constraint, time_dependent,
               adaptive=adaptive(scheme), table=table_columns(scheme)[0], drift_change=weighted)
    step_lines = _step_lines(scheme, g)
    features = g.features()
    letters_key, letters_stable = letters_fingerprint(scheme)
    cache = cache and g.stable and letters_stable
    cols, K = columns(scheme, dim, weighted, shadow)
    col_doc = ", ".join(f"{n}[{a}:{b}]" for n, (a, b) in cols.items())
    if backend == "cpu":
        jit = f"@njit(cache={cache}, inline=\"always\", error_model=ERROR_MODEL)"   # hot: inlined
        jit_call = f"@njit(cache={cache}, error_model=ERROR_MODEL)"   # once per path or record: called
        imports = "from numba import njit\n"
    else:
        jit = jit_call = "@cuda.jit(device=True)"
        imports = "from numba import cuda\n"
    functions = ""
    if g.functions:
        functions = ("from sdekit.kernels.runtime import function as _function\n"
                     + "".join(line + "\n" for line in g.functions.values()))
    text = _header(scheme, system_name, dtype, backend, letters_key)
    text += f'''
import math

import numpy as np
{imports}
from sdekit.kernels.runtime import ERROR_MODEL, functions, gradient as _compiled_gradient

_f = functions("{backend}")
drift, kick, ou_coefficients, ou, thermostat = _f["drift"], _f["kick"], _f["ou_coefficients"], _f["ou"], _f["thermostat"]
euler_maruyama, leimkuhler_matthews = _f["euler_maruyama"], _f["leimkuhler_matthews"]
normal, first_spare = _f["normal"], _f["first_spare"]
gradient = _compiled_gradient("{grad_name}", "{backend}")
{_system_functions(backend, energy_name, group_names, drift_name)}{functions}
D = {dim}                # coordinates per path (N of the D letter)
DT = np.{dtype}
K = {K}                # recorded columns: {col_doc}
CHUNK = {CHUNK}          # paths per chunk (cpu), reduced in index order
BLOCK = {BLOCK}          # paths per block (cuda), reduced by a fixed tree
WIDTH = 8            # columns per round of the block reduction (cuda)
NAN = math.nan
BIG = {overflow_bound(dtype)!r}   # sdekit._checks.overflow_bound: |x| <= BIG is False for inf and NaN
FEATURES = {tuple(sorted(features))!r}   # sdekit.kernels.abi: which optional arguments the functions take
{_constraint_text(constraint, backend)}

{jit_call}
def deltas(h):
    """The letters' sub-steps f h, in word order (in the storage type: float32 runs in float32)."""
    return {_deltas_expr(scheme)}


{jit_call}
def ou_constants(xi, gamma, sigma, d):
    """(c, s) of each O letter for friction gamma + xi (per path; fixed when nothing moves xi)."""
{_indent(_ou_constants_body(g.constants), 4)}

'''
    has_p = scheme.whole_step is None
    accumulated = [({"q": "q", "p": "p", "accepted": "na", "log_weight": "lw", "work": "W", "heat": "Qh"}.get(name)
                    or RECORDS[name], start)
                   for name, (start, _) in cols.items() if name != "xi"]
    text += storage.helpers(jit, time_dependent, gradient_t)
    results = abi.results("step", features)
    ok_init = "    ok = True\n" if constraint is not None else ""
    text += f'''

{jit}
{abi.define("step", features)}
{_docstring(f"One step of {scheme.word} for one path{storage.doc}; returns ({results}).")}
{ok_init}{_indent(step_lines, 4)}
    return {results}
'''
    text += storage.checks(jit, jit_call, has_p, accumulated)
    carried = [("q", "qi")] + ([("p", "pi")] if has_p else []) + [("F", "Fi")] + \
        ([("R", "Ri")] if "R" in g.written else [])   # R: carried by the paths only if a letter writes it (LM)
    if backend == "cpu":
        text += drivers.cpu_drivers(storage, features, carried, cache)
    else:
        text += drivers.cuda_drivers(storage, features, carried)
    return text
