"""In silico labeling on the real Finkbeiner field: 13 phase-contrast z-planes -> DAPI, MAP2, NFH.

The field (1024 x 1024) is split spatially by the built-in config ``isl_finkbeiner``: left 65% train, next
15% validation, right 20% test. Each run trains for ``--epochs`` epochs of 512 tiles (the same data
for every run, whatever else shares the machine) or ``--minutes`` of wall clock from that config
with the loss and network given, then is scored on the test band by ``evaluate isl`` (crops of each
``--crops`` side; per-crop PCC split by empty / non-empty target, SSIM, PSNR, nuclei Jaccard for DAPI).
Runs that already finished are reused (delete ``work/isl_finkbeiner/runs`` to retrain). The figure
shows phase, truth and every prediction on the test-band window with the most nuclei.
The seed's numbers (DAPI from brightfield + phase on its own data, L1): U-Net 0.933, U-Net with a
pretrained DenseNet-121 encoder 0.952 test PCC on non-empty crops.

    python benchmarks/isl_finkbeiner.py [--data ../shared/data] [--minutes 15] [--epochs 12] [--losses l1,pix2pix,perceptual]
        [--archs unet,flexible_unet] [--crops 64,128]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from common import RESULTS, ROOT, data_dir, print_table, write_result
from morphospace.data.tiles import load_fields
from morphospace.evaluate.isl import InferenceConfig
from morphospace.explore.figures import save_figure
from morphospace.models.registry import load_run_config, read_run_config
from morphospace.models.run import load_module
from morphospace.models.training import TrainSummary
from morphospace.workflows.isl import evaluate_isl_run
from morphospace.workflows.train import trained

TARGETS = {"DAPI": "dapi", "MAP2": "map2", "NFH": "nfh"}
SEED_DAPI_PCC = {"unet": 0.933, "pretrained-encoder unet": 0.952}


def finkbeiner_manifest(field_dir: Path, work: Path, extra: dict[str, str] | None = None) -> str:
    """A one-row paired manifest of the field (13 phase planes, three targets, ``extra`` columns) in ``work``."""
    row = {"Metadata_FieldId": "finkbeiner"}
    row |= {f"FileName_Phase{z:02d}": str(field_dir / f"phase_contrast_z{z:02d}.png") for z in range(13)}
    row |= {f"FileName_{name}": str(field_dir / f"{stem}_confocal_maxproj.png") for name, stem in TARGETS.items()}
    path = work / "manifest.csv"
    work.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row | (extra or {})]).to_csv(path, index=False)
    return str(path)


def _row(arch: str, loss: str, summary: TrainSummary, crop: int, scores: dict) -> dict:
    row = {"network": arch, "loss": loss, "crop": crop, "epochs": summary.epochs,
           "tiles_per_s": round(summary.samples_per_second, 1)}
    for name, pcc in scores["pcc"].items():
        row[f"{name}_non_empty"] = pcc["non_empty"]["mean"]
        row[f"{name}_n"] = pcc["non_empty"]["n"]
        row[f"{name}_empty"] = pcc["empty"]["mean"]
    row["DAPI_jaccard"] = scores["targets"]["DAPI"]["nuclei_jaccard"]["mean"]
    return row


def _window(truth: np.ndarray, region: list[int], height: int = 384) -> tuple[slice, slice]:
    """The ``height`` px tall window of the test band with the most DAPI signal (z-score > 2)."""
    y0, y1, x0, x1 = region
    starts = range(y0, y1 - height + 1, 32)
    best = max(starts, key=lambda y: float((truth[0, y:y + height, x0:x1] > 2).sum()))
    return slice(best, best + height), slice(x0, x1)


def _figure(runs: dict[str, Path], path: Path) -> None:
    """Phase (middle plane), truth and every run's prediction on a window of the test band, one row per target."""
    first = next(iter(runs.values()))
    config = read_run_config(first)
    field = load_fields(config.data)[0]
    rows, columns = _window(field.targets, json.loads((first / "regions.json").read_text())["test"][0]["region"])
    predictions = {}
    for label, run in runs.items():
        _, model = load_module(run)
        predictions[label] = model.predict_field(torch.from_numpy(field.inputs), 256, 0.5).numpy()
    names = config.data.channels.targets
    fig = Figure(figsize=(1.6 * (2 + len(runs)), 3.2 * len(names)))
    axes = fig.subplots(len(names), 2 + len(runs), squeeze=False)
    for r, name in enumerate(names):
        truth = field.targets[r, rows, columns]
        low, high = np.percentile(truth, [1, 99.7])
        panels = {"phase z06": field.inputs[6, rows, columns], f"{name} truth": truth}
        panels |= {label: p[r, rows, columns] for label, p in predictions.items()}
        for ax, (title, image) in zip(axes[r], panels.items()):
            limits = {} if title.startswith("phase") else {"vmin": low, "vmax": high}
            ax.imshow(image, cmap="gray", **limits)
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per run (with --epochs: a cap)")
    parser.add_argument("--epochs", type=int, help="train every run for this many epochs of 512 tiles (equal data)")
    parser.add_argument("--losses", default="l1,pix2pix,perceptual")
    parser.add_argument("--archs", default="unet,flexible_unet", help="unet and/or flexible_unet")
    parser.add_argument("--crops", default="64,128", help="evaluation crop sides, px")
    args = parser.parse_args()
    work = ROOT / "work" / "isl_finkbeiner"
    manifest = finkbeiner_manifest(data_dir(args.data) / "isl_finkbeiner", work)
    crops = [int(c) for c in args.crops.split(",") if c]
    rows, details, runs = [], {}, {}
    for arch in [a for a in args.archs.split(",") if a]:
        for loss in [k for k in args.losses.split(",") if k]:
            config = load_run_config("isl_finkbeiner", [
                f"name=isl_finkbeiner_{loss}_{arch}", f"runs_dir={work / 'runs'}", f"data.manifest={manifest}",
                f"model.loss.kind={loss}", f"model.net.arch={arch}", f"trainer.max_minutes={args.minutes}",
                f"trainer.max_epochs={args.epochs or 1000}"])
            summary = trained(config, progress=False)
            runs[f"{arch} {loss}"] = config.run_dir
            details[f"{arch}/{loss}"] = {"training": summary.model_dump(mode="json"), "scores": {}}
            for crop in crops:
                evaluation = evaluate_isl_run(config.run_dir, config.run_dir / f"evaluation_{crop}px", overwrite=True,
                                              settings=InferenceConfig(tile=256, crop_size=crop))
                details[f"{arch}/{loss}"]["scores"][f"{crop}px"] = evaluation.scores
                rows.append(_row(arch, loss, summary, crop, evaluation.scores))
    figure = RESULTS / "isl_finkbeiner.png"
    _figure(runs, figure)
    rows.sort(key=lambda row: row["crop"])
    budget = f"{args.epochs} epochs (at most {args.minutes:g} min)" if args.epochs else f"{args.minutes:g} min"
    print_table(rows, f"Finkbeiner field, test band (right 20%): mean PCC on non-empty crops, {budget} per run")
    path = write_result("isl_finkbeiner", {
        "convention": ("per-crop Pearson correlation on the regular crops of the test band (right 20% of the field; "
                       "never seen in training) at each crop side, split by empty / non-empty target crops (under "
                       "0.5% of pixels above z-score 2; *_n = non-empty crops); targets z-scored per image; "
                       "DAPI_jaccard: nuclei segmented on predicted vs real DAPI, mean over all crops (1 when both empty)"),
        "budget_per_run": budget, "seed_dapi_pcc_non_empty": SEED_DAPI_PCC, "rows": rows, "runs": details,
        "figure": str(figure.relative_to(ROOT)),
    })
    print(f"\nwritten {path} and {figure}")


if __name__ == "__main__":
    main()
