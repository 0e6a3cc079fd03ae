"""The module graph has no import cycles outside the box layer's own package, and the pieces split
out of the agent stay one-way: ``_agent`` never reaches ``_platform``, ``backends/base`` names none
of its implementations. Every import counts (module level, in functions, under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

import agentlite

ROOT = Path(agentlite.__file__).parent
#: Cycles inside the runtime package are the box layer's to untangle (its own issue); any cycle
#: that reaches a module outside it fails.
BOX_PACKAGE = "agentlite.box"


def module_files() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ["agentlite", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                targets.add(source)
                targets.update(f"{source}.{a.name}" for a in node.names)
        graph[name] = {m for t in targets if (m := resolve(t)) and m not in (name, "agentlite")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def reaches(graph: dict[str, set[str]], start: str, target: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def test_no_import_cycle_outside_the_box_package() -> None:
    outside = [c for c in cycles(import_graph()) if any(not m.startswith(BOX_PACKAGE) for m in c)]
    assert outside == [], f"import cycles: {outside}"


def test_the_agent_does_not_reach_the_platform_and_backend_base_names_no_backend() -> None:
    graph = import_graph()
    assert not reaches(graph, "agentlite.platform.agent", "agentlite.platform.app")
    assert (
        graph["agentlite.guest.backends.base"]
        & {f"agentlite.guest.backends.{n}" for n in ("codex", "claude_code", "acp")}
        == set()
    )


def test_the_check_sees_a_cycle_when_one_is_added() -> None:
    graph = import_graph()
    graph["agentlite.run.turn"] = {
        *graph["agentlite.run.turn"],
        "agentlite.platform.agent",
    }  # _agent imports _turn
    assert any({"agentlite.run.turn", "agentlite.platform.agent"} <= c for c in cycles(graph))
