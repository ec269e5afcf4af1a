"""The package reads from top to bottom: no module imports from a layer above its own, and no two
modules import each other, directly or around a loop. Imports inside functions count too: a lazy import
is still a dependency. Walked with `ast`, so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trainlab"

# Bottom up. A module belongs to the layer of its first name under trainlab (trainlab.data.loader -> data).
LAYERS = [
    {"errors", "registry"},
    {"io", "config", "device", "progress"},
    {"data", "nn"},
    {"models"},
    {"tasks"},
    {"inference"},
    {"training"},
    {"diagnose", "report", "scratch"},
    {
        "run",
        "rundir",
        "launch",
        "scratch_run",
        "predict",
        "experiments",
        "export",
        "ensemble",
        "transfer_run",
        "vision_run",
        "vision_predict",
    },  # fmt: skip
    {"catalog", "dispatch", "cli", "__main__"},
]
LAYER = {top: level for level, tops in enumerate(LAYERS) for top in tops}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The trainlab modules `name` imports. `from P import n` imports P itself (Python looks `n` up on
    the package first) and, when n is a submodule, P.n as well; `import P.Q as x` imports P.Q."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("trainlab.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trainlab"):
            assert node.level == 0, f"{name}: relative import"
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return {m for m in found if m in MODULES and m != "trainlab"} - {name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> int:
    top = name.split(".")[1]
    assert top in LAYER, f"{name}: add trainlab.{top} to a layer in tests/test_layers.py"
    return LAYER[top]


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m != "trainlab"))
def test_no_module_imports_from_a_layer_above_it(name):
    upward = sorted(m for m in GRAPH[name] if layer(m) > layer(name))
    assert not upward, f"{name} (layer {layer(name)}) imports from above: {upward}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_what_they_are_meant_to_see():
    """The walker finds lazy and package imports, and the cycle search finds a planted cycle."""
    assert "trainlab.training.trainer" in GRAPH["trainlab.run"]
    assert "trainlab.diagnose" in GRAPH["trainlab.run"]  # imported inside train()
    assert {"trainlab.data.augment", "trainlab.data.augment.pipeline"} <= GRAPH["trainlab.data.augment"] | {
        "trainlab.data.augment"
    }
    planted = {**GRAPH, "trainlab.io": GRAPH["trainlab.io"] | {"trainlab.run"}}
    assert find_cycle(planted) is not None
    assert layer("trainlab.cli") > layer("trainlab.run") > layer("trainlab.training") > layer("trainlab.io")
