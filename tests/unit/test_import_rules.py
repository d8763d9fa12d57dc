"""The architecture's rules, checked on the source with ``ast`` (nothing is imported):

- no module-level import cycle among project modules (``if TYPE_CHECKING:`` imports count);
- ``data_prep`` and ``launch`` import nothing of ``pipeline`` but ``pipeline.core.*``;
- a ``pipeline`` subpackage imports only its own or lower layers (``LAYERS``; eval reads SFT data, so
  finetune sits below it);
- no function-level import of a project module outside ``pipeline/cli/`` (the CLI is lazy on purpose);
- no ``_private`` name imported from another project module;
- a name is imported from the module that defines it, not from one that imported it (a package's
  ``__init__`` may gather its modules' names as its public face);
- files of at most 450 lines, functions of at most 60 (``pipeline/cli/`` parsers excepted).

Each test lists every violation as ``file:line: what``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "data_prep", "launch")

LAYERS = {
    "core": 0,
    "model": 1,
    "config": 2,
    "plan": 3,
    "parallel": 4,
    "train": 5,
    "finetune": 6,
    "eval": 7,
    "hf": 8,
    "scaling": 9,
    "benchmark": 10,
    "demo": 10,
    "cli": 11,
    "testing": 12,
}
"""``pipeline.<sub>`` -> layer; a module may import its own subpackage and lower layers only."""

MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60
LAZY_IMPORTS_OK = "pipeline/cli/"
"""The CLI imports heavy modules in its handlers, and its parsers may be one long table-like function."""


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    path: str  # importing file, relative to the repo root
    line: int
    target: str  # imported project module, dotted
    names: tuple[str, ...]  # names taken with ``from ... import``
    function_level: bool  # inside a def (runs at call time, not import time)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_files() -> tuple[Path, ...]:
    return tuple(sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")))


@cache
def project_modules() -> frozenset[str]:
    return frozenset(module_name(p) for p in project_files())


def is_project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _resolve_from(node: ast.ImportFrom, source: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.Import | ast.ImportFrom, source: str, is_package: bool) -> list[tuple[str, tuple]]:
    """(module, names) pairs: ``from a.b import c`` names module ``a.b.c`` when that is a module."""
    if isinstance(node, ast.Import):
        return [(alias.name, ()) for alias in node.names]
    module = _resolve_from(node, source, is_package)
    out: list[tuple[str, tuple]] = []
    plain: list[str] = []
    for alias in node.names:
        sub = f"{module}.{alias.name}"
        if sub in project_modules():
            out.append((sub, ()))
        else:
            plain.append(alias.name)
    if plain or not out:
        out.append((module, tuple(plain)))
    return out


def _walk(node: ast.AST, in_function: bool):
    """Yield (import node, in_function) for every import below ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
        inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _walk(child, inner)


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@cache
def all_imports() -> tuple[Import, ...]:
    found = []
    for path in project_files():
        source = module_name(path)
        rel = str(path.relative_to(ROOT))
        for node, in_function in _walk(parsed(path), False):
            for target, names in _targets(node, source, path.name == "__init__.py"):
                if is_project(target):
                    found.append(Import(source, rel, node.lineno, target, names, in_function))
    return tuple(found)


def report(violations: list[str]) -> str:
    return f"{len(violations)} violation(s):\n" + "\n".join(sorted(set(violations)))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

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
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(c), c[0]) for c in components]


def _one_cycle(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside one component (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, set()) & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


def test_no_module_level_import_cycles():
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for imp in all_imports():
        if not imp.function_level and imp.target in project_modules() and imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
            where.setdefault((imp.source, imp.target), f"{imp.path}:{imp.line}")
    violations = []
    for cycle in _cycles(graph):
        steps = [f"{a} ({where[a, b]})" for a, b in zip(cycle, cycle[1:])]
        violations.append("import cycle: " + " -> ".join([*steps, cycle[-1]]))
    if violations:
        pytest.fail(report(violations), pytrace=False)


def test_data_prep_and_launch_import_only_pipeline_core():
    violations = [
        f"{imp.path}:{imp.line}: imports {imp.target} (only pipeline.core.* is allowed)"
        for imp in all_imports()
        if imp.source.split(".")[0] in ("data_prep", "launch")
        and imp.target.split(".")[0] == "pipeline"
        and not (imp.target + ".").startswith("pipeline.core.")
    ]
    if violations:
        pytest.fail(report(violations), pytrace=False)


def _layer(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "pipeline" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return parts[1], LAYERS[parts[1]]


def test_pipeline_layers_import_downwards():
    violations = []
    for imp in all_imports():
        src, dst = _layer(imp.source), _layer(imp.target)
        if src is None or dst is None or src[0] == "testing" or src[0] == dst[0]:
            continue
        if dst[1] >= src[1]:
            what = "a sibling" if dst[1] == src[1] else "a higher layer"
            violations.append(f"{imp.path}:{imp.line}: pipeline.{src[0]} imports {what}: {imp.target}")
    if violations:
        pytest.fail(report(violations), pytrace=False)


def test_no_function_level_project_imports():
    violations = [
        f"{imp.path}:{imp.line}: function-level import of {imp.target}"
        for imp in all_imports()
        if imp.function_level and not imp.path.startswith(LAZY_IMPORTS_OK)
    ]
    if violations:
        pytest.fail(report(violations), pytrace=False)


def test_no_private_names_imported():
    violations = [
        f"{imp.path}:{imp.line}: imports {name} from {imp.target}"
        for imp in all_imports()
        for name in imp.names
        if name.startswith("_") and not name.startswith("__") and imp.target != imp.source
    ]
    if violations:
        pytest.fail(report(violations), pytrace=False)


def _module_imports(module: str) -> dict[str, str]:
    """Names a module binds by a module-level ``from <project module> import``, with where they come from."""
    path = next((p for p in project_files() if module_name(p) == module), None)
    bound: dict[str, str] = {}
    if path is None:
        return bound
    for node in parsed(path).body:
        if isinstance(node, ast.ImportFrom) and not node.level and is_project(node.module or ""):
            bound.update({alias.asname or alias.name: node.module or "" for alias in node.names})
    return bound


def test_names_come_from_their_defining_module():
    packages = {module_name(p) for p in project_files() if p.name == "__init__.py"}
    violations = [
        f"{imp.path}:{imp.line}: {name} from {imp.target}, which imports it from "
        f"{_module_imports(imp.target)[name]}"
        for imp in all_imports()
        if imp.target not in packages
        for name in imp.names
        if name in _module_imports(imp.target)
    ]
    if violations:
        pytest.fail(report(violations), pytrace=False)


def test_file_and_function_lengths():
    violations = []
    for path in project_files():
        rel = str(path.relative_to(ROOT))
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES:
            violations.append(f"{rel}: {lines} lines (max {MAX_FILE_LINES})")
        if rel.startswith(LAZY_IMPORTS_OK):
            continue
        for node in ast.walk(parsed(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    violations.append(
                        f"{rel}:{node.lineno}: {node.name}() is {length} lines (max {MAX_FUNCTION_LINES})"
                    )
    if violations:
        pytest.fail(report(violations), pytrace=False)
