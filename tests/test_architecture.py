"""The package's layers: a module imports only from lower layers (or its own package), nothing
imports a stage's command line, and there is no import cycle. The checks read every import
statement, at module level or inside a function."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# lowest first; a module may import from its own layer's package and the layers before it
LAYERS = ["errors", "artifacts", "params", "diffusion", "search", "data", "methods", "training", "evaluation",
          "report", "stages", "workflow"]
SHARED_BY_STAGES = {"pipeline.stages.command"}  # the one module of stages/ that stages import


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of the package and the ``pipeline`` modules it imports."""
    graph = {}
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        imports = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
                imports.add(node.module)
            elif isinstance(node, ast.Import):
                imports |= {alias.name for alias in node.names if alias.name.startswith("pipeline")}
        graph[module_name(path)] = imports
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a higher layer, and imports of a stage by anything."""
    problems = []
    for module, imports in graph.items():
        for imported in imports:
            if imported.startswith("pipeline.stages.") and imported not in SHARED_BY_STAGES:
                problems.append(f"{module} imports the stage {imported}")
            elif layer(imported) > layer(module):
                problems.append(f"{module} (layer {LAYERS[layer(module)]}) imports {imported} "
                                f"(layer {LAYERS[layer(imported)]})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (one path per cycle found by depth-first search)."""
    found, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                found.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_every_module_is_in_a_layer():
    unplaced = [m for m in import_graph() if m != "pipeline" and m.split(".")[1] not in LAYERS]
    assert not unplaced, f"modules outside the layers {LAYERS}: {unplaced}"


def test_lower_layers_never_import_higher_ones_nor_a_stage():
    assert layering_violations(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_checks_catch_a_cycle_and_a_library_importing_a_stage():
    assert cycles({"pipeline.data.a": {"pipeline.data.b"}, "pipeline.data.b": {"pipeline.data.a"}}) == [
        ["pipeline.data.a", "pipeline.data.b", "pipeline.data.a"]]
    assert layering_violations({"pipeline.evaluation.metrics": {"pipeline.stages.sample"}}) == [
        "pipeline.evaluation.metrics imports the stage pipeline.stages.sample"]
    assert layering_violations({"pipeline.stages.metrics": {"pipeline.stages.sample"}}) == [
        "pipeline.stages.metrics imports the stage pipeline.stages.sample"]
    assert layering_violations({"pipeline.params.validation": {"pipeline.methods.registry"}}) == [
        "pipeline.params.validation (layer params) imports pipeline.methods.registry (layer methods)"]


@pytest.mark.parametrize("stage", sorted(p.stem for p in (ROOT / "pipeline/stages").glob("*.py")
                                         if p.stem not in ("__init__", "command")))
def test_every_stage_is_a_command_line(stage):
    tree = ast.parse((ROOT / "pipeline/stages" / f"{stage}.py").read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    assert any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
