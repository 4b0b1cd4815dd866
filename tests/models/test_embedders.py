"""Whole-image embedders: per-channel autoencoders and group classifiers (custom CNN, DenseNet-121)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from morphospace.config import ConfigError
from morphospace.errors import InputError
from morphospace.models.autoencoder import Autoencoder, AutoencoderConfig
from morphospace.models.classifier import Classifier, ClassifierConfig, load_densenet_weights
from morphospace.models.registry import resolve_run_config
from morphospace.workflows.train import plan_run


def _stripes(n: int, vertical: bool, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 16, 16) images: channel 0 stripes of period 4 (vertical or horizontal) at random phases."""
    axis = torch.arange(16).float()
    phases = torch.rand(n, 1, 1, generator=generator) * 4
    wave = torch.sin(2 * torch.pi * (axis[None, None, :] + phases) / 4).expand(n, 16, 16)
    stripes = wave if vertical else wave.transpose(1, 2)
    noise = 0.3 * torch.randn(n, 2, 16, 16, generator=generator)
    return torch.stack([stripes, torch.zeros_like(stripes)], dim=1) + noise


def test_per_channel_autoencoder_codes_and_loss_falls():
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(code_dim=6, base_channels=4, dropout=0.0).to_dict(), (2, 16, 16))
    assert len(model.autoencoders) == 2 and model.embedding_dim == 12
    images = _stripes(32, True, torch.Generator().manual_seed(1)).clamp(-1, 1)
    optimiser = model.configure_optimizers()
    losses = []
    for _ in range(60):
        loss = F.mse_loss(model(images), images)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    model.eval()
    codes = model.embed(images[:3])
    assert codes.shape == (3, 12)
    single = model.embed(torch.cat([images[:3, :1], torch.zeros(3, 1, 16, 16)], dim=1))
    assert torch.allclose(codes[:, :6], single[:, :6])  # channel 0's code ignores channel 1


def test_joint_autoencoder_has_one_code():
    model = Autoencoder(AutoencoderConfig(per_channel=False, code_dim=5, base_channels=4).to_dict(), (3, 16, 16))
    assert len(model.autoencoders) == 1 and model.embed(torch.zeros(2, 3, 16, 16)).shape == (2, 5)


def test_cnn_classifier_learns_stripe_orientation():
    torch.manual_seed(0)
    config = ClassifierConfig(label="group", base_channels=4, blocks=2, embedding_dim=8, dropout=0.0, lr=3e-3)
    model = Classifier(config.to_dict(), (2, 16, 16), classes=["horizontal", "vertical"])
    generator = torch.Generator().manual_seed(2)
    images = torch.cat([_stripes(32, False, generator), _stripes(32, True, generator)])
    labels = torch.cat([torch.zeros(32), torch.ones(32)]).long()
    optimiser = model.configure_optimizers()
    for _ in range(40):
        loss = F.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test = torch.cat([_stripes(16, False, generator), _stripes(16, True, generator)])
    accuracy = (model(test).argmax(1) == torch.cat([torch.zeros(16), torch.ones(16)]).long()).float().mean()
    assert accuracy >= 0.9
    embedding = model.embed(test)
    assert embedding.shape == (32, 8) and (embedding >= 0).all()  # after the ReLU


