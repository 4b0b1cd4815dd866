"""Training speed of every model family through morphospace (Lightning) against a bare PyTorch loop
of the same networks, in the same process, with fp32 and with bf16 autocast; and embedding speed.

Both sides train the model built from the built-in config <model>_bbbc021 (64 x 64 crops, batch 64) on
the 5,318 real BBBC021 DMSO crops. The bare loop calls the module's own networks and losses with
plain Adam steps on in-memory batches, mirroring each family's training step (GAN: a discriminator
step every batch, a generator step every ``discriminator_steps`` batches; VAE: one step; VAE-GAN:
discriminator then VAE step). morphospace's images/s is its fit loop's (data loading included). Both exclude the
first (warm-up) batch. Ratio = morphospace / bare.

    python benchmarks/train_speed.py [--data ../shared/data] [--batches 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import data_dir, print_table, write_result
from morphospace.data.dataset import CropDataModule
from morphospace.io.importers import import_npz
from morphospace.models.blocks import gan_losses, gradient_penalty
from morphospace.models.registry import get_family, load_run_config
from morphospace.models.training import RunConfig
from morphospace.workflows.latent import embed_store
from morphospace.workflows.train import train

MODELS = ["dcgan", "lsgan", "wgan_gp", "vae", "beta_vae", "vae_gan"]


def _bare_step(model, batch: torch.Tensor, optimizers: list[torch.optim.Optimizer], index: int) -> None:
    """One training batch of ``model``'s networks without Lightning, mirroring its training_step."""
    family = model.hparams["config"]["family"]
    if family == "gan":
        cfg = model.cfg
        opt_g, opt_d = optimizers
        with torch.no_grad():
            fake = model.generator(torch.randn(len(batch), cfg.latent_dim))
        loss = gan_losses(cfg.loss, model.discriminator(batch), model.discriminator(fake), False, cfg.label_smoothing)
        if cfg.loss == "wgan-gp":
            loss = loss + cfg.gradient_penalty * gradient_penalty(model.discriminator, batch, fake)
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        if (index + 1) % cfg.discriminator_steps == 0:
            loss = gan_losses(cfg.loss, None, model.discriminator(model.generator(torch.randn(len(batch),
                                                                                            cfg.latent_dim))), True)
            opt_g.zero_grad()
            loss.backward()
            opt_g.step()
            model.ema.update_parameters(model.generator)
        return
    if getattr(model, "discriminator", None) is None:
        (opt_vae,) = optimizers
        loss = model.loss_terms(batch)["loss"]
        opt_vae.zero_grad()
        loss.backward()
        opt_vae.step()
        return
    opt_vae, opt_d = optimizers
    terms = model.loss_terms(batch)
    fakes = torch.cat([terms["reconstruction"], model.decoder(torch.randn(len(batch), model.latent_dim))])
    d_loss = gan_losses("lsgan", model.discriminator(batch), model.discriminator(fakes.detach()), False)
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    adv = gan_losses("lsgan", None, model.discriminator(fakes), True)
    real_features = [f.detach() for f in model.discriminator.intermediate(batch)]
    matching = sum(((a - b) ** 2).mean() for a, b in zip(real_features,
                                                         model.discriminator.intermediate(terms["reconstruction"])))
    loss = terms["loss"] + adv + matching
    opt_vae.zero_grad()
    loss.backward()
    opt_vae.step()


def _bare_images_per_second(config: RunConfig, batches: list[torch.Tensor], bf16: bool) -> float:
    torch.manual_seed(0)
    settings = config.model.to_dict()
    model = get_family(config.model.family).module_class(settings)(settings, tuple(batches[0].shape[1:])).train()
    optimizers = model.configure_optimizers()
    optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        _bare_step(model, batches[0], optimizers, 0)
        start = time.perf_counter()
        for index, batch in enumerate(batches[1:], start=1):
            _bare_step(model, batch, optimizers, index)
    return sum(len(b) for b in batches[1:]) / (time.perf_counter() - start)


def _lightning_images_per_second(config: RunConfig, n_batches: int, bf16: bool, runs: Path) -> float:
    overrides = config.model_copy(update={
        "name": f"{config.name}_{'bf16' if bf16 else 'fp32'}", "runs_dir": str(runs),
        "trainer": config.trainer.model_copy(update={
            "max_epochs": 1, "max_minutes": None, "limit_train_batches": n_batches,
            "precision": "bf16-mixed" if bf16 else "32-true", "channels_last": False, "sample_every_n_epochs": 1000})})
    return train(overrides, progress=False).samples_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--batches", type=int, default=20, help="fp32 batches per measurement (bf16: a quarter)")
    args = parser.parse_args()
    bbbc021 = data_dir(args.data) / "bbbc021"
    rows, embedding = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = import_npz(bbbc021 / "bbbc021_crops68_dmso_6plates.npz", tmp / "store",
                           ["DNA", "Actin", "Tubulin"], progress=False)
        for name in MODELS:
            config = load_run_config(f"{name}_bbbc021",
                                     [f"data.store={store.path}", f"runs_dir={tmp / 'runs'}"])
            data = CropDataModule(config.data)
            data.setup()
            loader = iter(data.train_dataloader())
            batches = [next(loader)["image"] for _ in range(args.batches + 1)]
            row = {"model": name}
            for bf16 in (False, True):
                n = args.batches if not bf16 else max(2, args.batches // 4)
                bare = _bare_images_per_second(config, batches[: n + 1], bf16)
                lightning = _lightning_images_per_second(config, n, bf16, tmp / "runs")
                key = "bf16" if bf16 else "fp32"
                row |= {f"bare_{key}": bare, f"morphospace_{key}": lightning, f"ratio_{key}": lightning / bare}
            rows.append(row)
            if name in ("lsgan", "vae"):
                summary = embed_store(tmp / "runs" / f"{name}_bbbc021_fp32", store.path, tmp / f"{name}.parquet",
                                      progress=False)
                embedding.append({"model": name, "cells": summary.n_cells,
                                  "cells_per_s": summary.n_cells / summary.seconds})
    print_table(rows, "training images/s (64 x 64, batch 64, 2 CPU cores): morphospace (Lightning) vs bare loop")
    print_table(embedding, "embedding speed")
    path = write_result("train_speed", {
        "convention": ("images/s over the same in-memory batches after one warm-up batch; morphospace = Lightning fit "
                       "loop incl. data loading; bare = the module's networks and losses with plain Adam steps; "
                       "bf16 = torch.autocast(cpu, bfloat16); ratio = morphospace / bare"),
        "rows": rows, "embedding": embedding,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
