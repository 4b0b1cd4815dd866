"""CP2Image: networks, losses, fitted inputs, and the generate / explore commands on a tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.nn.utils import parametrize

from morphospace.cli import main
from morphospace.errors import InputError
from morphospace.io.store import CropStore
from morphospace.models.cp2image import CP2Image, CP2ImageConfig, angle_columns, feature_matching_weights, fit_inputs


def _model(image_shape=(2, 16, 16), n_features=5, angles=None, **config) -> CP2Image:
    torch.manual_seed(0)
    settings = {"base_channels": 8, "feature_dim": 16, **config}
    return CP2Image(CP2ImageConfig(**settings).to_dict(), image_shape, n_features, angles=angles)


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (2, 16, 16), (3, 20, 20), (4, 68, 68)])
def test_generated_images_have_the_crop_shape_and_tanh_range(image_shape):
    model = _model(image_shape, n_features=7)
    images = model.generate_from_features(torch.randn(3, 7))
    assert images.shape == (3, *image_shape)
    assert float(images.min()) >= -1 and float(images.max()) <= 1
    layers, logit = model._layers_and_logit(images)
    assert logit.shape == (3,) and len(layers) == len(model.discriminator.blocks) + 1


def test_features_of_the_wrong_width_are_refused():
    with pytest.raises(InputError, match=r"features must be \(N, 5\)"):
        _model().generate_from_features(torch.zeros(2, 4))


def test_feature_matching_weights_ramp_in_layer_by_layer():
    assert feature_matching_weights(0, 3, delay=100, ramp=200) == [0.0, 0.0, 0.0]
    assert feature_matching_weights(250, 3, delay=100, ramp=200) == [0.75, 0.25, 0.0]
    assert feature_matching_weights(400, 3, delay=100, ramp=200) == [1.0, 1.0, 0.5]
    assert feature_matching_weights(10_000, 3, delay=100, ramp=200) == [1.0, 1.0, 1.0]


def test_no_noise_is_deterministic_and_noise_follows_the_seed():
    features = torch.randn(4, 5)
    deterministic = _model()
    assert torch.equal(deterministic.generate_from_features(features, seed=0),
                       deterministic.generate_from_features(features, seed=1))
    noisy = _model(noise_dim=6)
    assert noisy.latent_dim == 11
    first = noisy.generate_from_features(features, seed=0)
    assert torch.equal(first, noisy.generate_from_features(features, seed=0))
    assert not torch.allclose(first, noisy.generate_from_features(features, seed=1))


def test_input_dropout_zeroes_a_share_of_the_training_inputs_only():
    features = torch.ones(2000, 5)
    torch.manual_seed(0)
    inputs = _model(input_dropout=0.4, noise_dim=3).training_inputs(features)
    kept = inputs[:, :5]
    assert inputs.shape == (2000, 8)
    assert kept.unique().tolist() == [0.0, pytest.approx(1 / 0.6)]  # the rest scaled by 1 / (1 - p)
    assert float((kept == 0).float().mean()) == pytest.approx(0.4, abs=0.02)
    assert float((inputs[:, 5:] == 0).float().mean()) == 0.0  # the noise is never dropped
    plain = _model()
    assert torch.equal(plain.training_inputs(features), plain.project(features))
    dropping = _model(input_dropout=0.4)
    assert torch.equal(dropping.generate_from_features(features[:4]), plain.generate_from_features(features[:4]))
    with pytest.raises(ValueError, match="input_dropout"):
        CP2ImageConfig(input_dropout=1.0)


def test_spectral_norm_switch_parametrizes_every_discriminator_weight():
    plain, normed = _model(), _model(spectral_norm=True)
    layers = [m for m in normed.discriminator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in normed.discriminator.modules())
    assert not any(parametrize.is_parametrized(m) for m in plain.discriminator.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.discriminator.modules())


def test_generator_loss_falls_on_a_tiny_batch():
    model = _model(feature_matching_delay_steps=0, feature_matching_ramp_steps=1).train()
    features = torch.randn(8, 5)
    real = torch.tanh(torch.randn(8, 2, 16, 16))
    optimizer = torch.optim.Adam(model.generator.parameters(), lr=3e-3)
    losses, pixel = [], []
    for _ in range(60):
        loss, logs = model.generator_loss(real, model.generator(model.project(features)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.generator_updates += 1
        losses.append(float(loss.detach()))
        pixel.append(float(logs["pixel_loss"]))
    assert float(logs["feature_matching"]) > 0  # every layer's weight is 1 from the second step on
    assert losses[-1] < 0.6 * losses[1] and pixel[-1] < 0.6 * pixel[0]


def test_pixel_term_is_half_the_per_image_sum_of_squared_errors():
    model = _model(feature_matching_delay_steps=10**6)
    real = torch.zeros(2, 2, 16, 16)
    fake = torch.full((2, 2, 16, 16), 0.5)
    loss, logs = model.generator_loss(real, fake)
    assert float(logs["pixel_loss"]) == pytest.approx(0.5 * 2 * 16 * 16 * 0.25)
    assert float(logs["feature_matching"]) == 0 and float(loss) == pytest.approx(float(logs["pixel_loss"]))


def test_pca_inputs_and_prior_keep_the_training_covariance():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(3, 6))
    features = rng.normal(size=(400, 3)) @ mixing + rng.normal(0, 0.01, (400, 6))
    fitted = fit_inputs(features, pca_components=3)
    components = fitted["pca_components"].double()
    assert torch.allclose(components @ components.T, torch.eye(3, dtype=torch.float64), atol=1e-5)
    scores = (torch.as_tensor(features) - fitted["pca_mean"].double()) @ components.T
    scale = fitted["prior_scale"].double()
    assert torch.allclose(scale @ scale.T, torch.cov(scores.T), rtol=1e-3, atol=1e-3)
    model = _model(n_features=6, pca_components=3)
    model.set_inputs(fitted)
    assert model.project(torch.as_tensor(features[:4], dtype=torch.float32)).shape == (4, 3)
    assert model.prior(5).shape == (5, 3)


def test_angles_enter_as_cosine_and_sine_so_both_sides_of_the_wrap_are_neighbours():
    columns = ["Nuclei_AreaShape_Area", "Nuclei_AreaShape_Orientation", "Cells_RadialDistribution_ZernikePhase_1_1_DNA"]
    assert angle_columns(columns) == ([1, 2], [180.0, 2 * np.pi])
    model = _model(n_features=3, angles=angle_columns(columns))
    model.set_angle_units(centre=np.array([500.0, 10.0, 0.0]), scale=np.array([100.0, 50.0, 1.0]))
    assert model.n_angles == 2 and model.latent_dim == 5
    # standardised (area 600, orientation 89 or -89 degrees or 55, phase pi / 2, -pi or pi)
    standardised = torch.tensor([[1.0, 1.58, np.pi / 2], [1.0, -1.98, -np.pi], [-2.0, 0.9, np.pi]])
    inputs = model.project(standardised)
    expected = torch.tensor([
        [1.0, np.cos(np.radians(178.0)), 0.0, np.sin(np.radians(178.0)), 1.0],
        [1.0, np.cos(np.radians(-178.0)), -1.0, np.sin(np.radians(-178.0)), 0.0],
        [-2.0, np.cos(np.radians(110.0)), -1.0, np.sin(np.radians(110.0)), 0.0]], dtype=torch.float32)
    assert torch.allclose(inputs, expected, atol=1e-5)
    assert float((inputs[0, 1:4:2] - inputs[1, 1:4:2]).norm()) < 0.08  # 89 and -89 degrees: neighbours
    plain = _model(n_features=3, angles=angle_columns(columns), encode_angles=False)
    assert plain.n_angles == 0 and torch.equal(plain.project(standardised), standardised)


def test_a_model_with_angles_reloads_from_its_hyperparameters_and_an_older_one_without_them():
    columns = ["Nuclei_AreaShape_Area", "Nuclei_AreaShape_Orientation"]
    model = _model(n_features=2, angles=angle_columns(columns), pca_components=2)
    model.set_angle_units(np.array([0.0, 5.0]), np.array([1.0, 40.0]))
    reloaded = CP2Image(**model.hparams)
    reloaded.load_state_dict(model.state_dict())
    features = torch.randn(4, 2)
    assert torch.equal(reloaded.project(features), model.project(features))
    with pytest.raises(ValueError, match="exceeds the 3 inputs"):
        _model(n_features=2, angles=angle_columns(columns), pca_components=4)
    older = _model(n_features=2)  # runs saved before angles were encoded: no angle buffers, same inputs
    assert older.n_angles == 0 and not any(name.startswith("angle") for name in older.state_dict())
    assert CP2Image(**{k: v for k, v in older.hparams.items() if k != "angles"}).latent_dim == 2


# --------------------------------------------------------------------------- commands on a tiny run


def _feature_table(store_path: Path) -> pd.DataFrame:
    """Hand-made features of the blob store: disc area and mean intensities, with a dose column."""
    store = CropStore(store_path)
    images = store.read(np.arange(len(store)))
    return pd.DataFrame({
        "Metadata_StoreIndex": np.arange(len(store)),
        "Metadata_Dose": np.where(np.arange(len(store)) % 2, 10.0, 1.0),
        "Nuclei_AreaShape_Area": (images[:, 0] > 0.3).sum(axis=(1, 2)).astype(float),
        "Nuclei_Intensity_MeanIntensity_DNA": images[:, 0].mean(axis=(1, 2)),
        "Cells_Intensity_MeanIntensity_Actin": images[:, 1].mean(axis=(1, 2)),
        "Nuclei_AreaShape_Orientation": np.random.default_rng(0).uniform(-90, 90, len(store)),
    })


def _run_yaml(tmp_path: Path, store: Path, table: Path, **model) -> Path:
    config = {
        "name": "cp2image_test", "runs_dir": str(tmp_path / "runs"), "seed": 0,
        "data": {"store": str(store), "batch_size": 16, "normalization": {"out_range": [-1, 1]},
                 "split": {"by": None, "train": 0.8, "val": 0.0, "test": 0.2},
                 "augment": {"flips": False, "rot90": False},
                 "conditions": {"features": {"kind": "features", "table": str(table)}}},
        "model": {"family": "cp2image", "base_channels": 8, "feature_dim": 16, "feature_matching_delay_steps": 2,
                  "feature_matching_ramp_steps": 4, **model},
        "trainer": {"max_epochs": 2, "precision": "32-true", "log_every_n_steps": 1, "sample_images": 4},
    }
    path = tmp_path / "cp2image.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_family_refuses_a_condition_of_another_kind_and_augmentation(blob_store: Path, tmp_path: Path, capsys):
    table = tmp_path / "cells.parquet"
    _feature_table(blob_store).to_parquet(table)
    config = _run_yaml(tmp_path, blob_store, table, condition="compound")
    data = yaml.safe_load(config.read_text())
    data["data"]["conditions"]["compound"] = {"kind": "categorical", "column": "Metadata_Compound"}
    config.write_text(yaml.safe_dump(data))
    assert main(["train", str(config)]) == 2
    assert "key 'model.condition': data.conditions.compound is of kind 'categorical'" in capsys.readouterr().err
    assert main(["train", str(_run_yaml(tmp_path, blob_store, table)), "--set", "data.augment.flips=true"]) == 2
    assert "key 'data.augment'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_train_generate_sweep_trajectory_and_report(blob_store: Path, tmp_path: Path, capsys):
    from morphospace.workflows import cp2image

    frame = _feature_table(blob_store)
    table = tmp_path / "cells.parquet"
    frame.to_parquet(table)
    assert main(["--no-progress", "train", str(_run_yaml(tmp_path, blob_store, table, noise_dim=2))]) == 0
    run = tmp_path / "runs" / "cp2image_test"
    capsys.readouterr()

    names = cp2image.feature_names(run)
    assert names == ["Nuclei_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA",
                     "Cells_Intensity_MeanIntensity_Actin", "Nuclei_AreaShape_Orientation"]
    loaded = cp2image._load(run, "generate")  # the orientation enters as its cosine and sine, in degrees
    assert loaded.module.n_angles == 1 and loaded.module.latent_dim == 4 + 1 + 2
    assert float(loaded.module.angle_centre) == pytest.approx(loaded.encoder.mean[3], rel=1e-5)
    assert float(loaded.module.angle_scale) == pytest.approx(loaded.encoder.std[3], rel=1e-5)
    assert 20 < loaded.encoder.std[3] < 80
    standardised = cp2image.encode_table(run, frame)
    assert standardised.shape == (96, 4)
    assert np.allclose(cp2image.decode_to_table(run, standardised)[names].to_numpy(), frame[names].to_numpy(),
                       rtol=1e-4, atol=1e-4)
    images = cp2image.generate_from_table(run, frame.head(5), seed=3, batch_size=2)
    assert images.shape == (5, 2, 16, 16) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    assert np.allclose(images, cp2image.generate_from_table(run, frame.head(5), seed=3), atol=1e-5)  # same noise
    assert not np.allclose(images, cp2image.generate_from_table(run, frame.head(5), seed=4), atol=1e-5)
    with pytest.raises(InputError, match="lacks 1 feature column.*Nuclei_AreaShape_Area"):
        cp2image.generate_from_table(run, frame.drop(columns="Nuclei_AreaShape_Area"))

    npz = tmp_path / "centroids.npz"
    assert main(["generate", "--run", str(run), "--features", str(table), "--per", "Metadata_Dose",
                 "--n-per-row", "3", "--npz", str(npz)]) == 0
    assert "generated 6 images" in capsys.readouterr().out
    saved = np.load(npz)
    assert saved["images"].shape == (6, 2, 16, 16) and saved["Metadata_Dose"].tolist() == [1.0] * 3 + [10.0] * 3
    assert (run / "figures" / "from_features_cells.png").is_file()

    assert main(["explore", "sweep", "--run", str(run), "--feature", "Nuclei_AreaShape_Area", "--range=-1,1",
                 "--steps", "5", "--cell", "0,1"]) == 0
    sweep = np.load(run / "figures" / "sweep_Nuclei_AreaShape_Area.npz")
    assert sweep["images"].shape == (2, 5, 2, 16, 16) and sweep["cells"].tolist() == [0, 1]
    assert np.allclose(sweep["values"], [-1, -0.5, 0, 0.5, 1])
    area = frame["Nuclei_AreaShape_Area"].iloc[:77]  # the raw values map through the training mean and SD
    assert sweep["values_raw"][2] == pytest.approx(cp2image.decode_to_table(run, np.zeros((1, 4)))[names[0]][0])
    assert area.min() <= sweep["values_raw"][2] <= area.max()
    assert main(["explore", "sweep", "--run", str(run), "--feature", "Nuclei_AreaShape_Area", "--n-cells", "3"]) == 0
    held = np.load(run / "figures" / "sweep_Nuclei_AreaShape_Area.npz")
    distance = np.linalg.norm(standardised, axis=1)  # every feature of the blobs is measured
    assert sorted(distance[held["cells"]]) == pytest.approx(np.sort(distance)[:3])
    assert main(["explore", "sweep", "--run", str(run), "--feature", "Nuclei_AreaShape_Area", "--n-cells", "3",
                 "--follow"]) == 0
    follow = np.load(run / "figures" / "sweep_Nuclei_AreaShape_Area_follow.npz")
    assert str(follow["others"]) == "follow" and follow["cells"].tolist() == held["cells"].tolist()
    assert not np.allclose(follow["images"], held["images"])  # the correlated intensities moved with the area
    assert main(["explore", "sweep", "--run", str(run), "--feature", "Nuclei_Area"]) == 2
    assert "close names: ['Nuclei_AreaShape_Area'" in capsys.readouterr().err

    walk = ["explore", "trajectory", "--run", str(run), "--from", "Metadata_Compound == 'small'",
            "--to", "Metadata_Compound == 'big'", "--by", "Metadata_Dose", "--steps", "4"]
    path = run / "figures" / "trajectory_Metadata_Compound_small_to_Metadata_Compound_big_by_Metadata_Dose.npz"
    centroids_path = path.with_name(f"{path.stem}_centroids.npz")
    assert main([*walk, "--from-centroid"]) == 0
    trajectory = np.load(centroids_path)
    assert trajectory["images"].shape == (2, 4, 2, 16, 16) and int(trajectory["start_cell"]) == -1
    assert trajectory["labels"].tolist() == ["Metadata_Compound == 'small'", "Metadata_Dose=1.0", "Metadata_Dose=10.0"]
    compounds = CropStore(blob_store).cells["Metadata_Compound"].to_numpy()
    big = frame[compounds == "big"]
    expected = cp2image.encode_table(run, big[big["Metadata_Dose"] == 10.0]).mean(0)
    assert np.allclose(trajectory["waypoints"][2], expected, atol=1e-5)
    assert np.allclose(trajectory["path"][1, -1], expected, atol=1e-5)
    assert main(walk) == 0  # default: the small cell nearest its centroid, moved by the centroids' differences
    moved = np.load(path)
    small = np.flatnonzero(compounds == "small")
    start = moved["waypoints"][0]
    nearest = small[np.argmin(np.linalg.norm(standardised[small] - start, axis=1))]
    assert int(moved["start_cell"]) == nearest
    assert np.allclose(moved["path"][0, 0], standardised[nearest], atol=1e-5)
    assert np.allclose(moved["path"][1, -1] - moved["path"][0, 0], expected - start, atol=1e-5)
    assert int(np.load(centroids_path)["start_cell"]) == -1  # the two walks keep their own files
    assert main(["explore", "trajectory", "--run", str(run), "--from", "Metadata_Compound == 'none'",
                 "--to", "Metadata_Compound == 'big'"]) == 2
    assert "no cell matches" in capsys.readouterr().err

    assert main(["report", "--run", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "One feature swept in standardised units" in html and "walk between group centroids" in html


def test_sweep_slopes_by_hand():
    from morphospace.workflows.cp2image import _slopes_on

    swept = np.array([0.0, 1.0, 2.0, 3.0])
    table = np.stack([swept, 2 * swept + 1, np.full(4, 5.0), -swept], axis=1)
    assert _slopes_on(table, 0).tolist() == pytest.approx([1.0, 2.0, 0.0, -1.0])
    assert _slopes_on(table, 2).tolist() == [0.0, 0.0, 1.0, 0.0]  # a constant column moves nothing else


def test_cells_nearest_the_centre_ignore_rarely_measured_features():
    from morphospace.data.conditions import FeatureEncoder
    from morphospace.workflows.cp2image import _nearest_to_centre

    encoder = FeatureEncoder("features", "cells.parquet", ["area", "rare"], [0.0, 0.0], [1.0, 1.0])
    table = pd.DataFrame({"area": [3.0, -0.5, np.nan, 1.0], "rare": [np.nan, np.nan, np.nan, 9.0]})
    # 'rare' is finite in a quarter of the cells: it excludes none; a missing 'area' does
    assert _nearest_to_centre(table, encoder, 2).tolist() == [1, 0]
    assert _nearest_to_centre(table, encoder, 1, centre=np.array([1.0, 9.0], np.float32)).tolist() == [3]
    with pytest.raises(InputError, match="at least 1"):
        _nearest_to_centre(table, encoder, 0)
