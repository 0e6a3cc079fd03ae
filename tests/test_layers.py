"""The layers are true: the import graph of ``src/agentlite`` (parsed, never imported) has no cycle,
each layer imports only the layers below it, the box side imports only what the host compiles for
it, product code never imports ``agentlite.testing``, no module imports another's private names,
and the CLI reaches into no private attribute.

Every import counts: module level, in functions, under ``TYPE_CHECKING``. Layers, bottom up:
``core < box < run < image < platform < dashboard < cli``; ``channels`` (chat drivers and the
message they deliver) need only ``core``, and the platform wires them; ``guest`` (what runs inside
a box) stands beside the host side on ``core`` and the run layer's protocol modules; ``offline``
(the built-in model) needs only ``core``; ``placement`` (local boxes or a Ray cluster's) sits with
``platform``: each may import the other, modules never in a cycle; ``testing`` may use any product layer but the CLI. Each
checker is also fed a synthetic violation, to show that it fails when a forbidden import is added.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import agentlite
from agentlite.run import box_bytecode

ROOT = Path(agentlite.__file__).parent

#: The run layer's protocol modules: the only host-side modules the guest may import.
RUN_PROTOCOL = frozenset({"agentlite.run.protocol", "agentlite.run.wire", "agentlite.run.acp_client"})

#: The host side under the fronts: what the dashboard and the CLI are built on.
_HOST = frozenset({"core", "box", "run", "image", "channels", "platform"})
#: Which layers each layer may import (its own included). A layer is ``agentlite.<folder>``; a
#: folder without an entry (a new one) is held only by the rules for every module.
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "box": frozenset({"core", "box"}),
    "run": frozenset({"core", "box", "run"}),
    "image": frozenset({"core", "box", "image"}),
    "channels": frozenset({"core", "channels"}),
    "offline": frozenset({"core", "offline"}),
    # The platform holds a placement (where boxes run) and the placement follows the platform's
    # ledger and adoption rules: the two layers know each other (no module cycle, checked above).
    "platform": _HOST | {"placement"},
    "placement": _HOST | {"placement"},
    "dashboard": _HOST | {"dashboard", "placement"},
    # guest: core, the modules in RUN_PROTOCOL, guest (checked module by module below).
    "guest": frozenset({"core", "guest"}),
}
#: The CLI fronts everything but the box side and the test helpers; the test helpers use any
#: product layer but the CLI.
ALLOWED["cli"] = frozenset(ALLOWED) - {"guest"} | {"cli", "placement"}
ALLOWED["testing"] = frozenset(ALLOWED) - {"cli", "guest"} | {"testing", "placement"}


@dataclass(frozen=True)
class Source:
    text: str
    is_package: bool = False


def package_sources(root: Path = ROOT) -> dict[str, Source]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = ["agentlite", *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = Source(path.read_text(), is_package)
    return found


def import_graph(sources: Mapping[str, Source]) -> dict[str, set[str]]:
    """``module -> modules of the package it imports``. ``from pkg import sub`` imports the module
    ``pkg.sub`` (and runs ``pkg/__init__``, as every import of a submodule does, which is not an
    edge); ``from pkg import name`` imports ``pkg``."""

    def resolve(name: str) -> str | None:
        while name and name not in sources:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, source in sources.items():
        package = name if source.is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(source.text)):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    origin = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    origin = node.module or ""
                for alias in node.names:
                    submodule = f"{origin}.{alias.name}"
                    targets.add(submodule if submodule in sources else origin)
        graph[name] = {m for t in targets if (m := resolve(t)) and m not in (name, "agentlite")}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
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


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def layer_violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Each import that goes where its layer may not, as ``importer -> imported``."""
    bad = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        if layer not in ALLOWED:
            continue  # the package's root and a layer without rules yet: only the general rules hold
        for target in sorted(targets):
            allowed = layer_of(target) in ALLOWED[layer]
            if layer == "guest":
                allowed = allowed or target in RUN_PROTOCOL
            if not allowed:
                bad.append(f"{module} -> {target}")
    return bad


