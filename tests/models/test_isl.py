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
from morphospace.simulate import SimulateConfig, simulate_field

TINY_NET = {"channels": [8, 16, 32], "residual_units": 1, "norm": "none"}


def _data_module(fields: list[PairedField]) -> PairedDataModule:
    return PairedDataModule(fields, TileSplitConfig(fractions={"train": 0.75, "test": 0.25}),
                            TileConfig(size=32, tiles_per_epoch=64, batch_size=8))


@pytest.fixture(scope="module")
def fields() -> list[PairedField]:
    """Transmitted light -> DNA, with nuclei labels, on two simulated fields."""
    config = SimulateConfig(mode="transmitted", field_size=128, cells_per_field=8)
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


@pytest.mark.parametrize("kind", ["l1", "l2", "pix2pix", "perceptual", "jaccard"])
def test_every_loss_falls(fields, data, kind):
    if kind == "jaccard":  # nuclei from the DNA stain: learnable in a few steps by a tiny net
        data = _data_module([PairedField(f.field_id, f.targets, f.targets, f.mask) for f in fields])
    torch.manual_seed(0)
    config = ISLModelConfig(task="segmentation" if kind == "jaccard" else "labeling", net=TINY_NET,
                            loss={"kind": kind, "l1_weight": 10.0, "in_domain_steps": 20, "discriminator_channels": 16},
                            lr=1e-2 if kind == "l2" else 3e-3)
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


def test_prediction_shapes_and_ranges_on_an_odd_field(data):
    seg = ImageToImage(ISLModelConfig(task="segmentation", net=TINY_NET, loss={"kind": "jaccard"}).to_dict(), 1, 1)
    field = torch.rand(1, 45, 70)
    probabilities = seg.predict_field(field, tile=32)
    assert probabilities.shape == (1, 45, 70) and 0 <= probabilities.min() and probabilities.max() <= 1
    labeling = ImageToImage(ISLModelConfig(net=TINY_NET).to_dict(), 1, 2)
    assert labeling.predict_field(field, tile=32).shape == (2, 45, 70)


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
