import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from morphospace.config import ConfigError, resolve_config
from morphospace.errors import InputError
from morphospace.models.registry import resolve_run_config
from morphospace.models.run import load_module, load_run, read_checkpoint
from morphospace.models.training import (GradientSpikeClip, TrainSummary, TrainerConfig, resolve_precision,
                                         with_lr_schedule)
from morphospace.models.vae import VAE, VAEConfig
from morphospace.runs import RunConflictError
from morphospace.workflows import train as train_module
from morphospace.workflows.train import plan_run, train


MODELS = {
    "dcgan": {"family": "gan", "loss": "dcgan"},
    "lsgan": {"family": "gan", "loss": "lsgan"},
    "wgan-gp": {"family": "gan", "loss": "wgan-gp", "discriminator_steps": 2, "betas": [0.0, 0.9]},
    "vae": {"family": "vae"},
    "beta-vae": {"family": "vae", "beta": 4.0},
    "convex-beta-vae": {"family": "vae", "beta": 0.5, "objective": "convex"},
    "vae-gan": {"family": "vae", "adversarial": {"weight": 0.1}},
}


def _epoch_means(run: Path, column: str) -> pd.Series:
    metrics = pd.read_csv(run / "metrics.csv")
    return metrics.dropna(subset=[column]).groupby("epoch")[column].mean()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_with_falling_loss(name, blob_store: Path, tmp_path: Path, tiny_config):
    config = tiny_config(blob_store, tmp_path, name, MODELS[name])
    summary = train(config, progress=False)
    run = tmp_path / name
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "figures" / "samples_epoch_003.png").is_file()
    assert summary.epochs == 3 and summary.samples_per_second > 0 and summary.sample_unit == "crops"
    if MODELS[name]["family"] == "vae":
        kl = pd.read_csv(run / "kl_per_dimension.csv")
        assert kl["epoch"].tolist() == [0, 1, 2] and kl.shape[1] == 1 + 8 and (kl.drop(columns="epoch") >= 0).all().all()
    loss = "d_loss_step" if MODELS[name]["family"] == "gan" else "recon_step"
    curve = _epoch_means(run, loss)
    assert curve.iloc[-1] < curve.iloc[0], (name, curve.tolist())
    loaded = load_run(run)
    model, data = loaded.module, loaded.data
    samples = model.sample(5, torch.Generator().manual_seed(0))
    assert samples.shape == (5, 2, 16, 16) and float(samples.abs().max()) <= 1
    embedding = model.embed(data.dataset("all").load(np.arange(4)))
    assert embedding.shape == (4, 100 if MODELS[name]["family"] == "gan" else 8)


