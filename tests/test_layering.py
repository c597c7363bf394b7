"""The layering docs/architecture.md draws, checked on the code's own imports (read with `ast`,
function-level imports included, `if TYPE_CHECKING:` blocks left out since they never run)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "raysae"

MAY_IMPORT = {
    "errors": set(),
    "devices": set(),
    "filesystem": set(),
    "synthetic": set(),
    "ranking": set(),
    "progress": set(),
    "ray_runtime": {"progress"},
    "models": {"errors", "devices"},
    "metrics": set(),
    "config": {"errors", "filesystem", "models"},
    "checkpoint": {
        "config",
        "models",
        "metrics",
        "filesystem",
        "checkpoint_multilayer",
        "circuit_tracer_format",
    },
    "checkpoint_multilayer": {"circuit_tracer_format", "config", "filesystem", "models"},
    "circuit_tracer_format": {"config", "devices", "filesystem", "models"},
    "run_dir": {"config", "filesystem"},
    "training": {"config", "models", "metrics", "checkpoint", "run_dir", "devices", "errors"},
    "activations": {"config", "errors", "filesystem", "devices", "progress"},
    "tracking": {"config", "filesystem"},
    "store": {"config", "errors", "run_dir"},
    "raytrain": {
        "activations",
        "config",
        "errors",
        "filesystem",
        "metrics",
        "models",
        "progress",
        "ray_runtime",
        "run_dir",
        "tracking",
        "training",
    },
    "analysis": {
        "activations",
        "checkpoint",
        "config",
        "devices",
        "errors",
        "filesystem",
        "models",
        "progress",
        "ray_runtime",
        "run_dir",
        "store",
    },
    "preflight": {"activations", "config", "errors", "models"},
    "sweep": {
        "activations",
        "analysis",
        "cli",
        "config",
        "errors",
        "filesystem",
        "preflight",
        "ranking",
        "progress",
        "ray_runtime",
        "raytrain",
        "run_dir",
        "store",
        "tracking",
    },
    # The browser runs an SAE's model on a typed text (dashboard.inference): it loads the
    # checkpoint and its config, and tokenises and encodes as the analysis does.
    "dashboard": {"activations", "analysis", "checkpoint", "config", "store"},
    "export": {"activations", "analysis", "filesystem", "store"},
    "cli": {"config", "errors", "progress", "store"},
}
"""Part of raysae -> the parts it may import. The commands (`generate`, `train`, `analyze` and every
`__main__`) and the package's face (`raysae/__init__.py`) sit on top and may import any part."""

TOP = {"__init__", "__main__", "generate", "train", "analyze", "init", "assets", "explanations"}
MATH = [
    "models",
    "metrics",
    "analysis.encode",
    "analysis.stats",
    "analysis.logits",
    "analysis.documents",
    "analysis.neighbours",
    "analysis.token_text",
]
"""Plain PyTorch / NumPy: no Ray, no torch.distributed (the edges put them on Ray)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _nodes(tree: ast.AST, type_only: bool):
    """Every node, but those under `if TYPE_CHECKING:` unless `type_only` imports count too."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if not type_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports(name: str, type_only: bool = False) -> set[str]:
    """Modules `name` imports at run time (with `type_only`, for type checking too); raysae modules
    resolved to the deepest one that exists."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _nodes(ast.parse(path.read_text()), type_only):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                ).strip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return found


GRAPH = {name: {m for m in imports(name) if m in MODULES} for name in MODULES}
TYPED_GRAPH = {name: {m for m in imports(name, type_only=True) if m in MODULES} for name in MODULES}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("graph", [GRAPH, TYPED_GRAPH], ids=["run time", "type checking too"])
def test_there_are_no_import_cycles(graph):
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep] if dep in path else [name, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_every_part_is_in_the_layering_table():
    assert {part_of(m) for m in MODULES} == set(MAY_IMPORT) | TOP


def is_command(module: str) -> bool:
    return part_of(module) in TOP or module.endswith(".__main__")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not is_command(m)))
def test_each_part_imports_only_what_the_layering_allows(module):
    part = part_of(module)
    used = {part_of(dep) for dep in GRAPH[module]} - {part}
    assert used <= MAY_IMPORT[part], f"{module} imports {sorted(used - MAY_IMPORT[part])}"


@pytest.mark.parametrize("prefix", MATH)
def test_the_math_imports_no_ray_and_no_torch_distributed(prefix):
    for name in (m for m in MODULES if m == f"raysae.{prefix}" or m.startswith(f"raysae.{prefix}.")):
        bad = {m for m in imports(name) if m.split(".")[0] == "ray" or m.startswith("torch.distributed")}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_the_check_sees_imports():
    """The reader is not blind: it finds imports the code is known to have."""
    assert "raysae.filesystem" in GRAPH["raysae.run_dir"]
    assert "raysae.models" in GRAPH["raysae.config.root"]
    assert "torch.distributed" in imports("raysae.training.step")
    assert "raysae.config.sae" not in GRAPH["raysae.models.base"]  # under TYPE_CHECKING only
    assert "raysae.config.sae" in TYPED_GRAPH["raysae.models.base"]
