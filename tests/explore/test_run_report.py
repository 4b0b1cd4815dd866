"""``report --run``: one page for a run of any family, as written to disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from morphospace.cli import main
from morphospace.explore.browser import browser_missing, hover_point, open_page


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


@pytest.fixture()
def indexed_runs(trained_runs, tmp_path: Path) -> Path:
    """Copies of the tiny VAE and LSGAN runs, the VAE embedded and given a MoA score."""
    from morphospace.workflows.latent import embed_store

    runs = tmp_path / "runs"
    for name in ("vae", "lsgan"):
        shutil.copytree(trained_runs[name], runs / name)
    embed_store(runs / "vae")
    (runs / "vae" / "evaluation").mkdir(exist_ok=True)
    (runs / "vae" / "evaluation" / "moa.json").write_text(json.dumps(
        {"convention": "NSC of treatment profiles", "nsc": {"accuracy": 0.75, "treatments": 4}}))
    sweep = runs / "cell_beta_sweep"  # what explore beta-sweep leaves: its table (its figure is optional)
    sweep.mkdir()
    pd.DataFrame({"beta": [0.1, 0.5], "model": "reference", "recon": [10.0, 20.0], "kl": [30.0, 5.0],
                  "active_dims": [12, 3], "run": ["a", "b"]}).to_csv(sweep / "beta_sweep.csv", index=False)
    return runs


@pytest.mark.slow
def test_runs_index_links_every_report_with_its_scores(indexed_runs: Path, capsys):
    assert main(["report", "--runs", str(indexed_runs)]) == 0
    assert "2 run(s)" in capsys.readouterr().out
    index = (indexed_runs / "index.html").read_text()
    assert "href='vae/report.html'" in index and "href='lsgan/report.html'" in index
    assert "<th>NSC</th>" in index and "0.750" in index
    assert "Beta sweep: cell_beta_sweep" in index and "<th>active_dims</th>" in index
    vae, lsgan = ((indexed_runs / name / "report.html").read_text() for name in ("vae", "lsgan"))
    assert vae.count("data:image/png;base64,") >= 96 and '"name":"map-preview"' in vae  # 96 crops on its map
    assert "Embeddings" not in lsgan and "map-preview" not in lsgan
    written = (indexed_runs / "vae" / "report.html").stat().st_mtime_ns
    assert main(["report", "--runs", str(indexed_runs)]) == 0
    assert (indexed_runs / "vae" / "report.html").stat().st_mtime_ns == written  # up to date: not rewritten


def test_runs_index_of_a_folder_without_runs(tmp_path: Path, capsys):
    assert main(["report", "--runs", str(tmp_path)]) == 2
    assert "no training runs in it" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(browser_missing() is not None, reason=f"no browser check: {browser_missing()}")
def test_run_report_map_in_chromium(indexed_runs: Path):
    assert main(["report", "--run", str(indexed_runs / "vae")]) == 0
    with open_page(indexed_runs / "vae" / "report.html") as check:
        source, _ = hover_point(check, "map", 5)
        assert source.startswith("data:image/png;base64,") and check.errors == []
