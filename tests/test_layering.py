"""Imports point one way, and no module imports itself through others.

    common  <-  tenants  <-  parameters, collection, metering  <-  streams  <-  reporting

`common` imports no app and not `config`; `config` only wires (it names apps by dotted
string and imports none); an app imports only apps to its left, except that any app may
read `parameters`. Function-local imports count too: they hide a cycle, not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "common": 0,
    "tenants": 1,
    "parameters": 2,
    "collection": 2,
    "metering": 2,
    "streams": 3,
    "reporting": 4,
}
READ_BY_ANY_APP = {"parameters"}
SKIPPED = {"tests", "migrations", "bench", ".venv", ".tally", "node_modules"}


def project_modules() -> dict[str, Path]:
    found = {}
    for top in [*LAYERS, "config"]:
        for path in (ROOT / top).rglob("*.py") if (ROOT / top).is_dir() else []:
            relative = path.relative_to(ROOT)
            if SKIPPED.intersection(relative.parts):
                continue
            name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement in the file can reach, resolved."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def dependency_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        edges = set()
        for name in imported_names(path, module):
            parts = name.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            target = ".".join(parts)
            if target and target != module:
                edges.add(target)
        graph[module] = edges
    return graph


def direction_problem(source: str, target: str) -> str | None:
    source_top, target_top = source.split(".")[0], target.split(".")[0]
    if source_top == target_top:
        return None
    if source_top == "config":
        return "config imports an app" if target_top in LAYERS and target_top != "common" else None
    if target_top == "config":
        return "an app imports config"
    if LAYERS[target_top] > LAYERS[source_top]:
        return "imports a higher layer"
    if LAYERS[target_top] == LAYERS[source_top] and target_top not in READ_BY_ANY_APP:
        return "imports a sibling app"
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_imports_point_one_way():
    problems = [
        f"{source} -> {target}: {problem}"
        for source, targets in dependency_graph().items()
        for target in sorted(targets)
        if (problem := direction_problem(source, target))
    ]
    assert problems == []


def test_no_module_imports_itself_through_others():
    assert cycles(dependency_graph()) == []


def test_the_checks_catch_what_they_are_for():
    # The rules themselves, so a broken checker cannot pass silently.
    assert direction_problem("metering.usage", "collection.services") == "imports a sibling app"
    assert direction_problem("metering.usage", "parameters.services") is None
    assert direction_problem("tenants.models", "metering.models") == "imports a higher layer"
    assert direction_problem("common.json", "tenants.models") == "imports a higher layer"
    assert direction_problem("config.settings", "parameters.crypto") == "config imports an app"
    assert direction_problem("metering.models", "config.settings") == "an app imports config"
    assert direction_problem("streams.runtime", "metering.usage") is None
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert len(dependency_graph()) > 50
