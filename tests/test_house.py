"""The house rules that a reading of the sources can check: imports point one way, the library
names no chapter, and no function is longer than a page."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

PACKAGE = Path(__file__).resolve().parents[1] / "skdlib"
MAX_FUNCTION_LINES = 100


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """skdlib modules ``path`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in modules}
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        # A package's __init__ re-exports its modules: an edge to the package is not a cycle.
        graph[name] = {m for m in _imports(path, modules) if m != name and not name.startswith(m)}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_the_library() -> None:
    graph = _graph()
    # Packages import their own modules: ignore the package -> module edges.
    acyclic = {
        n: {m for m in deps if not (m.startswith(n + ".") and graph.get(m) is not None)}
        for n, deps in graph.items()
    }
    assert _cycle(acyclic) is None, _cycle(acyclic)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_names_no_chapter() -> None:
    """Only the plan (``configs/experiments.yaml``, its ``notebook`` key) names the chapter the
    runs execute; no module of the library names any chapter."""
    offenders = [
        str(p.relative_to(PACKAGE.parent))
        for p in PACKAGE.rglob("*.py")
        if "book/" in p.read_text() or "book\\\\" in p.read_text()
    ]
    assert offenders == []
    plan = yaml.safe_load((PACKAGE.parent / "configs" / "experiments.yaml").read_text())
    assert str(plan["notebook"]).startswith("book/")


def test_no_function_is_longer_than_a_page() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.name} ({lines})")
    assert long == []
