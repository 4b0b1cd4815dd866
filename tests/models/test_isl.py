"""In-silico-labeling and segmentation U-Nets train on tiny simulated pairs: every loss falls."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from morphospace.data.tiles import PairedDataModule, TileConfig, TileSplitConfig
from morphospace.io.paired import PairedField, PairedNormalization, normalize_image
from morphospace.models.isl import ImageToImage, ISLModelConfig
from morphospace.models.perceptual import fit_in_domain_features
from morphospace.models.weights import transfer_weights
from morphospace.simulate import SimulateConfig, simulate_field

TINY_NET = {"channels": [8, 16, 32], "residual_units": 1, "norm": "none"}


def _data_module(fields: list[PairedField]) -> PairedDataModule:
    return PairedDataModule(fields, TileSplitConfig(fractions={"train": 0.75, "test": 0.25}),
                            TileConfig(size=32, tiles_per_epoch=64, batch_size=8))


@pytest.fixture(scope="module")
def fields() -> list[PairedField]:
    """Transmitted light -> DNA, with nuclei labels, on two simulated fields."""
    config = SimulateConfig(mode="transmitted", field_size=128, cells_per_field=8,
                            cells={"cell_diameter_px": [40, 55], "nucleus_diameter_px": [16, 22], "mitotic_diameter_px": [28, 34]})  # small cells: several per tiny field
    fields = []
    for seed in range(2):
        simulated = simulate_field(config, seed=seed)
        planes = [normalize_image(p, PairedNormalization()) for p in simulated.channels]
        fields.append(PairedField(f"f{seed}", planes[0][None], planes[1][None], simulated.nuclei_labels.astype(np.int32)))
    return fields


@pytest.fixture(scope="module")
def data(fields) -> PairedDataModule:
    return _data_module(fields)


def _fixed_batch(data: PairedDataModule) -> dict[str, torch.Tensor]:
    loader = torch.utils.data.DataLoader(data.dataset("test"), batch_size=32)
    return next(iter(loader))


def _loss(model: ImageToImage, batch: dict[str, torch.Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        target = batch["mask"] if model.cfg.task == "segmentation" else batch["target"]
        prediction = model(batch["input"])
        value = torch.nn.functional.l1_loss(prediction, target) if model.cfg.loss.kind == "pix2pix" else \
            model.loss_terms(prediction, target)["loss"]
    model.train()
    return float(value)


def _fit(model: ImageToImage, data: PairedDataModule, steps: int) -> None:
    trainer = pl.Trainer(max_steps=steps, max_epochs=100, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, reload_dataloaders_every_n_epochs=1, precision="32-true")
    trainer.fit(model, datamodule=data)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["l1", "l2", "pix2pix", "perceptual", "jaccard"])
def test_every_loss_falls(fields, data, kind):
    if kind == "jaccard":  # nuclei from the DNA stain: learnable in a few steps by a tiny net
        data = _data_module([PairedField(f.field_id, f.targets, f.targets, f.mask) for f in fields])
    torch.manual_seed(0)
    config = ISLModelConfig(task="segmentation" if kind == "jaccard" else "labeling", net=TINY_NET,
                            loss={"kind": kind, "l1_weight": 100.0, "in_domain_steps": 20, "discriminator_channels": 16},
                            lr=3e-3)
    model = ImageToImage(config.to_dict(), 1, 1)
    if kind == "perceptual":
        targets = torch.stack([data.train_set[i]["target"] for i in range(32)])
        features, losses = fit_in_domain_features(targets, steps=30)
        assert losses[-1] < losses[0]
        model.set_perceptual_features(features)
    batch = _fixed_batch(data)
    before = _loss(model, batch)
    _fit(model, data, 120)
    after = _loss(model, batch)
    assert after < 0.9 * before, (kind, before, after)


def test_in_domain_features_stop_at_their_time_limit():
    images = torch.rand(4, 1, 16, 16)
    _, losses = fit_in_domain_features(images, steps=10_000, max_seconds=0.0)
    assert len(losses) == 1  # one step, then the limit
    assert len(fit_in_domain_features(images, steps=3)[1]) == 3


def test_prediction_shapes_and_ranges_on_an_odd_field(data):
    seg = ImageToImage(ISLModelConfig(task="segmentation", net=TINY_NET, loss={"kind": "jaccard"}).to_dict(), 1, 1)
    field = torch.rand(1, 45, 70)
    probabilities = seg.predict_field(field, tile=32)
    assert probabilities.shape == (1, 45, 70) and 0 <= probabilities.min() and probabilities.max() <= 1
    labeling = ImageToImage(ISLModelConfig(net=TINY_NET).to_dict(), 1, 2)
    assert labeling.predict_field(field, tile=32).shape == (2, 45, 70)


@pytest.mark.slow
def test_checkpoint_round_trip_gives_identical_outputs(data, tmp_path):
    model = ImageToImage(ISLModelConfig(net=TINY_NET, loss={"kind": "perceptual"}).to_dict(), 1, 1)
    _fit(model, data, 3)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=1)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", weights_only=True)
    again = ImageToImage(state["hyper_parameters"]["config"], 1, 1)
    again.load_state_dict(state["state_dict"])
    x = torch.rand(2, 1, 32, 32)
    model.eval(), again.eval()
    torch.testing.assert_close(model(x), again(x))


def test_loss_and_task_must_agree():
    with pytest.raises(ValueError, match="jaccard"):
        ISLModelConfig(task="segmentation", loss={"kind": "l1"})
    with pytest.raises(ValueError, match="jaccard"):
        ISLModelConfig(loss={"kind": "jaccard"})


def test_segmentation_head_initialised_from_one_labeling_target_reproduces_it():
    net = {"channels": [8, 16], "residual_units": 0}  # the head is a plain convolution: exact transfer
    labeling = ImageToImage(ISLModelConfig(net=net).to_dict(), 2, 3).eval()
    segmentation = ImageToImage(ISLModelConfig(task="segmentation", loss={"kind": "jaccard"}, net=net).to_dict(),
                                2, 1).eval()
    counts = transfer_weights(labeling.net.state_dict(), segmentation.net, output_index=1)
    assert counts["sliced"] >= 1 and counts["skipped"] == 0
    x = torch.randn(2, 2, 32, 32)
    torch.testing.assert_close(segmentation(x)[:, 0], labeling(x)[:, 1])


def test_residual_head_is_transferred_whole_including_its_output_to_output_convolution():
    labeling = ImageToImage(ISLModelConfig(net={"channels": [8, 16]}).to_dict(), 2, 3)
    segmentation = ImageToImage(ISLModelConfig(task="segmentation", loss={"kind": "jaccard"},
                                               net={"channels": [8, 16]}).to_dict(), 2, 1)
    source = labeling.net.state_dict()
    counts = transfer_weights(source, segmentation.net, output_index=2)
    assert counts["skipped"] == 0
    square = [name for name, t in source.items() if t.ndim == 4 and t.shape[:2] == (3, 3)]
    assert square  # MONAI's top residual unit: a 3 -> 3 convolution
    torch.testing.assert_close(segmentation.net.state_dict()[square[0]], source[square[0]][2:3, 2:3])


def test_transfer_leaves_mismatched_tensors_alone():
    source = torch.nn.Conv2d(3, 4, 3).state_dict()
    target = torch.nn.Conv2d(2, 4, 3)
    before = target.weight.detach().clone()
    assert transfer_weights(source, target, output_index=0) == {"copied": 1, "sliced": 0, "skipped": 1}
    torch.testing.assert_close(target.weight, before)
