"""``evaluate coupling``, ``evaluate drug-shift`` and ``explore beta-sweep`` of Statistical Cell
runs, on a tiny simulated structures store and runs trained for one epoch."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from morphospace.cli import main
from morphospace.config import resolve_config
from morphospace.errors import InputError
from morphospace.evaluate.statistical_cell import call_shifts, holm
from morphospace.models.registry import load_run_config
from morphospace.simulate import SimulateConfig, simulate_structures
from morphospace.workflows.statistical_cell import (
    CouplingConfig, DrugShiftConfig, _target_scores, evaluate_coupling, evaluate_drug_shift, prepared_cells,
    run_beta_sweep, shift_truth_scores,
)

STRUCTURES = ["Nucleoli", "Cortex", "Puncta"]
TINY_RUN = ["data.crop_size=32", "data.batch_size=16", "data.split.train=0.5", "data.split.val=0.1",
            "data.split.test=0.4", "model.base_channels=4", "model.levels=2", "model.reference_latent_dim=4",
            "model.target_latent_dim=4", "model.label_embedding_dim=2", "trainer.max_epochs=1",
            "trainer.sample_images=4"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """72 cells of 32 x 32 px: 3 structures x (DMSO, NucleolarEnlarger) x 12 cells."""
    config = resolve_config(SimulateConfig, {}, [
        "mode=structures", "structures.crop_size=[32, 32]", "structures.cells_per_condition=12",
        f"structures.structures=[{', '.join(STRUCTURES)}]", "structures.drugs=[NucleolarEnlarger]",
        "structures.truth_cells=3", "structures.truth_swaps=1", "structures.truth_samples=1"])
    out = tmp_path_factory.mktemp("structures") / "cells"
    simulate_structures(config, out, progress=False)
    return out


def _config(store: Path, runs: Path, *overrides: str):
    return load_run_config("statistical_cell_simulated", [f"data.store={store}", f"runs_dir={runs}", *TINY_RUN,
                                                          *overrides])


@pytest.fixture(scope="module")
def run_dir(store: Path, tmp_path_factory) -> Path:
    from morphospace.workflows.train import train

    config = _config(store, tmp_path_factory.mktemp("runs"))
    train(config, progress=False)
    return config.run_dir


def test_coupling_writes_every_structure_and_channel_with_the_truth(run_dir: Path, store: Path, tmp_path: Path):
    out = tmp_path / "coupling"
    payload = evaluate_coupling(run_dir, out, CouplingConfig(repeats=2, bootstrap=50, truth=str(store / "truth")))
    table = pd.read_csv(out / "coupling.csv")
    assert set(table["structure"]) == set(STRUCTURES) and set(table["channel"]) == {"Membrane", "DNA"}
    assert len(table) == 2 * len(STRUCTURES)
    assert np.isfinite(table[["coupling", "ci_low", "ci_high"]].to_numpy()).all()
    assert (table["ci_low"] <= table["coupling"] + 1e-12).all() and (table["coupling"] <= table["ci_high"] + 1e-12).all()
    assert payload["split"] == "test" and payload["n_cells"] == table.groupby("channel")["n_cells"].sum()["DNA"]
    assert (out / "figures" / "coupling.png").stat().st_size > 0
    saved = json.loads((out / "coupling.json").read_text())
    assert "1 - score(true) / mean score(swapped)" in saved["convention"] and saved["estimator"] == "elbo"
    assert saved["summary"] == "mean"
    assert set(saved["agreement"]["per_channel"]) == {"Membrane", "DNA", "pooled"}
    assert saved["agreement"]["per_channel"]["pooled"]["n"] == 2 * len(STRUCTURES)
    with pytest.raises(FileExistsError):
        evaluate_coupling(run_dir, out, CouplingConfig(repeats=1, bootstrap=10))


def test_the_reference_only_estimator_scores_the_expected_structure(run_dir: Path, store: Path, tmp_path: Path):
    from morphospace.models.run import load_run

    config = CouplingConfig(repeats=2, bootstrap=20, truth=str(store / "truth"), estimator="reference_only")
    payload = evaluate_coupling(run_dir, tmp_path / "reference_only", config)
    elbo = evaluate_coupling(run_dir, tmp_path / "elbo", config.model_copy(update={"estimator": "elbo"}))
    assert payload["estimator"] == "reference_only" and payload["n_cells"] == elbo["n_cells"]
    table, other = pd.DataFrame(payload["coupling"]), pd.DataFrame(elbo["coupling"])
    assert np.isfinite(table["coupling"]).all() and not np.allclose(table["coupling"], other["coupling"])
    run = load_run(run_dir, "evaluate", "coupling")
    target, reference, labels = prepared_cells(run, np.arange(4))
    error = ((run.module.expected_target(reference, labels) - target) ** 2).sum((1, 2, 3))
    scores = _target_scores(run, target, reference, labels, 0, "reference_only", [(False, 0)])
    np.testing.assert_allclose(scores, -error.numpy(), rtol=1e-5)


def test_trim_averages_the_middle_cells_of_each_structure(run_dir: Path, tmp_path: Path, capsys):
    from morphospace.evaluate.statistical_cell import coupling_per_cell
    from morphospace.models.run import load_run
    from morphospace.workflows.statistical_cell import coupling_scores

    config = CouplingConfig(repeats=2, bootstrap=20, trim=0.25)
    payload = evaluate_coupling(run_dir, tmp_path / "trimmed", config)
    scores = coupling_scores(load_run(run_dir, "evaluate", "coupling"), config, run_dir)
    per_cell = coupling_per_cell(scores.true, scores.swapped["DNA"])
    members = np.sort(per_cell[scores.structures == "Cortex"])
    cut = int(0.25 * len(members))
    row = next(r for r in payload["coupling"] if (r["structure"], r["channel"]) == ("Cortex", "DNA"))
    assert row["coupling"] == pytest.approx(members[cut:len(members) - cut].mean())
    assert payload["config"]["trim"] == 0.25 and payload["summary"] == "mean trimmed by 0.25 at each end"
    assert main(["--no-progress", "evaluate", "coupling", "--run", str(run_dir), "--trim", "0.7",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "trim" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_trained_views_average_the_expected_structure_over_the_runs_flips_and_turns(run_dir: Path, tmp_path: Path,
                                                                                     capsys):
    from morphospace.models.run import load_run

    run = load_run(run_dir, "evaluate", "coupling")
    target, reference, labels = prepared_cells(run, np.arange(4))
    expected = [run.module.expected_target(torch.rot90(reference.flip(-1) if mirror else reference, turns, (-2, -1)),
                                           labels) for mirror in (False, True) for turns in range(4)]
    back = [torch.rot90(e, -turns, (-2, -1)) for e, turns in zip(expected, [0, 1, 2, 3] * 2)]
    averaged = torch.stack(back[:4] + [b.flip(-1) for b in back[4:]]).mean(0)
    error = ((averaged - target) ** 2).sum((1, 2, 3))
    views = [(mirror, turns) for mirror in (False, True) for turns in range(4)]
    scores = _target_scores(run, target, reference, labels, 0, "reference_only", views)
    np.testing.assert_allclose(scores, -error.numpy(), rtol=1e-5)
    turned = run.module.elbo_per_cell(torch.rot90(target, 1, (-2, -1)), torch.rot90(reference, 1, (-2, -1)), labels,
                                      seed=0)["target"]
    elbo = [turned, run.module.elbo_per_cell(target, reference, labels, seed=0)["target"]]
    np.testing.assert_allclose(_target_scores(run, target, reference, labels, 0, "elbo", [(False, 1), (False, 0)]),
                               torch.stack(elbo).mean(0).numpy(), rtol=1e-5)
    config = CouplingConfig(repeats=1, bootstrap=10, estimator="reference_only", views="trained")
    payload = evaluate_coupling(run_dir, tmp_path / "views", config)
    assert payload["views"] == [list(v) for v in views] and "turned back first" in payload["convention"]
    assert main(["--no-progress", "evaluate", "coupling", "--run", str(run_dir), "--repeats", "1", "--bootstrap", "10",
                 "--views", "trained", "--out", str(tmp_path / "cli"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["views"] == "trained"


def test_the_reference_only_estimator_refuses_a_run_without_a_null_latent(store: Path, tmp_path: Path):
    from morphospace.workflows.train import train

    config = _config(store, tmp_path / "runs", "model.null_latent_share=0", "name=no_null")
    train(config, progress=False)
    with pytest.raises(InputError, match="no_null: the reference_only coupling needs a run trained with"):
        evaluate_coupling(config.run_dir, tmp_path / "out", CouplingConfig(estimator="reference_only"))
    assert not (tmp_path / "out").exists()


def test_the_reference_only_estimator_reads_the_expected_target_unet(store: Path, tmp_path: Path):
    from morphospace.workflows.train import train

    config = _config(store, tmp_path / "runs", "model.null_latent_share=0", "model.expected_target=unet",
                     "model.expected_target_channels=[4, 8]", "name=unet")
    train(config, progress=False)
    payload = evaluate_coupling(config.run_dir, tmp_path / "out", CouplingConfig(
        repeats=2, bootstrap=10, estimator="reference_only", truth=str(store / "truth")))
    assert payload["estimator"] == "reference_only"
    assert {(r["structure"], r["channel"]) for r in payload["coupling"]} == {
        (s, c) for s in STRUCTURES for c in ("Membrane", "DNA")}
    assert all(np.isfinite(r["coupling"]) for r in payload["coupling"])


def test_cli_writes_into_the_run_evaluation_folder_and_the_report_shows_it(run_dir: Path, capsys):
    from morphospace.explore.run_report import write_run_report

    assert main(["--no-progress", "evaluate", "coupling", "--run", str(run_dir), "--repeats", "1",
                 "--bootstrap", "10", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"]["repeats"] == 1 and "agreement" not in printed
    assert main(["--no-progress", "evaluate", "drug-shift", "--run", str(run_dir), "--control",
                 "Metadata_Compound == 'DMSO'", "--treated", "Metadata_Compound != 'DMSO'", "--permutations", "9",
                 "--correction", "holm"]) == 0
    assert "target space:" in capsys.readouterr().out
    assert json.loads((run_dir / "evaluation" / "drug_shift.json").read_text())["config"]["correction"] == "holm"
    for _, part in pd.read_csv(run_dir / "evaluation" / "drug_shift.csv").groupby("latent"):
        np.testing.assert_allclose(part["q_value"], holm(part["p_value"]))
    html = write_run_report(run_dir).read_text()
    assert "Coupling (" in html and "Coupling of each structure" in html and "Drug shifts (" in html and "NucleolarEnlarger" in html
    assert "significant: Holm&#x27;s adjusted p (q_value) &lt;= 0.05" in html  # as html.escape writes it


def test_drug_shift_tests_every_drug_structure_and_space(run_dir: Path, store: Path, tmp_path: Path):
    out = tmp_path / "shift"
    payload = evaluate_drug_shift(run_dir, "Metadata_Compound == 'DMSO'", "Metadata_Compound != 'DMSO'", out,
                                  DrugShiftConfig(permutations=50, truth=str(store / "truth")))
    table = pd.read_csv(out / "drug_shift.csv")
    assert len(table) == len(STRUCTURES) * 2
    assert set(zip(table["drug"], table["structure"], table["latent"])) == {
        ("NucleolarEnlarger", s, latent) for s in STRUCTURES for latent in ("reference", "target")}
    assert ((table["p_value"] > 0) & (table["p_value"] <= 1)).all() and (table["q_value"] >= table["p_value"]).all()
    assert (table["n_control"] == 12).all() and (table["n_treated"] == 12).all()
    scores = payload["truth_scores"]
    assert scores["target"]["n_shifted"] == 1  # the enlarger moves the nucleoli only
    assert 0 <= scores["target"]["recall"] <= 1 and scores["target"]["false_positives"] >= 0
    assert scores["reference"]["false_positives"] == int(table.loc[table["latent"] == "reference", "significant"].sum())
    assert json.loads((out / "drug_shift.json").read_text())["n_control"] == 36


def test_the_same_tests_called_again_are_scored_as_evaluate_scores_its_own(run_dir: Path, store: Path, tmp_path: Path):
    truth = str(store / "truth")
    holm_run = evaluate_drug_shift(run_dir, "Metadata_Compound == 'DMSO'", "Metadata_Compound != 'DMSO'",
                                   tmp_path / "holm", DrugShiftConfig(permutations=20, truth=truth, correction="holm"))
    bh_run = evaluate_drug_shift(run_dir, "Metadata_Compound == 'DMSO'", "Metadata_Compound != 'DMSO'",
                                 tmp_path / "bh", DrugShiftConfig(permutations=20, truth=truth))
    called_again = call_shifts(pd.DataFrame(holm_run["tests"]), "bh")
    assert shift_truth_scores(called_again, truth) == bh_run["truth_scores"]
    assert shift_truth_scores(pd.DataFrame(holm_run["tests"]), truth) == holm_run["truth_scores"]
    with pytest.raises(InputError, match="drugs.parquet"):
        shift_truth_scores(called_again, str(tmp_path))


def test_drug_shift_given_the_reference_adds_a_space_scored_against_the_truth(run_dir: Path, store: Path,
                                                                              tmp_path: Path):
    payload = evaluate_drug_shift(run_dir, "Metadata_Compound == 'DMSO'", "Metadata_Compound != 'DMSO'", tmp_path,
                                  DrugShiftConfig(permutations=20, truth=str(store / "truth"), given_reference=True))
    table = pd.read_csv(tmp_path / "drug_shift.csv")
    assert table["latent"].value_counts().to_dict() == {name: len(STRUCTURES) for name in
                                                        ("reference", "target", "target_given_reference")}
    given = payload["truth_scores"]["target_given_reference"]
    assert given["n_shifted"] == 1
    assert given["false_positives"] == int(table.loc[table["latent"] == "target_given_reference", "significant"].sum()
                                           ) - len(given["found"])


@pytest.mark.parametrize("control, treated, message", [
    ("Metadata_Compound ==", "Metadata_Compound != 'DMSO'", "--control .* not a valid query"),
    ("Metadata_Compound == 'DMSO'", "Metadata_Compound == 'Nothing'", "--treated .* no cell .* matches"),
    ("Metadata_Compound == 'DMSO'", "Metadata_Structure == 'Cortex'", "match both"),
])
def test_drug_shift_bad_queries_name_the_problem_and_write_nothing(run_dir: Path, tmp_path: Path, control, treated,
                                                                   message):
    with pytest.raises(InputError, match=message):
        evaluate_drug_shift(run_dir, control, treated, tmp_path / "out", DrugShiftConfig(permutations=5))
    assert not (tmp_path / "out").exists()


def test_analyses_refuse_a_run_of_another_family(blob_store: Path, tmp_path: Path, capsys):
    from morphospace.models.registry import resolve_run_config
    from morphospace.workflows.train import train

    config = resolve_run_config({
        "name": "vae", "runs_dir": str(tmp_path / "runs"),
        "data": {"store": str(blob_store), "batch_size": 16, "normalization": {"out_range": [-1, 1]}},
        "model": {"family": "vae", "latent_dim": 4, "base_channels": 4}, "trainer": {"max_epochs": 1}})
    train(config, progress=False)
    with pytest.raises(InputError, match="vae family do not support 'evaluate coupling'"):
        evaluate_coupling(config.run_dir, tmp_path / "out")
    assert main(["evaluate", "drug-shift", "--run", str(config.run_dir), "--control", "Metadata_Plate == 'P0'",
                 "--treated", "Metadata_Plate != 'P0'", "--out", str(tmp_path / "out")]) == 2
    assert "do not support 'evaluate drug-shift'" in capsys.readouterr().err
    with pytest.raises(InputError, match="model.family: statistical_cell"):
        run_beta_sweep(config, [0.1], tmp_path / "sweep")
    assert not (tmp_path / "out").exists() and not (tmp_path / "sweep").exists()


def test_coupling_refuses_a_one_channel_reference(store: Path, tmp_path: Path):
    from morphospace.workflows.train import train

    config = _config(store, tmp_path / "runs", "data.conditions.reference.channels=[DNA]",
                     "model.reference_channels=[DNA]", "name=dna_only")
    train(config, progress=False)
    with pytest.raises(InputError, match="reference holds one channel"):
        evaluate_coupling(config.run_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_beta_sweep_trains_once_per_beta_and_reuses_finished_runs(store: Path, tmp_path: Path):
    config = _config(store, tmp_path / "runs", "name=sweep")
    table = run_beta_sweep(config, [0.2, 0.8], tmp_path / "out", max_cells=16)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["sweep_beta0.2", "sweep_beta0.8"]
    assert len(table) == 4 and set(table["model"]) == {"reference", "target"}
    assert np.isfinite(table[["recon", "kl", "elbo"]].to_numpy()).all() and (table["kl"] >= 0).all()
    np.testing.assert_allclose(table["elbo"], -(table["recon"] + table["kl"]))
    assert ((table["active_dims"] >= 0) & (table["active_dims"] <= 4)).all()
    checkpoints = [tmp_path / "runs" / name / "checkpoints" / "last.ckpt" for name in ("sweep_beta0.2", "sweep_beta0.8")]
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    again = run_beta_sweep(config, [0.2, 0.8], tmp_path / "out", max_cells=16)
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps
    pd.testing.assert_frame_equal(table, again)
    for name in ("beta_sweep.csv", "beta_sweep.json", "beta_sweep.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
