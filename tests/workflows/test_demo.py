import json
from pathlib import Path

import pytest

from morphospace.config import resolve_config
from morphospace.runs import RunConflictError
from morphospace.workflows.demo import DemoConfig, run_demo

SMALL = {"simulate": {"plates": 1, "moas": ["Actin disruptors", "Eg5 inhibitors", "Protein synthesis"],
                      "compounds_per_moa": 2, "concentrations": 1, "dmso_wells_per_plate": 2, "field_size": 192,
                      "cells_per_field": 8},
         "montage_cells": 4, "overlay_fields": 2,
         "models": {"presets": {"vae": 2}, "crop_size": 32, "base_channels": 8},
         "isl": {"max_epochs": 2, "tile": 32, "channels": [8, 16]}}

pytestmark = pytest.mark.slow


def _numbers(summary) -> dict:
    """The summary line's numbers, without the time it took and where it wrote."""
    return {k: v for k, v in vars(summary).items() if k not in ("seconds", "out", "report")}


def test_same_seed_same_numbers_in_another_folder(tmp_path: Path):
    config = resolve_config(DemoConfig, SMALL)
    first = run_demo(tmp_path / "first", config, workers=1, progress=False)
    second = run_demo(tmp_path / "second", config, workers=2, progress=False)
    assert _numbers(first) == _numbers(second)
    assert first.line().split("; ")[:-1] == second.line().split("; ")[:-1]  # all but the time and the path


def _strict(constant: str):
    raise ValueError(f"not strict JSON: {constant}")


def test_demo_report_and_rerun(tmp_path: Path):
    config = resolve_config(DemoConfig, SMALL)
    summary = run_demo(tmp_path / "demo", config, workers=1, progress=False)
    html = summary.report.read_text()
    for heading in ("Quality control", "Segmentation against the simulated ground truth", "Crops per mechanism",
                    "CellProfiler profiles and mechanism of action", "Generative models", "In silico labeling"):
        assert heading in html
    assert html.count("<img") >= 4 and (tmp_path / "demo" / "figures" / "crops_per_moa.png").is_file()
    assert summary.n_cells > 20 and summary.nuclei_f1 > 0.9
    assert 0 <= summary.nsc <= 1 and 0 <= summary.moa_map <= 1 and set(summary.embedding_nsc) == {"vae"}
    assert (tmp_path / "demo" / "evaluation" / "moa.json").is_file()
    assert -1 <= summary.isl_pcc <= 1 and "transmitted->DNA PCC" in summary.line()
    assert (tmp_path / "demo" / "runs" / "isl_dna" / "evaluation" / "isl.json").is_file()
    assert (tmp_path / "demo" / "config.yaml").is_file() and (tmp_path / "demo" / "demo.log").is_file()
    written = sorted((tmp_path / "demo").rglob("*.json"))
    assert {"moa.json", "retrieval.json", "isl.json", "summary.json", "store.json"} <= {p.name for p in written}
    for path in written:  # every JSON the demo writes is valid for strict parsers (null, never NaN)
        json.loads(path.read_text(), parse_constant=_strict)
    again = run_demo(tmp_path / "demo", config, workers=1, progress=False)
    assert again.n_cells == summary.n_cells and again.seconds < summary.seconds
    with pytest.raises(RunConflictError, match="simulate.seed"):
        run_demo(tmp_path / "demo", resolve_config(DemoConfig, SMALL, ["simulate.seed=5"]), workers=1, progress=False)