def imports_of_testing(graph: Mapping[str, set[str]]) -> list[str]:
    """Product modules (outside ``agentlite.testing``) that import ``agentlite.testing``."""
    return [
        f"{m} -> {t}"
        for m, targets in sorted(graph.items())
        if layer_of(m) != "testing"
        for t in sorted(targets)
        if layer_of(t) == "testing"
    ]


def reachable(graph: Mapping[str, set[str]], starts: set[str]) -> set[str]:
    seen, todo = set(), list(starts)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def private_reaches(sources: Mapping[str, Source]) -> list[str]:
    """In the CLI: ``obj._name`` on anything but ``self``/``cls``, and ``from m import _name`` from a
    module outside the CLI, as ``module:line: text``."""
    found = []
    for name, source in sorted(sources.items()):
        if layer_of(name) != "cli":
            continue
        for node in ast.walk(ast.parse(source.text)):
            if isinstance(node, ast.Attribute):
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                owner = node.value.id if isinstance(node.value, ast.Name) else None
                if private and owner not in ("self", "cls"):
                    found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2:
                # getattr(obj, "_x") / setattr / hasattr: the same reach, spelled as a string.
                attr, owner_node = node.args[1], node.args[0]
                spelled = isinstance(attr, ast.Constant) and isinstance(attr.value, str)
                if node.func.id in ("getattr", "setattr", "hasattr") and spelled:
                    private = attr.value.startswith("_") and not attr.value.startswith("__")
                    owner = owner_node.id if isinstance(owner_node, ast.Name) else None
                    if private and owner not in ("self", "cls"):
                        found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            elif (
                isinstance(node, ast.ImportFrom) and node.level == 0 and layer_of(node.module or "") != "cli"
            ):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{name}:{node.lineno}: from {node.module} import {alias.name}")
    return sorted(found)


def private_imports(sources: Mapping[str, Source]) -> list[str]:
    """``from m import _name`` of a private name (not a module) of another module, anywhere in the
    package, and of a private module from outside its own package, as ``module:line: text``."""
    found = []
    for name, source in sorted(sources.items()):
        package = name if source.is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(source.text)):
            if (
                not isinstance(node, ast.ImportFrom)
                or node.level
                or not (node.module or "").startswith("agentlite")
            ):
                continue
            for alias in node.names:
                if not alias.name.startswith("_") or alias.name.startswith("__"):
                    continue
                submodule = f"{node.module}.{alias.name}"
                if submodule in sources and (node.module == package or package.startswith(f"{node.module}.")):
                    continue  # a package's own private module
                found.append(f"{name}:{node.lineno}: from {node.module} import {alias.name}")
    return found


# -- the rules hold on the package ------------------------------------------------------------


def test_no_import_cycles() -> None:
    assert cycles(import_graph(package_sources())) == []


def test_each_layer_imports_only_the_layers_below_it() -> None:
    graph = import_graph(package_sources())
    assert layer_violations(graph) == []


def test_product_code_never_imports_testing() -> None:
    assert imports_of_testing(import_graph(package_sources())) == []


def test_the_box_side_reaches_only_what_the_host_compiles_for_it() -> None:
    """What ``python -m agentlite.guest.runner`` and ``agentlite.guest.mcp_server`` load, all of it
    listed in :mod:`agentlite.run.box_bytecode` (so a box never compiles a module itself)."""
    sources = package_sources()
    graph = import_graph(sources)
    box_side = reachable(graph, {"agentlite.guest.runner.__main__", "agentlite.guest.mcp_server"})
    compiled = set()
    for path in box_bytecode.box_sources():
        parts = ["agentlite", *path.relative_to(ROOT).with_suffix("").parts]
        compiled.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert {m for m in box_side if not sources[m].is_package} - compiled == set()
    assert {layer_of(m) for m in box_side} <= {"core", "run", "guest"}


