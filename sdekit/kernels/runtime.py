"""The functions a generated kernel calls, compiled for one backend.

The letters' flows come from :mod:`sdekit.operators` (its ``scalar`` binding, with
``math.exp``/``math.expm1``/``math.sqrt``) and the random numbers from
:mod:`sdekit.kernels.philox`: both are plain Python text, compiled here with
``numba.njit`` (backend "cpu") or ``numba.cuda.jit(device=True)`` (backend
"cuda"). There is no second copy of the mathematics.

A system's ``gradient(q, out)`` is registered under a fingerprint of its code and
closed-over constants (:func:`register_gradient`), so a generated module written to
disk can find it again by name in a later process.
"""
import hashlib
import math
import types

import numpy as np

from .. import operators
from . import philox

_GRADIENTS = {}
_COMPILED = {}


def rebind(funcs, decorate, known=None, special=None):
    """Compile ``funcs`` (in dependency order) with ``decorate`` (or ``special[name]``);
    each sees the compiled versions of the ones before it (and of ``known``) under
    their own names."""
    out = dict(known or {})
    special = special or {}
    for f in funcs:
        g = types.FunctionType(f.__code__, {**f.__globals__, **out}, f.__name__,
                               f.__defaults__, f.__closure__)
        g.__doc__ = f.__doc__
        out[f.__name__] = special.get(f.__name__, decorate)(g)
    return {f.__name__: out[f.__name__] for f in funcs}


def _decorator(backend, inline=True):
    """numba.njit for "cpu" (inlined into the caller at numba IR level unless ``inline`` is
    False: measured 2x faster than calls for the per-step functions), cuda.jit(device=True)
    for "cuda"."""
    if backend == "cpu":
        import numba

        if inline:
            return numba.njit(inline="always", error_model=ERROR_MODEL)
        # called, not inlined (CALLED): cached on disk like any numba function of philox.py, so a
        # new scheme in a fresh process does not compile them again (~0.3 s)
        return numba.njit(error_model=ERROR_MODEL, cache=True)
    from numba import cuda

    return cuda.jit(device=True)


ERROR_MODEL = "numpy"
"""numba's error model of the cpu kernels: "numpy" (no ZeroDivisionError checks in the hot
loop; a division by zero gives inf or NaN, which the divergence check then reports)."""

CALLED = ("gaussian_tail", "first_spare")
"""Philox-family functions the cpu kernels call instead of inlining at numba IR level:
``first_spare`` runs once per path, ``gaussian_tail`` for 15% of the normals. Inlining
them (numba copies and re-types the callee's IR at every call site) cost ~0.8 s of
compile time per kernel and bought no measurable speed. They are cached on disk (numba's
cache beside philox.py, keyed on its source): nothing patches them (the test suite's broken
letters are operators), so the cached code is always philox.py's."""

OPERATOR_NAMES = tuple(f.__name__ for f in operators.ALL)
MATH = {"exp": math.exp, "expm1": math.expm1, "sqrt": math.sqrt, "log": math.log}


def compile_tree(f, decorate, env, memo):
    """``decorate`` a copy of ``f`` whose globals get ``env`` and whose referenced
    plain Python functions (globals and closure cells) are compiled the same way.

    This is :func:`sdekit.operators.bind` applied recursively: it lets a patched
    operator (a test's deliberately broken letter, say) reach the kernels.
    """
    if f in memo:
        return memo[f]
    if hasattr(f, "py_func"):  # already a numba dispatcher
        return f
    glb = {**f.__globals__, **env}
    for name in f.__code__.co_names:
        if name not in env and isinstance(glb.get(name), types.FunctionType):
            glb[name] = compile_tree(glb[name], decorate, env, memo)
    closure = None
    if f.__closure__:
        closure = tuple(types.CellType(compile_tree(c.cell_contents, decorate, env, memo)
                                       if isinstance(c.cell_contents, types.FunctionType) else c.cell_contents)
                        for c in f.__closure__)
    g = types.FunctionType(f.__code__, glb, f.__name__, f.__defaults__, closure)
    g.__doc__ = f.__doc__
    memo[f] = decorate(g)
    return memo[f]


