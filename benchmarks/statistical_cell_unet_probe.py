"""Train a Statistical Cell run's expected-structure U-Net alone and score its reference-only coupling.

A full 3D run trains two beta-VAEs beside the U-Net (``model.expected_target: unet``) and takes
most of the 30-minute budget; the reference-only coupling reads the U-Net alone. This probe trains
a fresh ``ExpectedTargetUNet`` on the run's own training cells (its data module: split,
normalisation, augmentation; batch size the run's unless ``--batch-size``), without the VAEs, for
``--epochs`` epochs with Adam at ``--lr`` (held, or ``--lr-schedule cosine`` as ``model.lr_schedule``
does) and the run's precision, its last activation tanh unless ``--activation identity``, its loss
the squared error summed over pixels per cell, averaged over the batch. It reads the reference
whole: a run trained with ``model.reference_gates`` lends its cells only, its gates are not applied.
It then puts the network in place of the run's and scores the coupling as
``evaluate coupling --estimator reference_only`` does (``coupling_scores``: every held-out cell up to
500, 8 swap partners of the same structure, seed 0), against the store's truth (pooled
tie-resolved Spearman over every (structure, channel) pair). So U-Net settings can be compared on
one store in a fraction of a part's time; a probe is not a benchmark part (no VAEs, no drug shifts).

Writes ``results/statistical_cell_unet_probe_TAG.json`` and prints a table.

    python benchmarks/statistical_cell_unet_probe.py --run RUN --tag TAG [--epochs 7] [--lr 1e-3]
        [--channels 8,16,32,64] [--outputs per_label] [--seed 0] [--batch-size 16] [--lr-schedule cosine]
        [--activation identity] [--initial-output -1] [--steered-maps 4] [--trim 0.5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import torch

from common import print_table, write_result
from morphospace.evaluate import statistical_cell as stats
from morphospace.models.run import Run, load_run
from morphospace.models.statistical_cell import ExpectedTargetUNet
from morphospace.models.training import resolve_precision, with_lr_schedule
from morphospace.models.vae import squared_error_per_cell
from morphospace.workflows.statistical_cell import CouplingConfig, coupling_scores, coupling_truth

CONVENTION = ("U-Net trained alone on the run's training cells (its data module), squared error summed over "
              "pixels per cell, batch mean, Adam; reference-only coupling per (structure, channel) = mean over "
              "held-out cells (every one up to 500, seed 0; or their trimmed mean, settings.trim, 0.5 the median) "
              "of 1 - e(true) / mean over 8 same-structure partners of e(channel swapped), e = squared error "
              "between the observed structure and the U-Net's expected one; coupling_spearman: pooled "
              "tie-resolved Spearman r against the store's truth over every (structure, channel) pair")


class UNetAlone(pl.LightningModule):
    """An expected-structure network trained alone: reference (N, Cr, ...) and labels (N,) to the
    structure (N, Ct, ...), loss the per-cell squared error summed over pixels, batch mean."""

    def __init__(self, network: ExpectedTargetUNet, lr: float, lr_schedule: str = "constant") -> None:
        super().__init__()
        self.network, self.lr, self.lr_schedule = network, lr, lr_schedule

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        expected = self.network(batch["reference"], batch["structure"])
        loss = squared_error_per_cell(batch["image"], expected).mean()
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return with_lr_schedule(torch.optim.Adam(self.parameters(), lr=self.lr), self.trainer, self.lr_schedule)


def fresh_network(run: Run, channels: list[int], outputs: str, activation: str = "tanh",
                  steered_maps: int = 0, initial_output: float | None = None) -> ExpectedTargetUNet:
    """An untrained U-Net of the run's shapes, labels and label embedding, with ``channels`` per level,
    ``steered_maps`` maps steered by the reference's moments (``model.expected_target_steered_maps``)
    and its last bias at ``initial_output`` (``model.expected_target_initial_output``)."""
    module, cfg = run.module, run.module.cfg
    return ExpectedTargetUNet(cfg.spatial_dims, len(module.reference_channels), module.image_shape[0],
                              module.image_shape[1:], channels, len(module.structures), cfg.label_embedding_dim,
                              per_label=outputs == "per_label", activation=activation, steered_maps=steered_maps,
                              initial_output=initial_output)


def train_alone(run: Run, network: ExpectedTargetUNet, epochs: int, lr: float, lr_schedule: str = "constant") -> dict:
    """Train ``network`` on the run's training cells; returns seconds, steps and the last epoch's loss."""
    probe = UNetAlone(network, lr, lr_schedule)
    trainer = pl.Trainer(max_epochs=epochs, precision=resolve_precision(run.config.trainer.precision),
                         accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(probe, datamodule=run.data)
    return {"train_seconds": time.perf_counter() - start, "optimizer_steps": trainer.global_step,
            "last_epoch_loss": float(trainer.callback_metrics["loss"]), "precision": trainer.precision}


def probe_coupling(run: Run, network: ExpectedTargetUNet, trim: float = 0.0) -> tuple[pd.DataFrame, float]:
    """The reference-only coupling table with ``network`` as the run's expected structure (per-cell
    couplings summarised by the trimmed mean of ``trim``: 0 the mean, 0.5 the median), and its
    pooled tie-resolved Spearman r against the store's truth."""
    run.module.expected_network = network.eval()
    scores = coupling_scores(run, CouplingConfig(estimator="reference_only"), run.path)
    table = stats.coupling_table(scores.true, scores.swapped, scores.structures, seed=0, trim=trim)
    truth = coupling_truth(str(Path(run.config.data.store) / "truth"), run.module.reference_channels)
    spearman = stats.coupling_agreement(table, truth).loc["pooled", "spearman_ties_resolved"]
    table = table.merge(truth.rename(columns={"coupling": "truth"}), on=["structure", "channel"])
    return table, float(spearman)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a statistical_cell run trained with "
                                                                "model.expected_target: unet")
    parser.add_argument("--tag", required=True, help="suffix of the result name")
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--channels", default="8,16,32,64", help="U-Net channels per level")
    parser.add_argument("--outputs", choices=["shared", "per_label"], default="per_label")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network's initialisation and batches")
    parser.add_argument("--batch-size", type=int, help="cells per optimizer step (default: the run's)")
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    parser.add_argument("--activation", choices=["tanh", "identity"], default="tanh",
                        help="the U-Net's last activation")
    parser.add_argument("--steered-maps", type=int, default=0,
                        help="position maps steered by the reference's moments (model.expected_target_steered_maps)")
    parser.add_argument("--initial-output", type=float,
                        help="the U-Net's last bias at the start (model.expected_target_initial_output)")
    parser.add_argument("--trim", type=float, default=0.0,
                        help="share of a structure's per-cell couplings cut at each end (0: the mean; 0.5: the "
                             "median, as the 3D part)")
    args = parser.parse_args()
    run = load_run(args.run, "evaluate", "coupling")
    if run.module.cfg.expected_target != "unet":
        parser.error(f"{args.run}: the probe needs a run trained with model.expected_target: unet")
    run.module.gates = None  # the probe's network reads the reference whole, in training and in scoring
    if args.batch_size is not None:
        run.data.config = run.data.config.model_copy(update={"batch_size": args.batch_size})
    pl.seed_everything(args.seed, verbose=False)
    channels = [int(c) for c in args.channels.split(",")]
    network = fresh_network(run, channels, args.outputs, args.activation, args.steered_maps, args.initial_output)
    training = train_alone(run, network, args.epochs, args.lr, args.lr_schedule)
    table, spearman = probe_coupling(run, network, args.trim)
    rows = table[["structure", "channel", "truth", "coupling", "ci_low", "ci_high", "n_cells"]].to_dict("records")
    print_table(rows, f"reference-only coupling, U-Net alone ({args.tag})")
    print(f"coupling_spearman {spearman:.4f}; training {training['train_seconds']:.0f} s, "
          f"{training['optimizer_steps']} steps, last epoch's loss {training['last_epoch_loss']:.1f}")
    write_result(f"statistical_cell_unet_probe_{args.tag}", {
        "convention": CONVENTION, "run": str(args.run),
        "settings": {"epochs": args.epochs, "lr": args.lr, "channels": channels, "outputs": args.outputs,
                     "seed": args.seed, "batch_size": run.data.config.batch_size,
                     "lr_schedule": args.lr_schedule, "activation": args.activation, "steered_maps": args.steered_maps,
                     "initial_output": args.initial_output, "trim": args.trim},
        "training": training, "coupling_spearman": spearman, "coupling": rows})


if __name__ == "__main__":
    main()