def test_the_cli_reaches_into_no_private_attribute() -> None:
    assert private_reaches(package_sources()) == []


def test_no_module_imports_another_modules_private_names() -> None:
    assert private_imports(package_sources()) == []


def test_the_agent_does_not_reach_the_platform_and_backend_base_names_no_backend() -> None:
    graph = import_graph(package_sources())
    assert "agentlite.platform.app" not in reachable(graph, {"agentlite.platform.agent"})
    backends = {f"agentlite.guest.backends.{n}" for n in ("codex", "claude_code", "acp")}
    assert graph["agentlite.guest.backends.base"] & backends == set()


# -- each checker fails when a forbidden import is added ------------------------------------


def _with(module: str, text: str, *, is_package: bool = False) -> dict[str, Source]:
    sources = package_sources()
    sources[module] = Source(text, is_package)
    return sources


def test_an_upward_import_is_reported() -> None:
    sandbox = package_sources()["agentlite.box.sandbox"].text
    graph = import_graph(
        _with("agentlite.box.sandbox", sandbox + "\nfrom agentlite.platform.store import Message\n")
    )
    assert layer_violations(graph) == ["agentlite.box.sandbox -> agentlite.platform.store"]
    graph = import_graph(_with("agentlite.guest.mcp_server", "from agentlite.run import box_run\n"))
    assert layer_violations(graph) == ["agentlite.guest.mcp_server -> agentlite.run.box_run"]
    graph = import_graph(_with("agentlite.run.extra", "def f():\n    from agentlite.image import builder\n"))
    assert layer_violations(graph) == ["agentlite.run.extra -> agentlite.image.builder"]


def test_a_cycle_is_reported_inside_a_layer_too() -> None:
    graph = import_graph(_with("agentlite.box.procs", "from agentlite.box.sandbox import SandboxRuntime\n"))
    assert any({"agentlite.box.procs", "agentlite.box.sandbox"} <= c for c in cycles(graph))


def test_an_import_of_testing_is_reported() -> None:
    graph = import_graph(_with("agentlite.cli.extra", "from agentlite.testing.chaos import main\n"))
    assert imports_of_testing(graph) == ["agentlite.cli.extra -> agentlite.testing.chaos"]
    assert layer_violations(graph) == ["agentlite.cli.extra -> agentlite.testing.chaos"]


def test_a_host_module_on_the_box_side_is_reported() -> None:
    graph = import_graph(_with("agentlite.guest.runner._extra", "import agentlite.box.lifecycle\n"))
    assert layer_violations(graph) == ["agentlite.guest.runner._extra -> agentlite.box.lifecycle"]


def test_a_private_reach_from_the_cli_is_reported() -> None:
    text = (
        "def f(agent, self):\n    self._ok = 1\n    getattr(agent, '_store')\n    return agent._queue\n"
        "from agentlite.box.lifecycle import _bounded\n"
    )
    assert private_reaches(_with("agentlite.cli.extra", text)) == [
        "agentlite.cli.extra:3: getattr(agent, '_store')",
        "agentlite.cli.extra:4: agent._queue",
        "agentlite.cli.extra:5: from agentlite.box.lifecycle import _bounded",
    ]


def test_an_import_of_a_private_name_is_reported() -> None:
    text = "from agentlite.box.lifecycle import _bounded\nfrom agentlite.guest.runner import _loop\n"
    assert private_imports(_with("agentlite.run.extra", text)) == [
        "agentlite.run.extra:1: from agentlite.box.lifecycle import _bounded",
        "agentlite.run.extra:2: from agentlite.guest.runner import _loop",
    ]
    assert (
        private_imports(_with("agentlite.guest.runner.extra", "from agentlite.guest.runner import _loop\n"))
        == []
    )
