"""The import rule, checked on the source: imports go one way (commands → integrations → reporting → corrector →
core → models/data → algorithms → foundation), and no module imports itself back through a cycle.

Every import counts: at module level, under ``TYPE_CHECKING`` and inside functions (a lazy import is still a
dependency). The layers are the README's contributing section, in the same order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_verifix"

# Highest first. A module may import from its own layer or any layer below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("commands", ("commands", "hub")),
    ("integrations", ("integrations", "training")),
    ("reporting", ("reporting",)),
    ("corrector", ("corrector", "fitting")),
    ("core", ("selection", "statistics", "projection", "predictions", "metrics")),
    ("models and data", ("models", "data", "noise")),
    ("algorithms", ("algorithms",)),
    ("foundation", ("utils", "errors", "config", "results", "_validation", "_version")),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    """The layer index of ``hf_verifix.<top>...`` (0 = highest); None for the package root (it re-exports)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    for index, (_, tops) in enumerate(LAYERS):
        if parts[1] in tops:
            return index
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and to the README's contributing section")


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def _imports(path: Path) -> set[str]:
    """Every hf_verifix module ``path`` imports, resolved to absolute names (relative imports included)."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("hf_verifix"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("hf_verifix"):
                target = node.module
            else:
                continue
            # `from . import figures` names a module; `from .results import X` names the module it comes from.
            submodules = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            found.update(submodules or [target])
    return found


GRAPH = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_a_higher_layer(module: str) -> None:
    mine = _layer(module)
    if mine is None:
        return
    upward = sorted(
        f"{target} ({LAYERS[layer][0]})"
        for target in GRAPH[module]
        if (layer := _layer(target)) is not None and layer < mine
    )
    assert not upward, f"{module} ({LAYERS[mine][0]}) imports from higher layers: {upward}"


def test_the_corrector_imports_no_reporting_hub_integration_or_cli_code() -> None:
    forbidden = ("hf_verifix.reporting", "hf_verifix.integrations", "hf_verifix.hub", "hf_verifix.commands")
    for module in ("hf_verifix.corrector", "hf_verifix.fitting"):
        assert not [t for t in GRAPH[module] if t.startswith(forbidden)], module


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components over the package's modules: each must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, ()):
            if target not in GRAPH or target == "hf_verifix":
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_scan_sees_imports_of_every_kind() -> None:
    """The scan itself: lazy imports inside functions and ``from . import module`` are found, so the rule cannot
    pass by not looking."""
    assert "hf_verifix.integrations.trainer" in GRAPH["hf_verifix"]  # inside the package's __getattr__
    assert "hf_verifix.reporting.figures" in GRAPH["hf_verifix.reporting.report"]  # from . import figures
    assert "hf_verifix.results" in GRAPH["hf_verifix.corrector"]
    assert _layer("hf_verifix.commands.cli") < _layer("hf_verifix.corrector") < _layer("hf_verifix.utils.staging")


def test_the_readme_lists_the_layers_in_this_order() -> None:
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Contributing") :]
    positions = [section.find(f"**{name}**") for name, _ in LAYERS]
    assert all(p >= 0 for p in positions), [name for (name, _), p in zip(LAYERS, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
