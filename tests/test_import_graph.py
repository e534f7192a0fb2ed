"""The packages' import graph has no cycle: every ``import`` and ``from ... import`` counts,
at module level or inside a function (a function-level import hides a cycle, it does not
break it); only ``if TYPE_CHECKING:`` blocks, which never run, are left out. An import of a
package counts as an import of its ``__init__``; ``from pkg import name`` as an import of
``pkg.name`` where that is a module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("automoe", "search_spaces", "supernet", "evolution")


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``packages``."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (see the module docstring)."""
    modules = _modules(root, packages)

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_nodes(tree)
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                deps.update(filter(None, (owner(a.name) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    dep = full if full in modules else owner(target)
                    if dep:
                        deps.add(dep)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_packages_have_no_import_cycle():
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 100  # the walk saw the packages
    assert cycles(graph) == []


# The command line and the workflows (pipeline, studies: compositions of library calls) both
# sit on the library; nothing but the command line imports the command line, and nothing
# below the workflows imports them.
CLI = ("automoe.cli", "automoe.commands")
WORKFLOWS = ("automoe.workflows",)


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_library_never_drives_the_command_line():
    graph = import_graph(ROOT, PACKAGES)
    library = [m for m in graph if not _under(m, CLI + WORKFLOWS)]
    assert len(library) > 80
    upward = {m: sorted(d for d in graph[m] if _under(d, CLI + WORKFLOWS)) for m in library}
    assert {m: d for m, d in upward.items() if d} == {}
    workflows = [m for m in graph if _under(m, WORKFLOWS)]
    assert len(workflows) >= 4  # the walk saw them
    assert {m: sorted(d for d in graph[m] if _under(d, CLI)) for m in workflows
            if any(_under(d, CLI) for d in graph[m])} == {}
    commands = [m for m in graph if _under(m, CLI)]
    assert {m: sorted(graph[m] & set(m for m in graph if _under(m, WORKFLOWS)))
            for m in commands if any(_under(d, WORKFLOWS) for d in graph[m])} == {}


def test_no_module_imports_another_modules_private_names():
    """``from x import _name`` across modules couples to what x may change freely."""
    private = []
    for name, path in _modules(ROOT, PACKAGES).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] in PACKAGES:
                private += [f"{name}: from {node.module} import {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.mark.parametrize("b_imports_a", [
    "from pkg.a import f\n",                         # module level
    "def g():\n    from pkg import a\n    return a\n",  # hidden in a function
    "from . import a\n",                             # relative
])
def test_a_planted_cycle_is_found(tmp_path, b_imports_a):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg.b import g\ndef f(): pass\n",
                      "pkg/b.py": b_imports_a, "pkg/c.py": "import pkg.a\n"})
    assert cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b"]]


def test_type_checking_imports_and_one_way_edges_are_no_cycle(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import g\n",
        "pkg/b.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from pkg.a import f\ndef g(): pass\n"),
    })
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == set()
    assert cycles(graph) == []
