"""The package's import graph: no import cycle, no private name taken from another module.

Every module of ``qpyr`` is parsed with :mod:`ast`; every import counts, at module level or inside
a function (lazy imports), relative or absolute, including ``importlib.import_module`` of a
literal name. A package ``__init__`` importing its own submodules (to re-export them) is not a
cycle: those edges are left out of the graph, as ``shared/tools/arch-check`` leaves out cycles
made only of a package and its children.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "qpyr"


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module under ``qpyr/``."""
    mods: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _package_of(name: str) -> str:
    """The package a module lives in (a package ``__init__`` lives in itself)."""
    return name if _is_package(name) else name.rpartition(".")[0]


def _owner(name: str) -> str | None:
    """The longest prefix of a dotted name that is a ``qpyr`` module, or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(importer: str, module: str | None, level: int) -> str:
    """The absolute name of ``from <level dots><module> import ...`` inside ``importer``."""
    if not level:
        return module or ""
    base = _package_of(importer).split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(importer: str) -> list[tuple[str, str | None, int]]:
    """(target module, imported name or None, line) for every ``qpyr`` import in a module.

    The target is the module the import loads: ``from a.b import c`` targets ``a.b.c`` when that
    is a module and ``a.b`` otherwise (then ``c`` is the name taken from it).
    """
    tree = ast.parse(MODULES[importer].read_text(encoding="utf-8"), filename=str(MODULES[importer]))
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _owner(alias.name)
                if target:
                    found.append((target, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(importer, node.module, node.level)
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in MODULES:
                    found.append((full, None, node.lineno))
                elif (target := _owner(source)) is not None:
                    found.append((target, alias.name, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                 or isinstance(node.func, ast.Name) and node.func.id == "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            name = node.args[0].value
            dots = len(name) - len(name.lstrip("."))
            target = _owner(_absolute(importer, name[dots:] or None, dots))
            if target:
                found.append((target, None, node.lineno))
    return [(t, n, line) for t, n, line in found if t.startswith("qpyr") and t != importer]


IMPORTS = {m: _imports(m) for m in MODULES}


def _graph() -> dict[str, set[str]]:
    """importer -> imported modules, without a package ``__init__``'s imports of its own submodules."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for importer, found in IMPORTS.items():
        for target, _, _ in found:
            if _is_package(importer) and target.startswith(importer + "."):
                continue
            graph[importer].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import cycle (as a closed path ``a, b, ..., a``) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graph is a few hundred nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_path_in(graph, component) for component in components]


def _path_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component, ``a, ..., a``."""
    start = min(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_imports() -> list[str]:
    """Private (``_x``) names or modules that one module takes from another.

    Allowed: a private helper module ``p/_x.py``, and the private names in it, used by the modules
    of its own package ``p`` or of ``p``'s subpackages.
    """
    bad = set()
    for importer, found in IMPORTS.items():
        home = _package_of(importer)
        for target, name, line in found:
            helper_home, _, leaf = target.rpartition(".")
            if _private(leaf) and (home == helper_home or home.startswith(helper_home + ".")):
                continue  # a private helper module shared inside its own package
            if name is not None and _private(name):
                bad.add(f"{importer} (line {line}) <- {target}.{name}")
            elif _private(leaf):
                bad.add(f"{importer} (line {line}) <- {target}")
    return sorted(bad)


def test_the_walk_sees_the_package() -> None:
    """The walk finds every stage and their imports, lazy ones too (a broken walk passes anything)."""
    for stage in ("qpyr.io", "qpyr.format", "qpyr.codecs", "qpyr.policies", "qpyr.write", "qpyr.read",
                  "qpyr.torch", "qpyr.ops", "qpyr.cli", "qpyr.estimate", "qpyr.errors"):
        assert stage in MODULES
    graph = _graph()
    assert sum(len(targets) for targets in graph.values()) > len(MODULES)
    assert "qpyr.errors" in set().union(*graph.values())
    assert "qpyr.estimate" in {t for t, _, _ in IMPORTS["qpyr"]}  # qpyr.estimate is loaded lazily


def test_cycle_detection_names_the_cycle() -> None:
    """The detector itself, on a planted graph: the cycle is found and named as a closed path."""
    assert _cycles({"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": {"d"}, "d": set()}) == []


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_modules() -> None:
    bad = _private_imports()
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)
