import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.errors import InputError
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.models.registry import resolve_run_config
from morphospace.workflows.cp2image_evaluation import measurement_settings
from morphospace.workflows.evaluation import GenerationConfig, run_generation_evaluation


def test_measurement_settings_come_from_the_feature_report(tmp_path: Path):
    table = tmp_path / "cells.parquet"
    fallback = {"feature_set": "fast", "objects": ["Nuclei"], "nucleus_channel": "auto",
                "cytoplasm_channels": [], "channels": None}
    settings, source = measurement_settings(table, fallback)
    assert settings["intensity_scale"] is None and "no OUT.json" in source
    (tmp_path / "cells.parquet.json").write_text(json.dumps({
        "config": {"feature_set": "full", "objects": ["Nuclei", "Cells"], "cytoplasm_channels": ["Actin"]},
        "nucleus_channel": "DNA", "channels": ["DNA", "Actin"], "intensity_scale": [2.0, 4.0]}))
    settings, source = measurement_settings(table, fallback)
    assert settings == {"feature_set": "full", "objects": ["Nuclei", "Cells"], "nucleus_channel": "DNA",
                        "cytoplasm_channels": ["Actin"], "channels": ["DNA", "Actin"], "intensity_scale": [2.0, 4.0]}
    assert source.endswith("cells.parquet.json")
    (tmp_path / "cells.parquet.json").write_text("[]")
    with pytest.raises(InputError, match="not a features report"):
        measurement_settings(table, fallback)


@pytest.mark.slow
def test_cp2image_generation_evaluation(blob_store: Path, tmp_path: Path):
    from morphospace.workflows.cp2image import explore_sweep
    from morphospace.workflows.profiling import extract_features
    from morphospace.workflows.train import train

    features = tmp_path / "cells.parquet"
    extract_features(blob_store, features, FeaturesConfig(cytoplasm_channels=["Actin"]), progress=False)
    config = resolve_run_config({
        "name": "cp2image", "runs_dir": str(tmp_path / "runs"), "seed": 0,
        "data": {"store": str(blob_store), "batch_size": 16, "normalization": {"out_range": [-1, 1]},
                 "split": {"by": None, "train": 0.75, "val": 0.0, "test": 0.25},
                 "augment": {"flips": False, "rot90": False},
                 "conditions": {"features": {"kind": "features", "table": str(features)}}},
        "model": {"family": "cp2image", "condition": "features", "base_channels": 8,
                  "feature_matching_delay_steps": 2, "feature_matching_ramp_steps": 4},
        "trainer": {"max_epochs": 2, "precision": "32-true", "channels_last": False, "sample_images": 4},
    })
    train(config, progress=False)
    run = config.run_dir
    explore_sweep(run, "Nuclei_AreaShape_Area", steps=5)
    evaluation = GenerationConfig(n=24, extractor=str(tmp_path / "extractor.pt"), extractor_epochs=1,
                                  feature_cells=24, cytoplasm_channels=["Actin"])
    payload = run_generation_evaluation(run, tmp_path / "eval", evaluation)

    correlation = payload["feature_correlation"]
    assert correlation["split"] == "test" and correlation["n_cells"] == 24
    assert 0 <= correlation["share_r_above_0_5"] <= 1 and len(correlation["best"]) == 20
    assert payload["measurement_settings"]["source"].endswith("cells.parquet.json")
    assert payload["intensity_mapped_to_feature_scale"] is True
    # real crops measured through the same path keep their features: the ceiling is high
    assert payload["measurement_ceiling"]["median_r"] > 0.5
    assert payload["in_domain"]["n_fake"] == 24 and payload["in_domain"]["fid"] >= 0
    assert set(payload["sweeps"]["per_feature"]) == {"Nuclei_AreaShape_Area"}
    assert payload["nsc"].startswith("not computed")  # the blob store has no MoA column
    assert payload["generated_cells_per_s"] > 0
    written = json.loads((tmp_path / "eval" / "generation.json").read_text())
    assert written["feature_correlation"]["median_r"] == pytest.approx(correlation["median_r"])
    per_feature = pd.read_csv(tmp_path / "eval" / "cp2image_feature_correlations.csv")
    assert {"feature", "pearson_r", "spearman_r", "n"} <= set(per_feature.columns)
    assert np.isfinite(per_feature["pearson_r"]).any()
    for figure in ("feature_correlation_histogram", "feature_correlation_scatter", "real_vs_generated",
                   "sweep_Nuclei_AreaShape_Area"):
        assert (tmp_path / "eval" / "figures" / f"{figure}.png").is_file()


@pytest.mark.slow
def test_cp2image_evaluation_against_the_simulator_truth(screen: Path, prepared: Path, tmp_path: Path):
    from morphospace.workflows.profiling import extract_features
    from morphospace.workflows.train import train

    features = tmp_path / "cells.parquet"
    extract_features(prepared, features, FeaturesConfig(), progress=False)
    config = resolve_run_config({
        "name": "cp2image_truth", "runs_dir": str(tmp_path / "runs"), "seed": 0,
        "data": {"store": str(prepared), "crop_size": 48, "batch_size": 16, "normalization": {"out_range": [-1, 1]},
                 "split": {"by": None, "train": 0.8, "val": 0.0, "test": 0.2},
                 "augment": {"flips": False, "rot90": False},
                 "conditions": {"features": {"kind": "features", "table": str(features)}}},
        "model": {"family": "cp2image", "condition": "features", "base_channels": 8},
        "trainer": {"max_epochs": 1, "precision": "32-true", "channels_last": False, "sample_images": 4},
    })
    train(config, progress=False)
    evaluation = GenerationConfig(n=16, extractor=str(tmp_path / "extractor.pt"), extractor_epochs=1,
                                  feature_cells=20, truth=str(screen / "truth"))
    block = run_generation_evaluation(config.run_dir, tmp_path / "eval", evaluation)["simulator_truth"]

    assert block["n_cells"] == 20 and block["n_matched"] >= 16
    assert set(block["pairs"]) == {"Nuclei_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA",
                                   "Nuclei_Intensity_IntegratedIntensity_DNA", "Cells_AreaShape_Area"}
    assert block["skipped"] == {}
    area = block["pairs"]["Nuclei_AreaShape_Area"]
    assert block["n_one_nucleus"] <= block["n_matched"]
    assert area["truth"] == "Metadata_TruthNucleusArea" and area["real"]["n"] == block["n_one_nucleus"]
    # the segmented area of the real nucleus follows the simulator's area closely
    assert area["real"]["pearson_r"] > 0.9
    assert -1 <= area["generated"]["pearson_r"] <= 1 and area["generated"]["n"] > 0
    written = json.loads((tmp_path / "eval" / "generation.json").read_text())
    assert written["simulator_truth"]["n_matched"] == block["n_matched"]
    with pytest.raises(InputError, match="no such truth folder"):
        run_generation_evaluation(config.run_dir, tmp_path / "eval2",
                                  evaluation.model_copy(update={"truth": str(tmp_path / "nowhere")}))
    assert not (tmp_path / "eval2" / "generation.json").exists()
