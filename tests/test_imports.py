"""The package's import graph, read from the source with ``ast`` (nothing is imported).

* The graph of sdekit's modules, edges = top-level imports (and the parent packages they
  execute), has no cycle: records sit below the backends, the backends below the drivers.
* No function-level import of sdekit's own modules, except those that bring an optional
  dependency (torch, dask, numba-cuda).
"""
import ast
import pathlib

import sdekit

ROOT = pathlib.Path(sdekit.__file__).parent

OPTIONAL = {
    # (importing module, imported sdekit module): each brings an optional dependency
}
"""Function-level imports of sdekit's own modules allowed because they bring an optional dependency."""

PENDING = set()
"""Function-level imports still to be moved to the top (none)."""


def _modules():
    """name -> path of every module of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("sdekit",) + path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _package(name):
    """The package a module's relative imports start from."""
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _targets(importer, node):
    """sdekit modules an Import/ImportFrom node of ``importer`` names (its own, not the parents)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "sdekit"]
    base = node.module or ""
    if node.level:
        pkg = _package(importer).split(".")
        pkg = pkg[:len(pkg) - node.level + 1]
        base = ".".join(pkg + ([node.module] if node.module else []))
    if base.split(".")[0] != "sdekit":
        return []
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in MODULES else base)
    return out


def _with_parents(importer, target):
    """``target`` and the packages above it that importing it executes (those not holding
    ``importer``, and not the root package, whose __init__ runs first anyway)."""
    out = [target]
    parts = target.split(".")
    for k in range(2, len(parts)):
        parent = ".".join(parts[:k])
        if not (importer == parent or importer.startswith(parent + ".")):
            out.append(parent)
    return out


def _imports(name):
    """(top-level targets, [(function-level target, line)]) of module ``name``."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    top, inner = set(), []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(name, child):
                    if in_function:
                        inner.append((target, child.lineno))
                    else:
                        top.update(_with_parents(name, target))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    top.discard(name)
    return top, inner


def _cycle(graph):
    """A cycle of ``graph`` (a list of nodes) or None."""
    state, stack = {}, []

    def dfs(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == "open":
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = dfs(v)
                if found:
                    return found
        stack.pop()
        state[u] = "done"
        return None

    for u in sorted(graph):
        if u not in state:
            found = dfs(u)
            if found:
                return found
    return None


def test_the_reader_sees_the_imports():
    graph = {name: _imports(name)[0] for name in MODULES}
    assert "sdekit.records" in graph["sdekit.kernels.cpu"]
    assert "sdekit.kernels" in graph["sdekit.backends"]  # the parent package of kernels.cpu
    assert "sdekit.kernels" in graph["sdekit.kernels.cpu"]  # from . import build (a name of __init__)
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_has_no_cycle():
    graph = {name: _imports(name)[0] for name in MODULES}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_no_cycle_even_through_function_level_imports():
    """Lazy imports must not point back up either (in the old layout simulate -> checkpoint ->
    simulate and simulate -> kernels -> cpu -> simulate were cycles dodged inside functions)."""
    graph = {}
    for name in MODULES:
        top, inner = _imports(name)
        graph[name] = top | {p for target, _ in inner for p in _with_parents(name, target)} - {name}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_records_and_backends_sit_below_the_drivers():
    graph = {name: _imports(name)[0] for name in MODULES}

    def below(name):
        seen, todo = set(), [name]
        while todo:
            for v in graph[todo.pop()] - seen:
                seen.add(v)
                todo.append(v)
        return seen

    assert not below("sdekit.records") & {"sdekit.simulate", "sdekit.backends", "sdekit.reference", "sdekit.kernels"}
    kernels = below("sdekit.kernels.cpu") | below("sdekit.kernels.cuda") | below("sdekit.reference")
    assert not kernels & {"sdekit.simulate", "sdekit.backends", "sdekit.cli"}
    assert "sdekit.simulate" not in below("sdekit.backends") | below("sdekit.checkpoint")


def test_no_function_level_import_of_the_package_s_own_modules():
    found = []
    for name in MODULES:
        for target, line in _imports(name)[1]:
            if (name, target) not in OPTIONAL and (name, target) not in PENDING:
                found.append(f"{MODULES[name].relative_to(ROOT.parent)}:{line} imports {target}")
    assert not found, "function-level imports of sdekit modules:\n" + "\n".join(found)
