"""Speed of in-silico-labeling training and whole-field inference: morphospace against a bare
PyTorch loop of the same network, with fp32 and with bf16 autocast, in one process.

Network and data: the built-in config isl_finkbeiner (MONAI UNet 32-512, 13 phase planes -> DAPI, MAP2,
NFH, L1 loss, 128 px tiles, batch 8) on the real Finkbeiner field. Training: tiles/s after one
warm-up batch; morphospace = ``train`` (Lightning fit loop, tiles cut and augmented on the fly);
bare = the same network and L1 loss with plain Adam steps on the same tiles held in memory.
Inference: seconds for the whole 1024 x 1024 field; morphospace = ``predict_field`` (MONAI sliding
window, 256 px tiles, Gaussian blending, overlap 0.5 by default and 0 for a like-for-like
comparison); bare = a loop over the 16 non-overlapping 256 px tiles, and one forward pass of the
whole field. Median of ``--repeats`` timings after a warm-up.

    python benchmarks/isl_speed.py [--data ../shared/data] [--batches 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from common import data_dir, print_table, write_result
from isl_finkbeiner import finkbeiner_manifest
from morphospace.data.tiles import PairedDataModule, load_fields
from morphospace.models.isl import ImageToImage
from morphospace.models.registry import load_run_config, resolve_run_config
from morphospace.models.training import RunConfig
from morphospace.workflows.train import train

TILE = 256


def _bare_tiles_per_second(model: ImageToImage, batches: list[dict], bf16: bool) -> float:
    net = model.net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=model.cfg.lr, betas=model.cfg.betas)

    def step(batch: dict) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.l1_loss(net(batch["input"]), batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    return sum(len(b["input"]) for b in batches[1:]) / (time.perf_counter() - start)


def _morphospace_tiles_per_second(config: RunConfig, n_batches: int, bf16: bool, runs: Path) -> float:
    run = resolve_run_config(config.to_dict(), [
        f"name=isl_speed_{'bf16' if bf16 else 'fp32'}", f"runs_dir={runs}", f"trainer.max_steps={n_batches + 1}",
        f"data.tiles.tiles_per_epoch={(n_batches + 1) * config.data.tiles.batch_size}", "trainer.max_minutes=null",
        f"trainer.precision={'bf16-mixed' if bf16 else '32-true'}"])
    return train(run, progress=False).samples_per_second


def _seconds(function: Callable[[], object], repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bare_tiles(net: torch.nn.Module, field: torch.Tensor) -> torch.Tensor:
    """Non-overlapping 256 px tiles of a field whose sides are multiples of 256, in a plain loop."""
    output = None
    with torch.no_grad():
        for y in range(0, field.shape[-2], TILE):
            for x in range(0, field.shape[-1], TILE):
                tile = net(field[None, :, y:y + TILE, x:x + TILE])[0].float()
                if output is None:
                    output = field.new_zeros((tile.shape[0], *field.shape[-2:]))
                output[:, y:y + TILE, x:x + TILE] = tile
    return output


def _inference_rows(model: ImageToImage, field: torch.Tensor, repeats: int) -> list[dict]:
    model.eval()
    net = model.net
    rows = []
    for bf16 in (False, True):
        def autocast():
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

        def whole():
            with torch.no_grad(), autocast():
                return net(field[None])

        def tiles():
            with autocast():
                return _bare_tiles(net, field)

        row = {"precision": "bf16" if bf16 else "fp32",
               "bare_whole_field_s": _seconds(whole, repeats), "bare_tiles_s": _seconds(tiles, repeats)}
        for overlap in (0.0, 0.5):
            row[f"morphospace_overlap_{overlap:g}_s"] = _seconds(
                lambda: model.predict_field(field, TILE, overlap, batch_size=4, bf16=bf16), repeats)
        row["ratio_overlap_0"] = row["bare_tiles_s"] / row["morphospace_overlap_0_s"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--batches", type=int, default=20, help="timed training batches per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timed whole-field predictions per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = finkbeiner_manifest(data_dir(args.data) / "isl_finkbeiner", tmp)
        config = load_run_config("isl_finkbeiner", [f"data.manifest={manifest}"])
        fields = load_fields(config.data)
        data = PairedDataModule(fields, config.data.split, config.data.tiles, config.seed)
        batches = list(itertools.islice(data.train_dataloader(), args.batches + 1))
        inputs, outputs = fields[0].inputs.shape[0], fields[0].targets.shape[0]
        training = []
        for bf16 in (False, True):
            torch.manual_seed(0)
            bare = _bare_tiles_per_second(ImageToImage(config.model.to_dict(), inputs, outputs), batches, bf16)
            ours = _morphospace_tiles_per_second(config, args.batches, bf16, tmp / "runs")
            training.append({"precision": "bf16" if bf16 else "fp32", "bare_tiles_per_s": bare,
                             "morphospace_tiles_per_s": ours, "ratio": ours / bare})
        torch.manual_seed(0)
        model = ImageToImage(config.model.to_dict(), inputs, outputs)
        inference = _inference_rows(model, torch.from_numpy(fields[0].inputs), args.repeats)
    print_table(training, f"training tiles/s (128 px, batch 8, {args.batches} timed batches, "
                          f"{torch.get_num_threads()} threads): morphospace vs bare loop")
    print_table(inference, "whole 1024 x 1024 field inference, seconds (256 px tiles; ratio = bare / morphospace)")
    convention = ("training: tiles/s over the same tiles after one warm-up batch (morphospace includes cutting and "
                  "augmenting tiles; bare uses them from memory), ratio = morphospace / bare; inference: median "
                  "seconds of repeated whole-field predictions after a warm-up, ratio_overlap_0 = bare tiles / "
                  "morphospace at overlap 0 (same 16 tiles plus Gaussian blending); bf16 = torch.autocast(cpu, "
                  "bfloat16)")
    result = {"convention": convention, "training": training, "inference": inference}
    print(f"\nwritten {write_result('isl_speed', result)}")


if __name__ == "__main__":
    main()
