"""The tree shows the architecture: the import graph of the project's packages has no cycle, no module name is
private or carries a family prefix, and no test or benchmark imports a private module (``docs/architecture.md``).

import-linter checks the rooms' layers and contracts (``make lint``); this test builds the module-level graph
itself (grimp, with the imports under ``TYPE_CHECKING`` included) so that a cycle between two modules of one room
fails too.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fmriface", "models", "offline", "service", "stimulus")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES, "tests", include_external_packages=False, cache_dir=None)


def _strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each of more than one module or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    if len(comp) > 1 or node in edges.get(node, ()):
                        out.append(sorted(comp))
    return out


def test_the_scc_finder_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(_strongly_connected(set(edges), edges)) == [["a", "b", "c"], ["e"]]
    assert _strongly_connected({"a", "b"}, {"a": {"b"}}) == []


def test_no_import_cycle_between_any_two_modules(graph):
    nodes = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d in nodes} for m in nodes}
    cycles = _strongly_connected(nodes, edges)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _private(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split("."))


def test_no_module_is_private_or_carries_a_family_prefix(graph):
    private = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES and _private(m))
    assert not private, f"modules with a private or prefixed name (make them a room): {private}"


def test_no_test_or_benchmark_imports_a_private_module(graph):
    importers = [m for m in graph.modules if m.startswith(("tests.", "fmriface.benchmarks"))]
    bad = sorted(
        f"{m} -> {d}"
        for m in importers
        for d in graph.find_modules_directly_imported_by(m)
        if d.split(".")[0] in PACKAGES and _private(d)
    )
    assert not bad, "private modules imported by tests or benchmarks (use a public name, conftest or a harness):\n" + (
        "\n".join(bad)
    )
