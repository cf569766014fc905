"""The package's layers import one way (docs: architecture): science modules ← workflows ← server / CLI, and no
module imports one that (directly or through others) imports it back — deferred imports inside functions included."""
from __future__ import annotations

import ast
from pathlib import Path

import clem_bridge

ROOT = Path(clem_bridge.__file__).resolve().parent
FRONT_ENDS = ("clem_bridge.server", "clem_bridge.cli", "clem_bridge.__main__")


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Module → the clem_bridge modules it imports anywhere in its code (``from pkg import sub`` counts as
    importing ``pkg.sub`` only)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files}
                graph[name] |= subs if len(subs) == len(node.names) else ({target} | subs) & files.keys()
        graph[name].discard(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    return found


def test_the_import_graph_is_read():
    graph = import_graph()
    assert "clem_bridge.io.units" in graph["clem_bridge.io.formats"]
    assert "clem_bridge.register" in graph["clem_bridge.workflows.register"]   # a deferred import counts


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_a_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_lower_layers_do_not_import_workflows_or_front_ends():
    upward = {name: sorted(t for t in targets if t.startswith(FRONT_ENDS + ("clem_bridge.workflows",)))
              for name, targets in import_graph().items()
              if not name.startswith(FRONT_ENDS + ("clem_bridge.workflows",))}
    assert {k: v for k, v in upward.items() if v} == {}


def test_workflows_do_not_import_front_ends():
    graph = import_graph()
    upward = {n: sorted(t for t in graph[n] if t.startswith(FRONT_ENDS)) for n in graph
              if n.startswith("clem_bridge.workflows")}
    assert {k: v for k, v in upward.items() if v} == {}