def current_operators():
    """The letter functions as :mod:`sdekit.operators` holds them now (name -> function)."""
    return {name: getattr(operators, name) for name in OPERATOR_NAMES}


def fingerprint():
    """Hash of the operators' and the Philox stream's code: part of every generated
    module's text, so numba's disk cache never serves a kernel built from other code."""
    h = hashlib.sha256()
    for name, f in current_operators().items():
        h.update(name.encode())
        _feed(h, f, set())
    for f in philox.FAMILY:
        _feed(h, f, set())
    h.update(repr((ERROR_MODEL, CALLED)).encode())  # how they are compiled
    return h.hexdigest()[:16]


def functions(backend):
    """Dict name -> compiled function: the operators (with ``math``'s exp, expm1, sqrt, log)
    and the Philox stream, for ``backend``."""
    key = (backend, fingerprint())
    if key not in _COMPILED:
        decorate = _decorator(backend)
        memo = {}
        ops = {name: compile_tree(f, decorate, MATH, memo) for name, f in current_operators().items()}
        # inlined at numba IR level: measured ~2x faster than calls (which also block LLVM's
        # scheduling across the letters), at the price of compile time; CALLED are not
        special = {name: _decorator(backend, inline=False) for name in CALLED} if backend == "cpu" else {}
        ops.update(rebind(philox.FAMILY, decorate, special=special))
        _COMPILED[key] = ops
    return _COMPILED[key]


# ----------------------------------------------------------------------------- gradients

def _feed(h, obj, seen):
    """Feed a stable description of ``obj`` (code, constants, arrays) into hash ``h``.

    Returns False when ``obj`` has no stable description (then nothing is cached on disk).
    """
    if id(obj) in seen:
        return True
    seen.add(id(obj))
    if isinstance(obj, (bool, int, float, complex, str, bytes, type(None))):
        h.update(repr((type(obj).__name__, obj)).encode())
        return True
    if isinstance(obj, np.ndarray):
        h.update(repr((obj.dtype.str, obj.shape)).encode())
        h.update(np.ascontiguousarray(obj).tobytes())
        return True
    if isinstance(obj, np.generic):
        h.update(repr((obj.dtype.str, obj.item())).encode())
        return True
    if isinstance(obj, (tuple, list)):
        h.update(f"seq{len(obj)}".encode())
        return all(_feed(h, x, seen) for x in obj)
    if isinstance(obj, types.ModuleType):
        h.update(f"module:{obj.__name__}".encode())
        return True
    if hasattr(obj, "py_func"):  # a numba dispatcher
        obj = obj.py_func
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        h.update(code.co_code)
        h.update(repr(code.co_names).encode())
        ok = True
        for c in code.co_consts:
            if isinstance(c, types.CodeType):  # a nested function's code
                h.update(c.co_code)
                h.update(repr(c.co_names).encode())
            else:
                ok &= _feed(h, c, seen)
        for name in code.co_names:
            if name in obj.__globals__:
                ok &= _feed(h, obj.__globals__[name], seen)
        for cell in obj.__closure__ or ():
            ok &= _feed(h, cell.cell_contents, seen)
        return ok
    if isinstance(obj, (types.BuiltinFunctionType, np.ufunc)):
        h.update(f"builtin:{getattr(obj, '__module__', '')}.{obj.__name__}".encode())
        return True
    return False


def register_gradient(gradient):
    """Register ``gradient`` under a fingerprint of its code, globals and closure.

    Returns ``(name, stable)``: ``stable`` is False when some closed-over value has
    no stable description, in which case the name is unique to this process and the
    kernel is not cached on disk.
    """
    return _register(_GRADIENTS, gradient, "p")


