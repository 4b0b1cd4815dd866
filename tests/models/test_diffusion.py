"""Conditional diffusion and flow matching: config rules, condition tokens, guidance, starts from
control crops, EMA, and the generate / explore commands on tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, RFlowScheduler

from morphospace.cli import main
from morphospace.config import ConfigError
from morphospace.errors import InputError
from morphospace.io.store import CropStoreWriter
from morphospace.models.diffusion import (
    NULL_CONTEXT, ConditionTokens, DiffusionConfig, DiffusionModel, ema_warmup,
)
from morphospace.models.registry import resolve_run_config
from morphospace.models.run import read_checkpoint

ENTRIES = [{"name": "compound", "kind": "categorical", "size": 3, "names": ["a", "b", "c"]},
           {"name": "dose", "kind": "numeric", "size": 1, "names": []}]
SMALL = {"channels": (8, 16), "norm_num_groups": 8, "num_head_channels": 8, "context_dim": 8, "sampling_steps": 4}


def _model(process: str = "rflow", entries=ENTRIES, image_shape=(2, 16, 16), **config) -> DiffusionModel:
    torch.manual_seed(0)
    names = [e["name"] for e in entries]
    cfg = DiffusionConfig(process=process, conditions=names, **{**SMALL, **config})
    return DiffusionModel(cfg.to_dict(), image_shape, entries)


def _conditions(n: int, compound: int = 0, dose: float = 0.0) -> dict[str, torch.Tensor]:
    return {"compound": torch.full((n,), compound), "dose": torch.full((n,), dose)}


def _resolve(**model):
    return resolve_run_config({"name": "x", "data": {"store": "store"}, "model": {"family": "diffusion", **model}})


def test_config_rules_name_the_bad_key():
    with pytest.raises(ConfigError, match="model.attention_levels.*1 levels for the 2"):
        _resolve(channels=[8, 16], attention_levels=[True])
    with pytest.raises(ConfigError, match="model.attention_levels.*cross-attention"):
        _resolve(conditions=["compound"], channels=[8, 16], attention_levels=[False, False])
    with pytest.raises(ConfigError, match=r"model.channels.*\[20\] not divisible"):
        _resolve(channels=[8, 20], norm_num_groups=8)
    with pytest.raises(ConfigError, match="model.start_from.*rflow"):
        _resolve(process="ddpm", start_from="controls")
    with pytest.raises(ConfigError, match="model.condition_dropout"):
        _resolve(condition_dropout=1.0)
    assert _resolve(channels=[8, 16, 16], norm_num_groups=8).model.levels_with_attention == (False, False, True)


def test_ema_warmup_follows_the_weights_early_and_the_decay_later():
    update = ema_warmup(0.99)
    assert float(update(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(0))) == pytest.approx(0.9)
    assert float(update(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(8))) == pytest.approx(1 - 9 / 18)
    assert float(update(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(10_000))) == pytest.approx(0.01)


def test_condition_tokens_have_one_token_per_condition_and_refuse_bad_values():
    tokens = ConditionTokens([("compound", "categorical", 3), ("dose", "numeric", 1), ("f", "features", 5)], 6)
    out = tokens({"compound": torch.tensor([0, 2]), "dose": torch.tensor([0.5, -1.0]), "f": torch.zeros(2, 5)})
    assert out.shape == (2, 3, 6)
    assert torch.equal(out[0, 0], tokens.layers["compound"].weight[0])
    with pytest.raises(InputError, match=r"condition 'compound': expected \(N,\) indices in \[0, 3\)"):
        tokens({"compound": torch.tensor([3]), "dose": torch.zeros(1), "f": torch.zeros(1, 5)})
    with pytest.raises(InputError, match="condition 'f': expected 5 value"):
        tokens({"compound": torch.tensor([0]), "dose": torch.zeros(1), "f": torch.zeros(1, 4)})
    with pytest.raises(InputError, match="condition 'dose' missing"):
        tokens({"compound": torch.tensor([0]), "f": torch.zeros(1, 5)})


def test_dropped_conditions_become_the_null_context():
    model = _model()
    context = model.context(_conditions(4, 1, 0.3), 4, drop=torch.tensor([True, False, True, False]))
    assert context.shape == (4, 2, 8)
    assert torch.all(context[[0, 2]] == NULL_CONTEXT)
    assert not torch.any(context[[1, 3]] == NULL_CONTEXT)


@pytest.mark.parametrize("process, scheduler", [("ddpm", DDIMScheduler), ("rflow", RFlowScheduler)])
def test_samples_have_the_crop_shape_range_and_few_steps(process, scheduler):
    model = _model(process)
    sampler = model.sampling_scheduler(3)
    assert isinstance(sampler, scheduler) and len(sampler.timesteps) == 3
    start = model.noise(3, torch.Generator().manual_seed(0))
    images = model.generate(start, _conditions(3), steps=3)
    assert images.shape == (3, 2, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, model.generate(start, _conditions(3), steps=3))
    with pytest.raises(InputError, match="sampling steps must be in"):
        model.sampling_scheduler(0)
    with pytest.raises(InputError, match=r"start must be \(N, 2, 16, 16\)"):
        model.generate(torch.zeros(2, 1, 16, 16), _conditions(2))


def test_a_feature_vector_conditions_generation_like_cp2image_with_a_diffusion_decoder():
    entries = [{"name": "features", "kind": "features", "size": 6, "names": [f"f{i}" for i in range(6)]}]
    model = _model(entries=entries)
    start = model.noise(3, torch.Generator().manual_seed(0))
    images = model.generate(start, {"features": torch.randn(3, 6)})
    assert images.shape == (3, 2, 16, 16)
    with pytest.raises(InputError, match="condition 'features': expected 6 value"):
        model.generate(start, {"features": torch.randn(3, 5)})


def test_guidance_zero_ignores_the_condition_and_one_is_the_plain_conditional_model():
    model = _model(sampling_precision="32")
    with torch.no_grad():  # MONAI zero-initialises the attention outputs: move them off zero
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    start = model.noise(2, torch.Generator().manual_seed(1))
    a, b = _conditions(2, compound=0), _conditions(2, compound=2)
    assert torch.allclose(model.generate(start, a, guidance_scale=0.0), model.generate(start, b, guidance_scale=0.0))
    assert not torch.allclose(model.generate(start, a, guidance_scale=1.0),
                              model.generate(start, b, guidance_scale=1.0))
    null = torch.full((2, 2, 8), NULL_CONTEXT)
    assert torch.allclose(model.generate(start, a, guidance_scale=0.0), model.generate(start, context=null))


@pytest.mark.parametrize("process", ["ddpm", "rflow"])
def test_the_diffusion_loss_falls_on_a_fixed_batch(process):
    model = _model(process, sampling_precision="32")
    images = torch.tanh(torch.randn(8, 2, 16, 16, generator=torch.Generator().manual_seed(0)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        torch.manual_seed(0)  # the same steps and noise every time: a fixed regression problem
        loss = model.diffusion_loss(images, model.context(_conditions(8), 8), torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_a_flow_from_controls_starts_at_the_control_crops_noised_on_the_set_share():
    model = _model(start_from="controls", start_noise=0.5, start_noise_probability=0.0)
    controls = torch.rand(5, 2, 16, 16)
    assert torch.equal(model.starts(controls, 5), controls)
    noisy = model.starts(controls, 5, torch.Generator().manual_seed(0), noise_probability=1.0)
    assert float((noisy - controls).std()) == pytest.approx(0.5, rel=0.1)
    with pytest.raises(InputError, match="starts from 5 control crops"):
        model.starts(None, 5)
    with pytest.raises(InputError, match="keeps no control crops"):
        model.bank_controls(2)
    model.set_control_bank(controls)
    assert torch.equal(model.bank_controls(3), controls[[0, 0, 0]])
    with pytest.raises(InputError, match="start_from: noise"):
        _model().set_control_bank(controls)


def test_unconditioned_sampling_draws_conditions_from_the_training_bank():
    model = _model()
    with pytest.raises(InputError, match="keeps no training conditions"):
        model.sample(2)
    model.set_bank({"compound": np.array([2, 2, 2]), "dose": np.array([1.5, 1.5, 1.5], np.float32)})
    drawn = model.bank_conditions(6, torch.Generator().manual_seed(0))
    assert drawn["compound"].tolist() == [2] * 6 and drawn["dose"].tolist() == [1.5] * 6
    assert model.sample(2, torch.Generator().manual_seed(0)).shape == (2, 2, 16, 16)


# ----------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def disc_store(tmp_path_factory) -> Path:
    """96 crops (2 channels, 16 x 16) of a centred disc: compound 'big' (radius 4.2-5) or
    'small' (2.5-3.3, the controls), on three plates; dose = the radius."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    images, rows = [], []
    for i in range(96):
        big = i % 2 == 0
        radius = rng.uniform(4.2, 5.0) if big else rng.uniform(2.5, 3.3)
        disc = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < radius**2) * 0.9
        images.append(np.stack([disc, 0.5 * disc]))
        rows.append({"Metadata_Plate": f"P{i % 3}", "Metadata_Compound": "big" if big else "small",
                     "Metadata_Concentration": round(radius, 2)})
    path = tmp_path_factory.mktemp("discs") / "store"
    with CropStoreWriter(path, ["DNA", "Actin"], (16, 16), "float32") as writer:
        writer.append(np.stack(images).astype(np.float32), pd.DataFrame(rows))
    return path


