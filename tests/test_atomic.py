"""Atomic writes: complete files or none, temporary names unique per writer, and the modes of the
user's umask (a colleague on the same server can read reports, configs and results)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from morphospace.atomic import atomic_directory, atomic_file, write_text_atomic
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


@pytest.mark.slow
def test_a_run_and_its_report_are_readable_by_others(umask_022, blob_store: Path, tmp_path: Path, tiny_config):
    from morphospace.explore.run_report import write_run_report
    from morphospace.workflows.train import train

    train(tiny_config(blob_store, tmp_path, "shared", {"family": "vae"}, max_epochs=1), progress=False)
    run = tmp_path / "shared"
    write_run_report(run)
    for name in ("config.yaml", "summary.json", "data.json", "normalization.json", "report.html", "metrics.csv"):
        assert _mode(run / name) == 0o644, name