def _torchvision_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MONAI DenseNet keys renamed the torchvision way, with a 3-channel first convolution."""
    renamed = {key.replace(".layers.", "."): value for key, value in state.items()}
    renamed["features.conv0.weight"] = torch.ones(64, 3, 7, 7)
    return renamed


def test_densenet_backbone_loads_torchvision_weights(tmp_path: Path):
    config = ClassifierConfig(label="group", backbone="densenet121", embedding_dim=8)
    model = Classifier(config.to_dict(), (2, 32, 32), classes=["a", "b"])
    assert model(torch.zeros(2, 2, 32, 32)).shape == (2, 2)
    source = Classifier(config.to_dict(), (3, 32, 32), classes=["a", "b"]).backbone.state_dict()
    path = tmp_path / "densenet121.pth"
    torch.save(_torchvision_style(source), path)
    counts = load_densenet_weights(model.backbone, path)
    assert counts["loaded"] == counts["tensors"]
    key = "denseblock2.denselayer3.layers.conv1.weight"
    assert torch.equal(model.backbone.features.state_dict()[key], source[f"features.{key}"])
    assert torch.allclose(model.backbone.features.conv0.weight, torch.full((64, 2, 7, 7), 1.5))
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match=r"other.pth: no tensor matches the network by name and shape \(DenseNet"):
        load_densenet_weights(model.backbone, tmp_path / "other.pth")


def test_weights_need_the_densenet_backbone():
    with pytest.raises(ValueError, match="set backbone: densenet121"):
        ClassifierConfig(label="group", weights="imagenet.pth")


def _run_config(store: Path, tmp_path: Path, model: dict, **data) -> object:
    return resolve_run_config({
        "name": "embedder", "runs_dir": str(tmp_path / "runs"),
        "data": {"store": str(store), "split": {"by": None, "train": 0.8, "val": 0.2, "test": 0.0}, **data},
        "model": model})


def test_family_checks_name_the_key(blob_store: Path, tmp_path: Path):
    categorical = {"conditions": {"compound": {"kind": "categorical", "column": "Metadata_Compound"}}}
    channels = {"conditions": {"compound": {"kind": "channels", "channels": ["Actin"]}}}
    with pytest.raises(ConfigError, match="model.label"):
        plan_run(_run_config(blob_store, tmp_path, {"family": "classifier", "label": "compound"}, **channels))
    with pytest.raises(ConfigError, match="multiple of 32"):
        plan_run(_run_config(blob_store, tmp_path, {"family": "classifier", "label": "compound",
                                                    "backbone": "densenet121"}, **categorical))
    with pytest.raises(ConfigError, match="data.normalization"):
        plan_run(_run_config(blob_store, tmp_path, {"family": "autoencoder"},
                             normalization={"method": "zscore", "scope": "crop"}))
    plan = plan_run(_run_config(blob_store, tmp_path, {"family": "classifier", "label": "compound", "blocks": 2},
                                **categorical))
    assert plan.family.name == "classifier"


def test_unet_embedder_segments_the_target_and_pools_its_bottleneck():
    from morphospace.models.unet_embedder import UNetEmbedder, UNetEmbedderConfig, otsu_masks

    torch.manual_seed(0)
    config = UNetEmbedderConfig(target_channel="Actin", input_channels=["Actin"], pooling="mean_max", lr=3e-3,
                                unet={"channels": [4, 8, 16], "residual_units": 1})
    model = UNetEmbedder(config.to_dict(), (2, 16, 16), channels=["DNA", "Actin"])
    images = _stripes(16, True, torch.Generator().manual_seed(3)).flip(1)  # stripes in channel 1 (Actin)
    target = otsu_masks(images[:, 1])
    assert 0.3 < float(target.mean()) < 0.7
    optimiser = model.configure_optimizers()
    losses = []
    for _ in range(30):
        loss = F.binary_cross_entropy_with_logits(model(images), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    model.eval()
    assert model.embedding_dim == 32 and model.embed(images[:3]).shape == (3, 32)


def test_unet_embedder_checks_its_channels(blob_store: Path, tmp_path: Path):
    model = {"family": "unet_embedder", "target_channel": "Tubulin", "unet": {"channels": [4, 8]}}
    with pytest.raises(ConfigError, match="model.target_channel"):
        plan_run(_run_config(blob_store, tmp_path, model))
    with pytest.raises(ConfigError, match="model.input_channels"):
        plan_run(_run_config(blob_store, tmp_path, {**model, "target_channel": "DNA", "input_channels": ["RNA"]}))
