"""The package's layers follow the data flow: no module imports from a later stage."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "morphospace"

LAYERS = [
    {"__init__", "errors", "atomic", "locks", "config", "runs", "parallel"},
    {"io"},
    {"simulate", "preprocess"},
    {"segment"},
    {"features"},
    {"data"},
    {"models"},
    {"evaluate"},
    {"explore"},
    {"workflows"},
    {"cli", "__main__"},
]


def _layer(name: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if name in names)


def _imports(path: Path) -> set[str]:
    """The top-level morphospace packages or modules a file imports, at any depth in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "morphospace" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] == "morphospace":
                found.add("__init__")
    return found


def test_every_module_belongs_to_a_layer():
    names = {p.stem if p.parent == PACKAGE else p.relative_to(PACKAGE).parts[0] for p in PACKAGE.rglob("*.py")}
    unknown = [name for name in names if not any(name in layer for layer in LAYERS)]
    assert not unknown, f"place {unknown} in LAYERS"


def test_no_import_runs_back_up_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.stem if path.parent == PACKAGE else path.relative_to(PACKAGE).parts[0]
        for target in _imports(path) - {own}:
            if _layer(target) > _layer(own):
                upward.append(f"{path.relative_to(PACKAGE)} imports morphospace.{target}")
    assert not upward, "\n".join(upward)
