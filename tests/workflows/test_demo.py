import json
from pathlib import Path

import pytest

from morphospace.config import resolve_config
from morphospace.explore.browser import browser_missing, hover_point, open_page
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


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """One run of the small demo, shared by the tests below (each leaves it as it found it)."""
    return run_demo(tmp_path_factory.mktemp("demo") / "demo", resolve_config(DemoConfig, SMALL), workers=1,
                    progress=False)


def test_same_seed_same_numbers_in_another_folder(small_demo, tmp_path: Path):
    first = small_demo
    second = run_demo(tmp_path / "second", resolve_config(DemoConfig, SMALL), workers=2, progress=False)
    assert _numbers(first) == _numbers(second)
    assert first.line().split("; ")[:-1] == second.line().split("; ")[:-1]  # all but the time and the path


def _strict(constant: str):
    raise ValueError(f"not strict JSON: {constant}")


def test_demo_report_and_rerun(small_demo):
    config = resolve_config(DemoConfig, SMALL)
    summary = small_demo
    folder = summary.out
    html = summary.report.read_text()
    for heading in ("Quality control", "Segmentation against the simulated ground truth", "Crops per mechanism",
                    "CellProfiler profiles and mechanism of action", "Generative models", "In silico labeling"):
        assert heading in html
    assert html.count("<img") >= 4 and (folder / "figures" / "crops_per_moa.png").is_file()
    assert summary.n_cells > 20 and summary.nuclei_f1 > 0.9
    assert 0 <= summary.nsc <= 1 and 0 <= summary.moa_map <= 1 and set(summary.embedding_nsc) == {"vae"}
    assert (folder / "evaluation" / "moa.json").is_file()
    assert -1 <= summary.isl_pcc <= 1 and "transmitted->DNA PCC" in summary.line()
    assert (folder / "runs" / "isl_dna" / "evaluation" / "isl.json").is_file()
    assert (folder / "config.yaml").is_file() and (folder / "demo.log").is_file()
    assert "Maps of wells and cells" in html and "runs/index.html" in html
    assert "href='vae/report.html'" in (folder / "runs" / "index.html").read_text()
    if browser_missing() is None:  # as a user sees it: both maps render, hover shows a crop, no script errors
        with open_page(summary.report) as check:
            for name in ("wells-map", "cells-map"):
                assert hover_point(check, name, 0)[0].startswith("data:image/png;base64,")
            assert check.errors == []
    written = sorted(folder.rglob("*.json"))
    assert {"moa.json", "retrieval.json", "isl.json", "summary.json", "store.json"} <= {p.name for p in written}
    for path in written:  # every JSON the demo writes is valid for strict parsers (null, never NaN)
        json.loads(path.read_text(), parse_constant=_strict)
    again = run_demo(folder, config, workers=1, progress=False)
    assert again.n_cells == summary.n_cells and again.seconds < summary.seconds
    with pytest.raises(RunConflictError, match="simulate.seed"):
        run_demo(folder, resolve_config(DemoConfig, SMALL, ["simulate.seed=5"]), workers=1, progress=False)
