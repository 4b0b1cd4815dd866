"""Self-supervised and weakly supervised embedders: views, losses, the DINO teacher, training
through the run skeleton, and checks that name the key."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from morphospace.config import ConfigError
from morphospace.data.conditions import CategoricalCondition
from morphospace.models.registry import resolve_run_config
from morphospace.models.ssl import SelfSupervised, SSLConfig, dino_loss, make_views, nt_xent
from morphospace.workflows.train import plan_run


def _discs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2, 16, 16) images: a disc, small or large, in channel 0 and nothing in channel 1; labels."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    labels = torch.arange(n) % 2
    radius = torch.where(labels == 1, 6.0, 3.0) + 0.5 * torch.rand(n, generator=generator)
    discs = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2)[None] < radius[:, None, None] ** 2
    images = torch.stack([discs.float(), torch.zeros(n, 16, 16)], dim=1)
    return images + 0.05 * torch.randn(images.shape, generator=generator) * torch.tensor([1.0, 0.0])[:, None, None], labels


def test_views_have_their_sizes_and_never_mix_channels():
    config = SSLConfig(objective="dino", local_crops=3, local_size=8, base_channels=4, blocks=2)
    images, _ = _discs(6, torch.Generator().manual_seed(0))
    global_views, local_views = make_views(images, config, torch.Generator().manual_seed(1))
    assert [v.shape for v in global_views] == [(6, 2, 16, 16)] * 2
    assert [v.shape for v in local_views] == [(6, 2, 8, 8)] * 3
    assert all(float(v[:, 1].abs().max()) == 0 for v in global_views + local_views)  # the empty channel stays empty
    assert not torch.allclose(global_views[0], global_views[1])
    again, _ = make_views(images, config, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], global_views[0])  # the same generator state gives the same views


def test_nt_xent_prefers_the_true_partners():
    a = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    matched = nt_xent(a, a + 0.01, 0.2)
    shuffled = nt_xent(a, a[torch.randperm(8, generator=torch.Generator().manual_seed(1))], 0.2)
    assert matched < shuffled and float(matched) < 0.5


def test_dino_loss_is_the_cross_entropy_of_other_views():
    teacher = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
    student = [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]])]
    loss = dino_loss(student, teacher, torch.zeros(1, 2), 1.0, 1.0)
    assert math.isclose(float(loss), math.log(2), rel_tol=1e-6)  # a uniform student against any target
    aligned = dino_loss([teacher[1], teacher[0]], teacher, torch.zeros(1, 2), 1.0, 1.0)
    assert aligned < loss  # each student view matches the other view's teacher


def test_dino_teacher_follows_the_student_by_its_momentum():
    config = SSLConfig(objective="dino", local_crops=0, base_channels=4, blocks=2, prototypes=8, teacher_momentum=0.9)
    model = SelfSupervised(config.to_dict(), (2, 16, 16))
    before = [p.clone() for p in model.teacher.parameters()]
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    model.on_train_batch_end(None, None, 0)  # no trainer: momentum at its start value 0.9
    moved = [(after - start) for after, start in zip(model.teacher["backbone"].parameters(), before)]
    assert all(torch.allclose(m, torch.full_like(m, 0.1), atol=1e-6) for m in moved)
    assert model.embed(torch.zeros(3, 2, 16, 16)).shape == (3, model.embedding_dim)


def test_simclr_loss_falls_on_discs():
    torch.manual_seed(0)
    config = SSLConfig(objective="simclr", base_channels=8, blocks=2, output_dim=16, projection_dim=32, lr=3e-3)
    model = SelfSupervised(config.to_dict(), (2, 16, 16))
    images, _ = _discs(32, torch.Generator().manual_seed(0))
    optimiser = model.configure_optimizers()
    losses = []
    for _ in range(25):
        loss = model.losses({"image": images})["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_a_dino_step_trains_the_student_only_and_centres_on_the_teacher():
    torch.manual_seed(0)
    config = SSLConfig(objective="dino", base_channels=4, blocks=2, local_crops=2, local_size=8, prototypes=16,
                       center_momentum=0.9)
    model = SelfSupervised(config.to_dict(), (2, 16, 16))
    images, _ = _discs(8, torch.Generator().manual_seed(0))
    model.losses({"image": images})["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    views, _ = make_views(images, config, torch.Generator().manual_seed(0))  # the views the step drew
    with torch.no_grad():
        teacher = torch.cat([model.teacher["head"](model.teacher["backbone"](v)) for v in views])
    assert torch.allclose(model.center, 0.1 * teacher.mean(dim=0, keepdim=True), atol=1e-5)


def test_weak_supervision_learns_the_label():
    torch.manual_seed(0)
    config = SSLConfig(objective="supervised", label="size", base_channels=8, blocks=2, lr=3e-3)
    model = SelfSupervised(config.to_dict(), (2, 16, 16), classes=["small", "large"])
    images, labels = _discs(32, torch.Generator().manual_seed(0))
    optimiser = model.configure_optimizers()
    for _ in range(30):
        terms = model.losses({"image": images, "size": labels})
        optimiser.zero_grad()
        terms["loss"].backward()
        optimiser.step()
    assert float(terms["label_accuracy"]) >= 0.9


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="needs a label"):
        SSLConfig(objective="supervised")
    with pytest.raises(ValueError, match="local_crops: 0"):
        SSLConfig(objective="dino", backbone="vit")
    with pytest.raises(ValueError, match="global_scale"):
        SSLConfig(global_scale=(0.5, 0.2))


def _run_config(store: Path, tmp_path: Path, model: dict, **trainer) -> object:
    return resolve_run_config({
        "name": "ssl", "runs_dir": str(tmp_path / "runs"), "seed": 0,
        "data": {"store": str(store), "batch_size": 16, "split": {"by": "Metadata_Plate", "train": 0.67,
                                                                  "val": 0.33, "test": 0.0},
                 "conditions": {"compound": {"kind": "categorical", "column": "Metadata_Compound"}}},
        "model": {"family": "ssl", "base_channels": 4, "blocks": 2, "prototypes": 16, "local_size": 8, **model},
        "trainer": {"max_epochs": 1, "precision": "32-true", "channels_last": False, **trainer}})


def test_family_checks_name_the_key(blob_store: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="model.local_size"):
        plan_run(_run_config(blob_store, tmp_path, {"local_size": 6}))
    with pytest.raises(ConfigError, match="model.label"):
        plan_run(_run_config(blob_store, tmp_path, {"label": "missing"}))
    assert plan_run(_run_config(blob_store, tmp_path, {"label": "compound"})).family.name == "ssl"


def test_a_label_joining_two_columns_has_a_class_per_combination(blob_store: Path, tmp_path: Path):
    config = _run_config(blob_store, tmp_path, {"label": "treatment"}).model_copy(deep=True)
    config.data.conditions = {"treatment": CategoricalCondition(column=["Metadata_Compound", "Metadata_Plate"])}
    with pytest.raises(ConfigError, match=r"value\(s\) \['big \| P0', 'small \| P0'\].*not in the training split"):
        plan_run(config)  # P0 is a validation plate: its treatments are unknown to the label head
    config.data.split = config.data.split.model_copy(update={"by": None, "train": 1.0, "val": 0.0})
    plan = plan_run(config)
    assert plan.module.classes == [f"{size} | P{plate}" for size in ("big", "small") for plate in range(3)]
    batch = next(iter(plan.data.train_dataloader()))
    assert batch["treatment"].dtype == torch.int64 and set(batch["treatment"].tolist()) <= set(range(6))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["cnn", "resnet"])
def test_dino_with_weak_supervision_trains_and_embeds(blob_store: Path, tmp_path: Path, backbone: str):
    from morphospace.workflows.latent import embed_store
    from morphospace.workflows.train import train

    config = _run_config(blob_store, tmp_path, {"label": "compound", "backbone": backbone, "width": 0.125})
    train(config, progress=False)
    metrics = pd.read_csv(config.run_dir / "metrics.csv")
    assert {"dino_epoch", "label_loss_epoch", "val_dino"} <= set(metrics.columns)
    table = pd.read_parquet(embed_store(config.run_dir).out)
    embedding = [c for c in table.columns if c.startswith("Embedding_")]
    assert len(table) == 96 and len(embedding) == (8 if backbone == "cnn" else 64)  # 4 x 2 maps; 512 x 0.125


def test_a_checkpoint_keeps_the_view_generator():
    config = SSLConfig(objective="simclr", base_channels=4, blocks=2)
    model = SelfSupervised(config.to_dict(), (2, 16, 16))
    images, _ = _discs(4, torch.Generator().manual_seed(0))
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    first = make_views(images, config, model.generator)[0][0]
    model.on_load_checkpoint(checkpoint)
    assert torch.equal(make_views(images, config, model.generator)[0][0], first)