def _compiled(registry, name, backend, what, whose):
    """``registry[name]`` compiled for ``backend`` with what it calls (:func:`compile_tree`);
    a ValueError naming ``what`` for a name never registered."""
    try:
        f = registry[name]
    except KeyError:
        raise ValueError(f"{what}: no function registered as {name!r}; kernels are built by "
                         f"sdekit.kernels.build, which registers {whose} first") from None
    return compile_tree(f, _decorator(backend), {}, {})


def _register(registry, f, prefix):
    """Store ``f`` in ``registry`` under its fingerprint (or, if unstable, its id): ``(name, stable)``."""
    h = hashlib.sha256()
    stable = _feed(h, f, set())
    name = h.hexdigest()[:20] if stable else f"{prefix}{id(f):x}"
    registry[name] = f
    return name, stable


def gradient(name, backend):
    """The registered gradient (or energy) ``name``, compiled for ``backend``, with the plain
    Python functions it calls compiled the same way (:func:`compile_tree`: the sum of a
    :func:`~sdekit.systems.split` system's parts calls theirs)."""
    return _compiled(_GRADIENTS, name, backend, "gradient", "the system's gradient")


# ----------------------------------------------------------------------------- letters' functions

_FUNCTIONS = {}


def register_function(f):
    """Register a letter's scalar function (a :class:`~sdekit.letters.CoordinateLetter`'s
    ``flow``) under a fingerprint of its code, globals and closure, as
    :func:`register_gradient` does for gradients, so a generated module on disk finds it by
    name (the name is in the module's text: a changed function is another kernel).

    Returns ``(name, stable)`` as :func:`register_gradient`.
    """
    return _register(_FUNCTIONS, f, "f")


def function(name, backend):
    """The registered function ``name`` compiled for ``backend`` (inlined into the kernel on
    cpu), with the plain Python functions it calls compiled the same way (:func:`compile_tree`)."""
    return _compiled(_FUNCTIONS, name, backend, "letter", "the letters' functions")


# ----------------------------------------------------------------------------- constraints

_CONSTRAINTS = {}

CUDA_CONSTRAINTS = ("Sphere", "Circle")
"""Constraints the cuda kernels support: those whose per-path SHAKE and RATTLE are closed
forms on plain arithmetic (the Newton solver of Stiefel and Constraint is cpu only)."""


def register_constraint(constraint):
    """Register a constraint's per-path ``shake`` and ``rattle`` (:mod:`sdekit.constraints`)
    under a fingerprint of their code and closed-over values (the radius; g and the Jacobian).

    Returns ``(name, stable)`` as :func:`register_gradient`.
    """
    f = constraint.per_path
    h = hashlib.sha256()
    stable = _feed(h, (type(constraint).__name__, f.shake, f.rattle), set())
    name = h.hexdigest()[:20] if stable else f"c{id(f):x}"
    # device_functions: whether the cuda kernels may compile shake/rattle (a property of the
    # constraint, so a subclass of Sphere keeps it; not a match on the class name)
    _CONSTRAINTS[name] = (type(constraint).__name__, f, bool(getattr(constraint, "device_functions", False)))
    return name, stable


def constraint_functions(name, backend):
    """``(shake, rattle)`` of the registered constraint ``name`` for ``backend``.

    The same Python functions as the numpy backend runs: on "cpu" the numba-compiled
    ones themselves, on "cuda" their text compiled as device functions (closed forms only,
    :data:`CUDA_CONSTRAINTS`)."""
    try:
        kind, f, on_device = _CONSTRAINTS[name]
    except KeyError:
        raise ValueError(f"constraint: no constraint registered as {name!r}; kernels are built by "
                         "sdekit.kernels.build, which registers the constraint first") from None
    if backend == "cpu":
        return f.shake, f.rattle
    if not on_device:
        raise ValueError(f"constraint: {kind} is not supported by the cuda backend (closed forms only: "
                         f"{', '.join(CUDA_CONSTRAINTS)}); use backend='cpu'")
    device = _decorator("cuda")
    return device(f.shake.py_func), device(f.rattle.py_func)
