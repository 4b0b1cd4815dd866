import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter

from morphospace.errors import InputError
from morphospace.evaluate import generation
from morphospace.evaluate.generation import (
    compare_feature_tables,
    feature_distances,
    fid_kid,
    inception_fid_kid,
    nearest_real_neighbours,
    summarize_feature_distances,
)
from morphospace.models.extractor import (
    FeatureExtractor,
    contrastive_loss,
    load_feature_extractor,
    save_feature_extractor,
    train_feature_extractor,
)

CHANNELS = ["DNA", "Actin", "Tubulin"]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny tensors: on a few cores, handing each small matmul to a thread pool costs more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cells(n, seed, brightness=None, size=32):
    """(n, 3, size, size) float32 in [0, 1]: a nucleus blob (DNA) inside a wider cell blob (Actin,
    Tubulin) at a random position near the centre, plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    brightness = rng.uniform(0.4, 0.9, n) if brightness is None else brightness
    images = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(0.4 * size, 0.6 * size, 2)
        radius = rng.uniform(3, 5)
        distance2 = (yy - cy) ** 2 + (xx - cx) ** 2
        for c, scale in enumerate([1.0, 2.2, 2.6]):
            images[i, c] = brightness[i] * np.exp(-distance2 / (2 * (radius * scale) ** 2))
    images += rng.normal(0, 0.02, images.shape)
    return np.clip(images, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    """An extractor trained to tell dim from bright cells (2 classes, 128 crops)."""
    labels = np.repeat(["dim", "bright"], 64)
    images = _cells(128, seed=0, brightness=np.where(labels == "bright", 0.9, 0.4))
    return train_feature_extractor(images, labels, epochs=5, batch_size=32, num_features=32, progress=False)


@pytest.fixture(scope="module")
def real():
    return _cells(100, seed=1)


# ----------------------------------------------------------------------------- extractor


def test_extractor_embeds_float_batches_of_any_size():
    extractor = FeatureExtractor(in_channels=2, num_features=16).eval()
    assert extractor.num_features == 16
    for size in (32, 48):
        assert extractor(torch.rand(5, 2, size, size, dtype=torch.float64)).shape == (5, 16)


def test_training_lowers_the_loss_deterministically(trained):
    history = trained.loss_history
    assert len(history) == 5 and history[-1] < 0.5 * history[0]
    assert not trained.training
    labels = np.repeat(["dim", "bright"], 64)
    images = _cells(128, seed=0, brightness=np.where(labels == "bright", 0.9, 0.4))
    state = torch.get_rng_state()
    again = train_feature_extractor(images, labels, epochs=5, batch_size=32, num_features=32, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert again.loss_history == history
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), trained.state_dict().values()))


def test_training_needs_two_classes_and_one_label_per_image():
    with pytest.raises(InputError, match="at least 2 classes"):
        train_feature_extractor(_cells(8, seed=0), [0] * 8, epochs=1, progress=False)
    with pytest.raises(InputError, match="one label per image"):
        train_feature_extractor(_cells(8, seed=0), [0, 1] * 3, epochs=1, progress=False)


def test_contrastive_loss_is_lowest_when_each_view_matches_its_partner():
    views = torch.eye(4)
    # matched partners: similarity 1/0.2 = 5 against 0 for the 6 others -> -log(e^5 / (e^5 + 6 e^0))
    assert contrastive_loss(views, views).item() == pytest.approx(np.log1p(6 * np.exp(-5.0)), rel=1e-5)
    assert contrastive_loss(views, views.roll(1, 0)) > contrastive_loss(views, views)


def test_self_supervised_training_without_labels_lowers_the_loss_and_keeps_the_embedding():
    images = _cells(64, seed=5)
    state = torch.get_rng_state()
    extractor = train_feature_extractor(images, None, epochs=4, batch_size=32, num_features=32, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    history = extractor.loss_history
    assert len(history) == 4 and history[-1] < history[0]
    assert not extractor.training and extractor.head.out_features == 64  # the projection, not classes
    with torch.no_grad():
        assert extractor(torch.as_tensor(images[:5])).shape == (5, 32)
    again = train_feature_extractor(images, None, epochs=4, batch_size=32, num_features=32, progress=False)
    assert again.loss_history == history
    with pytest.raises(InputError, match="at least 2 images"):
        train_feature_extractor(images[:1], None, epochs=1, progress=False)


def test_save_and_load_give_identical_embeddings(trained, real, tmp_path):
    path = save_feature_extractor(trained, tmp_path / "sub" / "extractor.pt")
    loaded = load_feature_extractor(path)
    assert not loaded.training and loaded.num_features == 32 and loaded.in_channels == 3
    with torch.no_grad():
        assert torch.equal(loaded(torch.as_tensor(real)), trained(torch.as_tensor(real)))
    names = [fid_kid(real, real, e, kid_subsets=2)["extractor"] for e in (loaded, trained)]
    assert names[0] == names[1]


def test_loading_a_missing_or_foreign_file_names_it(trained, tmp_path):
    with pytest.raises(InputError, match="absent.pt: feature extractor file not found"):
        load_feature_extractor(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="garbage.pt: not a readable"):
        load_feature_extractor(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(InputError, match="foreign.pt: not a feature extractor checkpoint"):
        load_feature_extractor(foreign)
    path = save_feature_extractor(trained, tmp_path / "tampered.pt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["arguments"]["num_features"] = 64
    torch.save(checkpoint, path)
    with pytest.raises(InputError, match="tampered.pt: malformed"):
        load_feature_extractor(path)


# ----------------------------------------------------------------------------- FID and KID


def test_fid_and_kid_of_a_set_against_itself_are_zero(trained, real):
    scores = fid_kid(real, real, trained, kid_subset_size=50, kid_subsets=20)
    strong = fid_kid(real, np.clip(real + 0.4, 0, 1), trained, kid_subset_size=50, kid_subsets=20)
    assert scores["n_real"] == scores["n_fake"] == 100 and scores["kid_subset_size"] == 50
    assert scores["extractor"].startswith("morphospace-cnn32-")
    assert abs(scores["fid"]) < 1e-6 * strong["fid"]
    assert abs(scores["kid_mean"]) < 0.02 * strong["kid_mean"]


def _noise(images, strength):
    return np.clip(images + np.random.default_rng(5).normal(0, strength, images.shape), 0, 1)


def _shift(images, strength):
    return np.clip(images + strength, 0, 1)


def _blur(images, strength):
    return gaussian_filter(images, (0, 0, strength, strength))


@pytest.mark.parametrize("corrupt, strengths", [(_noise, [0.1, 0.2, 0.4]), (_shift, [0.1, 0.2, 0.4]),
                                                (_blur, [1.0, 2.0, 4.0])])
def test_fid_and_kid_grow_with_corruption(trained, real, corrupt, strengths):
    fakes = [real] + [corrupt(real, s).astype(np.float32) for s in strengths]
    scores = [fid_kid(real, fake, trained, kid_subset_size=50, kid_subsets=20) for fake in fakes]
    fid = [s["fid"] for s in scores]
    kid = [s["kid_mean"] for s in scores]
    assert all(a < b for a, b in zip(fid, fid[1:])), fid
    assert all(a < b for a, b in zip(kid, kid[1:])), kid


def test_fid_kid_accept_tensors_and_check_inputs(trained, real):
    tensor = torch.as_tensor(real)
    assert fid_kid(tensor, tensor[:40], trained, kid_subsets=2)["kid_subset_size"] == 40
    with pytest.raises(InputError, match=r"fake: values must lie in \[0, 1\]"):
        fid_kid(real, real * 2 - 1, trained)
    with pytest.raises(InputError, match="2 channel"):
        fid_kid(real[:, :2], real[:, :2], trained)
    with pytest.raises(InputError, match="at least 2"):
        fid_kid(real, real[:1], trained)


def test_inception_names_the_missing_package(monkeypatch, real):
    monkeypatch.setattr(generation, "_torch_fidelity_installed", lambda: False)
    with pytest.raises(InputError, match="torch-fidelity is not installed"):
        inception_fid_kid(real, real, weights_path=None)


def test_inception_names_the_missing_weights(monkeypatch, real, tmp_path):
    monkeypatch.setattr(generation, "_torch_fidelity_installed", lambda: True)
    with pytest.raises(InputError, match="weights_path=None") as error:
        inception_fid_kid(real, real, weights_path=None)
    assert "torch-fidelity" not in str(error.value)
    with pytest.raises(InputError, match="inception.pth not found"):
        inception_fid_kid(real, real, weights_path=tmp_path / "inception.pth")


def test_inception_input_maps_channels_to_rgb_uint8():
    images = torch.rand(2, 4, 8, 8)
    for channels, expected in [(1, [0, 0, 0]), (3, [0, 1, 2]), (4, [0, 1, 2])]:
        rgb = generation._to_rgb_uint8(images[:, :channels])
        assert rgb.dtype == torch.uint8 and rgb.shape == (2, 3, 8, 8)
        assert torch.equal(rgb, (images[:, expected] * 255).round().to(torch.uint8))
    two = generation._to_rgb_uint8(images[:, :2])
    assert torch.equal(two[:, 2], torch.zeros(2, 8, 8, dtype=torch.uint8))


# ----------------------------------------------------------------------------- CellProfiler features


def test_wasserstein_is_in_units_of_the_real_standard_deviation():
    rng = np.random.default_rng(0)
    real = pd.DataFrame({"a": rng.normal(5, 2, 500), "b": rng.normal(0, 1, 500), "c": np.ones(500),
                         "Metadata_Well": ["A01"] * 500})
    fake = real.copy()
    table = compare_feature_tables(real, fake)
    assert list(table.index) == ["a", "b", "c"]
    assert np.allclose(table.loc[["a", "b"], "normalized_wasserstein"], 0)
    assert np.allclose(table["ks_statistic"], 0)
    assert np.isnan(table.loc["c", "normalized_wasserstein"])  # constant among real cells
    fake["a"] = real["a"] + real["a"].std()
    fake.loc[:9, "b"] = np.nan
    table = compare_feature_tables(real, fake)
    assert table.loc["a", "normalized_wasserstein"] == pytest.approx(1.0)
    assert table.loc["a", "wasserstein"] == pytest.approx(real["a"].std())
    assert table.loc["a", "fake_mean"] - table.loc["a", "real_mean"] == pytest.approx(real["a"].std())
    assert table.loc["b", ["n_real", "n_fake"]].tolist() == [500, 490]
    fresh = compare_feature_tables(real, real.assign(a=rng.normal(5 + 2, 2, 500)))  # a new sample, 1 SD up
    assert fresh.loc["a", "normalized_wasserstein"] == pytest.approx(1.0, abs=0.15)


def test_summary_reports_median_mean_and_worst_features():
    table = pd.DataFrame({"normalized_wasserstein": [0.1, 2.0, np.nan, 0.3, 0.5]},
                         index=pd.Index(["a", "b", "c", "d", "e"], name="feature"))
    summary = summarize_feature_distances(table, n_worst=2)
    assert summary == {"n_features": 4, "objects": [], "median_normalized_wasserstein": pytest.approx(0.4),
                       "mean_normalized_wasserstein": pytest.approx(0.725), "worst_features": {"b": 2.0, "e": 0.5}}


def test_feature_distances_measure_crops_with_given_or_segmented_masks():
    images = _cells(12, seed=3)
    masks = np.zeros((12, 32, 32), np.uint8)
    masks[:, 8:24, 8:24] = 2
    masks[:, 12:20, 12:20] = 1
    same = feature_distances(images, images, CHANNELS, masks, masks)
    assert "Cells_Intensity_MeanIntensity_Actin" in same.index and "Nuclei_AreaShape_Area" in same.index
    assert np.allclose(same["wasserstein"], 0)
    dimmer = feature_distances(images, images * 0.5, CHANNELS, masks, masks)
    assert dimmer.loc["Nuclei_Intensity_MeanIntensity_DNA", "ks_statistic"] > 0.5
    assert dimmer.loc["Nuclei_AreaShape_Area", "wasserstein"] == 0
    segmented = feature_distances(images, images, CHANNELS)
    assert segmented.loc["Nuclei_AreaShape_Area", "n_real"] == 12
    assert np.allclose(segmented["wasserstein"], 0)
    with pytest.raises(InputError, match="'Hoechst' is not one of its channels"):
        feature_distances(images, images, CHANNELS, nucleus_channel="Hoechst")


def test_feature_distances_of_one_channel_crops_find_the_channel_and_measure_nuclei_only():
    nuclei = _cells(10, seed=4)[:, :1]
    table = feature_distances(nuclei, nuclei * 0.8, ["ch0"])  # no channel called DNA, no cytoplasm stain
    assert table.index.str.startswith("Nuclei_").all() and "Nuclei_Intensity_MeanIntensity_ch0" in table.index
    assert table.loc["Nuclei_AreaShape_Area", "n_real"] == 10
    assert summarize_feature_distances(table)["objects"] == ["Nuclei"]
    with pytest.raises(InputError, match=r"cannot tell which channel holds the nuclei.*\['a', 'b'\]"):
        feature_distances(np.concatenate([nuclei, nuclei], 1), np.concatenate([nuclei, nuclei], 1), ["a", "b"])


# ----------------------------------------------------------------------------- memorisation


@pytest.mark.parametrize("space", ["pixel", "embedding"])
def test_memorisation_flags_copies_of_training_images_not_fresh_samples(trained, space):
    extractor = trained if space == "embedding" else None
    train, holdout = _cells(150, seed=10), _cells(100, seed=11)
    copied = np.arange(0, 150, 3)
    copies = np.clip(train[copied] + np.random.default_rng(0).normal(0, 1e-3, train[copied].shape), 0, 1)
    flagged = nearest_real_neighbours(train, copies, holdout, extractor=extractor)
    assert flagged["space"] == space and flagged["baseline"] == "holdout"
    assert flagged["memorised_fraction"] > 0.95 and flagged["median_ratio"] < 0.2
    assert flagged["example_nearest"] == copied[:8].tolist()
    assert flagged["fake_distances"].shape == (50,) and flagged["n_baseline"] == 100
    fresh = nearest_real_neighbours(train, _cells(100, seed=12), holdout, extractor=extractor)
    assert fresh["memorised_fraction"] < 0.1 and 0.75 < fresh["median_ratio"] < 1.33


def test_memorisation_without_holdout_uses_the_other_training_images():
    train = _cells(60, seed=10)
    result = nearest_real_neighbours(train, train[:10])
    assert result["baseline"] == "train_leave_one_out" and result["n_baseline"] == 60
    assert result["baseline_median"] > 0 and result["memorised_fraction"] == 1.0

