"""The package's shape: no import cycles between its modules, and no private torch calls."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ppokit

PACKAGE = Path(ppokit.__file__).parent
# Entry points import everything (lazily, for start-up time); nothing imports them back.
ENTRY_POINTS = {"ppokit", "ppokit.cli", "ppokit.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """ppokit modules that ``path`` imports at run time, at module level or inside functions
    (``if TYPE_CHECKING:`` blocks are annotations only and do not count)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    known = set(paths)
    return {name: imported_modules(path, known) - {name, "ppokit"} for name, path in paths.items()
            if name not in ENTRY_POINTS}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_between_modules():
    graph = import_graph()
    assert {"ppokit.agent", "ppokit.checkpoint", "ppokit.envs", "ppokit.loop", "ppokit.algos.ppo"} <= set(graph)
    assert "ppokit.checkpoint" in graph["ppokit.agent"]  # the graph sees real imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_private_torch_calls():
    pattern = re.compile(r"torch\.(_[a-z][a-z_]*|[a-z]+\._[a-z][a-z_]*)\(|getattr\(torch, \"_|\._get_file_writer\(")
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
                 for path in PACKAGE.rglob("*.py") for number, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert not offenders, offenders