def _strict_json(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"{path}: bare {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow
@pytest.mark.parametrize("name, budget, epochs", [
    ("vae", {"max_minutes": 1e-4, "max_epochs": 50}, 0.2),  # the clock stops it after its first batch of 5
    ("lsgan", {"max_steps": 4}, 0.4),  # 2 optimiser steps per GAN batch: 2 of 5 batches
])
def test_a_run_stopped_part_way_writes_its_final_figures_and_fractional_epochs(
        name, budget, epochs, blob_store: Path, tmp_path: Path, tiny_config):
    config = tiny_config(blob_store, tmp_path, name, MODELS[name], sample_every_n_epochs=5, **budget)
    summary = train(config, progress=False)
    run = tmp_path / name
    figures = {path.name for path in (run / "figures").glob("*.png")}
    assert {"final_samples.png", "final_interpolation.png"} <= figures
    assert ("final_reconstructions.png" in figures) == (name == "vae")  # models with an encoder
    saved = _strict_json(run / "summary.json")
    assert summary.epochs == saved["epochs"] == pytest.approx(epochs)
    assert f"trained {epochs:g} epoch(s)" in summary.line() and "nan" not in summary.line().lower()
    if name == "vae":  # one batch: no speed after the warm-up batch
        assert saved["samples_per_second"] is None and "speed not measured" in summary.line()
    else:
        assert saved["samples_per_second"] > 0


@pytest.mark.slow
def test_save_load_round_trip_gives_identical_outputs(blob_store: Path, tmp_path: Path, tiny_config):
    config = tiny_config(blob_store, tmp_path, "roundtrip", MODELS["lsgan"], max_epochs=1)
    train(config, progress=False)
    run = load_run(tmp_path / "roundtrip")
    reloaded, data = run.module, run.data
    _, again = load_module(tmp_path / "roundtrip")
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    images = data.dataset("all").load(np.arange(3))
    assert torch.equal(reloaded.decode(z), again.decode(z))
    assert torch.equal(reloaded.embed(images), again.embed(images))


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(blob_store: Path, tmp_path: Path, monkeypatch, tiny_config):
    class Interrupt(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    original = train_module.build_trainer

    def interrupted(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.callbacks.insert(0, Interrupt())
        return trainer

    config = tiny_config(blob_store, tmp_path, "resume", MODELS["vae"])
    monkeypatch.setattr(train_module, "build_trainer", interrupted)
    with pytest.raises(SystemExit):  # Lightning shuts down gracefully on Ctrl-C, then exits
        train(config, progress=False)
    checkpoint = torch.load(tmp_path / "resume" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0
    monkeypatch.setattr(train_module, "build_trainer", original)
    resumed = train(config, progress=False)
    uninterrupted = train(tiny_config(blob_store, tmp_path, "straight", MODELS["vae"]), progress=False)
    assert resumed.epochs == uninterrupted.epochs == 3 and resumed.optimizer_steps == uninterrupted.optimizer_steps
    weights = [load_run(tmp_path / name).module.state_dict() for name in ("resume", "straight")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[1])  # as if never interrupted
    assert sorted(pd.read_csv(tmp_path / "resume" / "metrics.csv")["epoch"].dropna().unique()) == [0, 1, 2]
    longer = tiny_config(blob_store, tmp_path, "resume", MODELS["vae"], max_epochs=4)
    assert train(longer, progress=False).epochs == 4
    with pytest.raises(RunConflictError, match="model.beta"):
        train(tiny_config(blob_store, tmp_path, "resume", {"family": "vae", "beta": 2.0}), progress=False)


@pytest.mark.slow
def test_bf16_and_channels_last_options_run(blob_store: Path, tmp_path: Path, tiny_config):
    config = tiny_config(blob_store, tmp_path, "bf16", MODELS["vae"], max_epochs=1, precision="bf16-mixed",
                         channels_last=True, limit_train_batches=2)
    summary = train(config, progress=False)
    assert np.isfinite(summary.metrics["loss_epoch"])


@pytest.mark.slow
def test_same_seed_same_numbers(blob_store: Path, tmp_path: Path, tiny_config):
    a = train(tiny_config(blob_store, tmp_path / "a", "run", MODELS["vae"], max_epochs=1), progress=False)
    b = train(tiny_config(blob_store, tmp_path / "b", "run", MODELS["vae"], max_epochs=1), progress=False)
    assert a.metrics["loss_epoch"] == b.metrics["loss_epoch"]


def test_config_validation(blob_store: Path, tmp_path: Path):
    config = resolve_run_config({"name": "x", "runs_dir": str(tmp_path), "data": {"store": str(blob_store)},
                                 "model": {"family": "vae"}})
    with pytest.raises(ConfigError, match="key 'data.normalization.out_range'"):
        plan_run(config)
    with pytest.raises(ConfigError, match="key 'model.family': unknown family 'stylegan'"):
        resolve_run_config({"name": "x", "data": {"store": "s"}, "model": {"family": "stylegan"}})
    with pytest.raises(ConfigError, match="beta must lie in"):
        resolve_config(VAEConfig, {"beta": 2.0, "objective": "convex"})
    assert resolve_precision("auto", "cpu") in ("32-true", "bf16-mixed")


def test_missing_run_and_checkpoint(tmp_path: Path):
    with pytest.raises(InputError, match="not a training run"):
        load_run(tmp_path)
    with pytest.raises(InputError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.ckpt")


@pytest.mark.slow
def test_tensorboard_needs_its_package(blob_store: Path, tmp_path: Path, tiny_config):
    import importlib.util

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("TensorBoard is installed here, so the missing-package error cannot occur")
    config = tiny_config(blob_store, tmp_path, "tb", MODELS["vae"], max_epochs=1, tensorboard=True)
    with pytest.raises(InputError, match="tensorboard"):
        train(config, progress=False)


@pytest.mark.slow
def test_generator_steps_follow_discriminator_steps(blob_store: Path, tmp_path: Path, tiny_config):
    config = tiny_config(blob_store, tmp_path, "critic", {**MODELS["lsgan"], "discriminator_steps": 2}, max_epochs=1,
                         limit_train_batches=4)
    train(config, progress=False)
    model = load_run(tmp_path / "critic").module
    assert int(model.ema.n_averaged) == 2  # 4 batches, a generator update after every 2nd
    assert not any(p.requires_grad for p in model.ema.parameters())


@pytest.mark.slow
def test_kl_per_dimension_is_written_for_the_epoch_just_finished(blob_store: Path, tmp_path: Path, tiny_config):
    train(tiny_config(blob_store, tmp_path, "kl", MODELS["vae"], max_epochs=2), progress=False)
    kl = pd.read_csv(tmp_path / "kl" / "kl_per_dimension.csv").drop(columns="epoch")
    model = load_run(tmp_path / "kl").module
    assert kl.iloc[0].sum() > 0
    np.testing.assert_allclose(kl.iloc[-1].to_numpy(), model.kl_per_dimension.numpy(), rtol=1e-4)


@pytest.mark.slow
def test_a_finished_run_is_reused_and_a_larger_budget_resumes_it(blob_store: Path, tmp_path: Path, tiny_config):
    from morphospace.workflows.train import trained

    first = trained(tiny_config(blob_store, tmp_path, "budget", MODELS["vae"], max_epochs=1), progress=False)
    again = trained(tiny_config(blob_store, tmp_path, "budget", MODELS["vae"], max_epochs=1), progress=False)
    assert first.epochs == again.epochs == 1 and len(list((tmp_path / "budget" / "logs").glob("session_*"))) == 1
    longer = trained(tiny_config(blob_store, tmp_path, "budget", MODELS["vae"], max_epochs=2), progress=False)
    assert longer.epochs == 2 and longer.resumed


def _stamp_as_other_code(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    summary["code"] = "0.0.1+000000000000"
    (run / "summary.json").write_text(json.dumps(summary))


@pytest.mark.slow
def test_a_run_of_other_code_is_reused_with_a_warning_or_trained_again(blob_store: Path, tmp_path: Path, tiny_config,
                                                                      caplog):
    from morphospace.runs import code_stamp
    from morphospace.workflows.train import trained

    config = tiny_config(blob_store, tmp_path, "stamped", MODELS["vae"], max_epochs=1)
    assert trained(config, progress=False).code == code_stamp()
    _stamp_as_other_code(config.run_dir)
    with caplog.at_level("WARNING", logger="morphospace"):
        reused = trained(config, progress=False)
    assert reused.code == "0.0.1+000000000000"
    assert "trained by code 0.0.1+000000000000, not " + code_stamp() in caplog.text
    assert len(list((config.run_dir / "logs").glob("session_*"))) == 1
    again = trained(config, progress=False, same_code=True)
    assert again.code == code_stamp() and not again.resumed and again.epochs == 1
    assert TrainSummary.read(config.run_dir).code == code_stamp()
    assert len(list((config.run_dir / "logs").glob("session_*"))) == 1  # started over, not resumed


@pytest.mark.slow
def test_without_last_ckpt_the_newest_epoch_checkpoint_resumes(blob_store: Path, tmp_path: Path, tiny_config):
    train(tiny_config(blob_store, tmp_path, "lost", MODELS["vae"], max_epochs=2), progress=False)
    (tmp_path / "lost" / "checkpoints" / "last.ckpt").unlink()
    summary = train(tiny_config(blob_store, tmp_path, "lost", MODELS["vae"], max_epochs=3), progress=False)
    assert summary.resumed and summary.epochs == 3
    epochs = pd.read_csv(tmp_path / "lost" / "metrics.csv").dropna(subset=["loss_epoch"])["epoch"].tolist()
    assert epochs == [0, 1, 2]  # resumed after epoch 1, not restarted with duplicate rows


def test_cosine_schedule_falls_from_the_learning_rate_to_zero_over_the_budget():
    from types import SimpleNamespace

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert with_lr_schedule(optimizer, SimpleNamespace(estimated_stepping_batches=4), "constant") is optimizer
    scheduler = with_lr_schedule(optimizer, SimpleNamespace(estimated_stepping_batches=4), "cosine")["lr_scheduler"]
    rates = []
    for _ in range(6):  # two steps past the budget stay at 0
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler["scheduler"].step()
    expected = [0.1, 0.1 * (1 + 2 ** -0.5) / 2, 0.05, 0.1 * (1 - 2 ** -0.5) / 2, 0.0, 0.0]
    np.testing.assert_allclose(rates, expected, atol=1e-12)
    assert scheduler["interval"] == "step"
    with pytest.raises(InputError, match="model.lr_schedule 'cosine' needs a budget"):
        with_lr_schedule(optimizer, SimpleNamespace(estimated_stepping_batches=float("inf")), "cosine")


def test_a_vae_log_variance_past_its_bound_is_pulled_back_by_the_kl():
    torch.manual_seed(0)
    model = VAE({"latent_dim": 3, "base_channels": 4, "hidden_dim": 8}, (1, 16, 16))
    with torch.no_grad():
        model.to_logvar.weight.zero_()
        model.to_logvar.bias.fill_(-40.0)
    mu, logvar = model.encode(torch.rand(2, 1, 16, 16))
    assert (logvar == -20).all()
    (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).sum(1).mean().backward()
    torch.testing.assert_close(model.to_logvar.bias.grad, torch.full((3,), 0.5 * (math.exp(-20) - 1)))


def _two_networks_with_gradients(scale_a: float, scale_b: float) -> torch.nn.ModuleDict:
    """Two linear networks whose gradients have norms 5 * scale_a and 5 * scale_b."""
    torch.manual_seed(0)
    net = torch.nn.ModuleDict({"a": torch.nn.Linear(1, 1, bias=False), "b": torch.nn.Linear(1, 1, bias=False)})
    (net["a"](torch.full((1, 1), 5.0 * scale_a)).sum() + net["b"](torch.full((1, 1), 5.0 * scale_b)).sum()).backward()
    return net


def _grad_norm(network: torch.nn.Module) -> float:
    return float(torch.cat([p.grad.flatten() for p in network.parameters()]).norm())


def test_gradient_spike_clip_bounds_only_the_network_whose_gradient_spikes():
    clip = GradientSpikeClip(factor=4.0, window=8)
    for scale in (1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0):  # history norms 5, 10, 15...: median 10
        net = _two_networks_with_gradients(scale, scale)
        assert clip.clip(net, list(net.parameters())) == []
    net = _two_networks_with_gradients(100.0, 7.0)
    assert clip.clip(net, list(net.parameters())) == ["a"]
    assert _grad_norm(net["a"]) == pytest.approx(4.0 * 10.0)  # the factor times the median of the last 8
    assert _grad_norm(net["b"]) == pytest.approx(35.0)  # 3.5 times its median: left alone
    assert list(clip.norms["a"])[-1] == pytest.approx(500.0)  # the raw norm is recorded


def test_gradient_spike_clip_waits_for_its_history_and_ignores_other_optimisers_parameters():
    clip = GradientSpikeClip(factor=2.0, window=4, min_history=3)
    for scale in (1.0, 50.0):  # fewer than 3 norms recorded: nothing clipped yet
        net = _two_networks_with_gradients(scale, scale)
        assert clip.clip(net, list(net.parameters())) == []
    net = _two_networks_with_gradients(100.0, 100.0)
    assert clip.clip(net, list(net["b"].parameters())) == []  # only b's parameters are stepped
    assert len(clip.norms["a"]) == 2 and len(clip.norms["b"]) == 3


def test_gradient_spike_clip_state_survives_a_checkpoint():
    clip = GradientSpikeClip(factor=3.0, window=5, min_history=2)
    for scale in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):  # the window keeps the last 5
        net = _two_networks_with_gradients(scale, scale)
        clip.clip(net, list(net.parameters()))
    restored = GradientSpikeClip(factor=3.0, window=5, min_history=2)
    restored.load_state_dict(clip.state_dict())
    assert restored.norms == clip.norms and restored.norms["a"].maxlen == 5 and len(restored.norms["a"]) == 5
    net = _two_networks_with_gradients(13.0, 11.0)  # median 20: bound 60 against norms 65 and 55
    assert restored.clip(net, list(net.parameters())) == ["a"]


def test_a_network_without_gradient_is_not_held_to_a_bound_of_zero():
    clip = GradientSpikeClip(factor=2.0, window=4, min_history=2)
    for _ in range(3):
        net = _two_networks_with_gradients(0.0, 1.0)  # a's gradient is exactly zero
        assert clip.clip(net, list(net.parameters())) == []
    assert "a" not in clip.norms or len(clip.norms["a"]) == 0
    net = _two_networks_with_gradients(1.0, 1.0)
    assert clip.clip(net, list(net.parameters())) == []
    assert _grad_norm(net["a"]) == pytest.approx(5.0)  # not scaled to 0 by a median of zeros


def test_gradient_spike_settings_are_checked():
    with pytest.raises(ValueError, match="factor > 1"):
        GradientSpikeClip(factor=1.0)
    with pytest.raises(ConfigError, match="gradient_spike_factor"):
        resolve_config(TrainerConfig, {"gradient_spike_factor": 0.5})


@pytest.mark.slow
@pytest.mark.parametrize("name, networks", [("vae", ["encoder", "decoder"]),
                                            ("lsgan", ["generator", "discriminator"])])  # one optimiser, or two
def test_a_run_with_gradient_spike_clipping_logs_the_groups_it_clipped(name, networks, blob_store: Path,
                                                                        tmp_path: Path, tiny_config):
    config = tiny_config(blob_store, tmp_path, "spikes", MODELS[name], max_epochs=2, gradient_spike_factor=1.01,
                         gradient_spike_window=2)
    summary = train(config, progress=False)
    metrics = pd.read_csv(tmp_path / "spikes" / "metrics.csv")
    columns = {f"gradient_spikes_clipped_{network}" for network in networks}
    assert columns <= set(metrics.columns)
    clipped = metrics.dropna(subset=sorted(columns))[sorted(columns)]
    assert len(clipped) == 2 and (clipped >= 0).all().all()
    assert clipped.to_numpy().sum() > 0  # a bound of 1.01 times the median catches some steps
    assert summary.epochs == 2
