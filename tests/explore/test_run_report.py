"""``report --run``: one page for a run of any family, as written to disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from morphospace.cli import main


@pytest.mark.slow
def test_report_of_a_generative_run(trained_runs, capsys):
    run = trained_runs["vae"]
    assert main(["report", "--run", str(run)]) == 0
    html = (run / "report.html").read_text()
    for text in ("Configuration", "Family vae, data source crops", "crops/s", "Losses per epoch",
                 "Samples during training"):
        assert text in html, text
    assert html.count("<img") >= 2 and "wrote" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("task", ["labeling", "segmentation"])
def test_report_of_an_image_to_image_run_with_its_evaluation(task, transmitted_screen, isl_config, tmp_path):
    model = {"task": "segmentation", "loss": {"kind": "jaccard"}} if task == "segmentation" else {}
    path = isl_config(transmitted_screen, tmp_path, **model)
    assert main(["--no-progress", "train", str(path)]) == 0
    run = tmp_path / "runs" / "isl_test"
    kind = "segmentation" if task == "segmentation" else "isl"
    assert main(["evaluate", kind, "--run", str(run), "--set", "tile=32"]) == 0
    assert main(["report", "--run", str(run)]) == 0
    html = (run / "report.html").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["family"] == "isl" and summary["sample_unit"] == "tiles"
    assert "Family isl, data source paired" in html and "tiles/s" in html
    if task == "segmentation":
        assert "Segmentation (test regions)" in html and "mean_iou" in html
    else:
        assert "In silico labeling (test regions)" in html and "PCC non-empty" in html
        assert "Input, truth and prediction of a held-out field" in html


def test_report_of_a_folder_that_is_not_a_run(tmp_path: Path, capsys):
    assert main(["report", "--run", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
