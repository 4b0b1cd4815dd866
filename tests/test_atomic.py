"""Atomic writes: complete files or none, temporary names unique per writer, and the modes of the
user's umask (a colleague on the same server can read reports, configs and results)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from morphospace.atomic import atomic_directory, atomic_file, json_text, write_json_atomic, write_text_atomic
from morphospace.io.images import write_png
from morphospace.io.tables import write_table


@pytest.fixture()
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_directories_get_the_umask_modes(umask_022, tmp_path: Path):
    import pandas as pd

    write_text_atomic(tmp_path / "config.yaml", "a: 1\n")
    write_png(tmp_path / "figure.png", np.zeros((4, 4), np.uint8))
    write_table(pd.DataFrame({"a": [1]}), tmp_path / "table.parquet")
    with atomic_directory(tmp_path / "store") as building:
        (building / "store.json").write_text("{}")
    for name in ("config.yaml", "figure.png", "table.parquet", "store/store.json"):
        assert _mode(tmp_path / name) == 0o644, name
    assert _mode(tmp_path / "store") == 0o755


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    write_text_atomic(tmp_path / "result.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "result.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "result.json").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["result.json"]


def test_concurrent_writers_of_one_file_never_share_a_temporary_name(tmp_path: Path):
    target = tmp_path / "samples.png"
    with atomic_file(target) as first, atomic_file(target) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert target.read_text() == "first" and sorted(os.listdir(tmp_path)) == ["samples.png"]


def _refuse(constant: str):
    raise ValueError(f"not strict JSON: {constant}")


def test_json_is_strict_with_null_for_missing_values(tmp_path: Path):
    import json

    import torch

    value = {"nan": float("nan"), "inf": -np.inf, "f32": np.float32(0.25), "i64": np.int64(3), "flag": np.bool_(True),
             "nested": {"array": np.array([[1.0, np.nan]]), "tensor": torch.tensor([2.0, float("inf")]),
                        "tuple": (1, float("nan"))},
             7: Path("runs") / "vae"}
    path = write_json_atomic(tmp_path / "result.json", value)
    parsed = json.loads(path.read_text(), parse_constant=_refuse)
    assert parsed == {"nan": None, "inf": None, "f32": 0.25, "i64": 3, "flag": True,
                      "nested": {"array": [[1.0, None]], "tensor": [2.0, None], "tuple": [1, None]},
                      "7": str(Path("runs") / "vae")}
    assert json.loads(json_text(np.float64(np.nan), indent=None), parse_constant=_refuse) is None
    with pytest.raises(ValueError, match="NaN"):
        json.loads('{"a": NaN}', parse_constant=_refuse)  # the check the demo's JSON files pass


def test_every_json_is_written_through_the_strict_writer():
    import re

    import morphospace

    package = Path(morphospace.__file__).parent
    pattern = re.compile(r"json\.dumps?\(|model_dump_json\(")
    direct = [f"{path.relative_to(package)}: {match.group(0)}" for path in sorted(package.rglob("*.py"))
              if path.name != "atomic.py" for match in pattern.finditer(path.read_text())]
    assert not direct, f"JSON written without json_text / write_json_atomic (bare NaN possible): {direct}"


@pytest.mark.slow
def test_a_run_and_its_report_are_readable_by_others(umask_022, blob_store: Path, tmp_path: Path, tiny_config):
    from morphospace.explore.run_report import write_run_report
    from morphospace.workflows.train import train

    train(tiny_config(blob_store, tmp_path, "shared", {"family": "vae"}, max_epochs=1), progress=False)
    run = tmp_path / "shared"
    write_run_report(run)
    for name in ("config.yaml", "summary.json", "data.json", "normalization.json", "report.html", "metrics.csv"):
        assert _mode(run / name) == 0o644, name