def _run_config(store: Path, runs: Path, name: str, epochs: int = 25, **model):
    return resolve_run_config({
        "name": name, "runs_dir": str(runs), "seed": 0,
        "data": {"store": str(store), "batch_size": 16, "normalization": {"out_range": [-1, 1]},
                 "split": {"by": None, "train": 0.9, "val": 0.1, "test": 0.0},
                 "conditions": {"compound": {"kind": "categorical", "column": "Metadata_Compound"},
                                "controls": {"kind": "controls", "query": "Metadata_Compound=small"}}},
        "model": {"family": "diffusion", "conditions": ["compound"], "lr": 1e-3, **SMALL, **model},
        "trainer": {"max_epochs": epochs, "precision": "32-true", "channels_last": False, "log_every_n_steps": 1,
                    "sample_images": 4, "sample_every_n_epochs": 100},
    })


def test_the_family_refuses_conditions_it_cannot_read(disc_store: Path, tmp_path: Path):
    from morphospace.workflows.train import train

    bad = _run_config(disc_store, tmp_path, "bad", conditions=["controls"])
    with pytest.raises(ConfigError, match="model.conditions.*data.conditions.controls is of kind 'controls'"):
        train(bad, progress=False)
    with pytest.raises(ConfigError, match="model.controls.*kind controls"):
        train(_run_config(disc_store, tmp_path, "bad2", start_from="controls", controls="compound"), progress=False)
    with pytest.raises(ConfigError, match="model.guidance_scale"):
        train(_run_config(disc_store, tmp_path, "bad3", conditions=[], guidance_scale=2.0), progress=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()


def _disc_area(images: np.ndarray) -> float:
    """Mean count of DNA pixels above half brightness of images in [0, 1]."""
    return float((images[:, 0] > 0.45).sum(axis=(1, 2)).mean())


@pytest.mark.slow
def test_train_generate_from_controls_and_interpolate(disc_store: Path, tmp_path: Path, capsys):
    from morphospace.workflows.train import train

    config = _run_config(disc_store, tmp_path / "runs", "flow", start_from="controls", start_noise_probability=0.5)
    summary = train(config, progress=False)
    run = tmp_path / "runs" / "flow"
    assert summary.notes["start"].startswith("control crops (Metadata_Compound=small, same Metadata_Plate)")

    checkpoint = read_checkpoint(next((run / "checkpoints").glob("last*.ckpt")))
    current = checkpoint["current_model_state"]
    averaged = checkpoint["state_dict"]
    moved = [k for k in averaged if k.startswith("unet.") and not torch.equal(averaged[k], current[k])]
    assert moved, "the checkpoint keeps the EMA weights beside the current ones"

    npz = tmp_path / "flowed.npz"
    assert main(["generate", "--run", str(run), "--from-controls", str(disc_store), "--condition",
                 "Metadata_Compound=big", "--n", "8", "--npz", str(npz)]) == 0
    saved = np.load(npz)
    assert saved["controls"].shape == saved["images"].shape == (8, 2, 16, 16)
    assert _disc_area(saved["images"]) > 1.5 * _disc_area(saved["controls"])  # small discs flowed to big ones
    assert (run / "figures" / "from_controls_Metadata_Compound_big_seed0.png").is_file()

    assert main(["generate", "--run", str(run), "--condition", "Metadata_Compound == 'small'", "--n", "8",
                 "--npz", str(tmp_path / "small.npz")]) == 0
    assert main(["generate", "--run", str(run), "--condition", "Metadata_Compound=big", "--n", "8",
                 "--npz", str(tmp_path / "big.npz")]) == 0
    assert _disc_area(np.load(tmp_path / "big.npz")["images"]) > 1.5 * _disc_area(
        np.load(tmp_path / "small.npz")["images"])

    assert main(["explore", "interpolate", "--run", str(run), "--from", "Metadata_Compound=small", "--to",
                 "Metadata_Compound=big", "--steps", "4", "--rows", "2"]) == 0
    walk = np.load(run / "figures" / "condition_interpolation_Metadata_Compound_small_to_Metadata_Compound_big.npz")
    assert walk["images"].shape == (2, 4, 2, 16, 16)
    assert _disc_area(walk["images"][:, -1]) > _disc_area(walk["images"][:, 0])

    assert main(["evaluate", "generation", "--run", str(run), "--set", "per_condition=16", "--set",
                 "control=Metadata_Compound == 'small'", "--set", "extractor_epochs=2", "--set",
                 "cytoplasm_channels=[Actin]"]) == 0
    scores = json.loads((run / "evaluation" / "generation.json").read_text())
    assert scores["condition_column"] == "Metadata_Compound" and scores["control"] == "small"
    assert scores["n_per_condition"] == {"big": 16, "small": 16}
    assert set(scores["fid_per_condition"]) == {"big", "small"}
    assert scores["fid_per_condition_mean"] == pytest.approx(np.mean(list(scores["fid_per_condition"].values())))
    accuracy = scores["condition_accuracy"]
    assert accuracy["ratio_to_real"] == pytest.approx(accuracy["accuracy_generated"] / accuracy["accuracy_real"])
    assert accuracy["accuracy_generated"] > 0.75  # the disc size comes through
    assert scores["shift_cosine"]["big"] > 0.5  # the generated big-vs-small shift points the real way
    assert (run / "evaluation" / "figures" / "conditions_real_vs_generated.png").is_file()

    capsys.readouterr()
    assert main(["generate", "--run", str(run), "--condition", "Metadata_Compound=taxol"]) != 0
    assert "--condition 'Metadata_Compound=taxol': no cell of" in capsys.readouterr().err
    assert main(["generate", "--run", str(run), "--from-controls", str(disc_store)]) != 0
    assert "--from-controls needs --condition" in capsys.readouterr().err


@pytest.mark.slow
def test_a_noise_run_refuses_control_starts_and_samples_through_the_skeleton(disc_store: Path, tmp_path: Path,
                                                                            capsys):
    from morphospace.workflows.latent import generate
    from morphospace.workflows.train import train

    train(_run_config(disc_store, tmp_path / "runs", "ddpm", epochs=2, process="ddpm"), progress=False)
    run = tmp_path / "runs" / "ddpm"
    images, path = generate(run, n=4)
    assert images.shape == (4, 2, 16, 16) and path.is_file()
    assert (run / "figures" / "final_samples.png").is_file()
    assert main(["generate", "--run", str(run), "--from-controls", str(disc_store), "--condition",
                 "Metadata_Compound=big"]) != 0
    assert "(model.start_from: noise); --from-controls needs" in capsys.readouterr().err
