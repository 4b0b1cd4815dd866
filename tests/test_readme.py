"""The README's "Add a model family" example works as written."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from morphospace.cli import main
from morphospace.models.registry import register_family, unregister_family

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    section = README.read_text().split("## Add a model family", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_family_of_the_readme_trains_and_embeds(blob_store: Path, tmp_path: Path, capsys):
    module = types.ModuleType("readme_shape_family")  # as if the example were the user's own module
    sys.modules[module.__name__] = module
    exec(compile(_example(), str(README), "exec"), module.__dict__)
    register_family(module.ShapeFamily())
    try:
        config = tmp_path / "shape.yaml"
        config.write_text(yaml.safe_dump({
            "name": "shape", "runs_dir": str(tmp_path / "runs"),
            "data": {"store": str(blob_store), "batch_size": 32, "split": {"by": None, "train": 1.0, "val": 0.0,
                                                                           "test": 0.0},
                     "conditions": {"compound": {"kind": "categorical", "column": "Metadata_Compound"}}},
            "model": {"family": "shape", "condition": "compound"},
            "trainer": {"max_epochs": 2, "precision": "32-true"}}))
        assert main(["--no-progress", "train", str(config)]) == 0
        assert main(["--no-progress", "embed", "--run", str(tmp_path / "runs" / "shape")]) == 0
        assert "embedded 96 cells into 16 dimensions" in capsys.readouterr().out
    finally:
        unregister_family("shape")
        sys.modules.pop(module.__name__)
