"""Nuclei segmentation U-Net on the real DSB2018 images, against the classical baseline on the same
test images.

Data: the 557 images (grey; colour images averaged, dark-on-bright images inverted, as for the
classical baseline) and their instance masks, written once as TIFFs with a manifest under
``benchmarks/work/dsb2018``. Split by image, fixed: 80% train (5% of those for validation), 20%
test, drawn with seed 0. Model: configs-style ``isl`` run (MONAI U-Net, soft Jaccard loss, random
128 px tiles with flips and rotations, per-image percentile normalisation), trained for
``--minutes`` of wall clock. Prediction: whole images by overlapping tiles, probability > 0.5,
distance-transform watershed (min distance 3 px, h 0.5, min area 10 px: the a-priori small-nuclei
setting of the classical benchmark).

Conventions: per test image, foreground IoU (1 when both masks are empty) and instance F1 at IoU >=
0.5 (Hungarian one-to-one matching); means over images and F1 from counts pooled over images. The
classical baseline (``segment_nuclei`` with the prepare defaults) is scored on the same test images.

    python benchmarks/dsb2018_unet.py [--data ../shared/data] [--minutes 15]
"""

from __future__ import annotations

import argparse
import json

import imageio.v3 as iio
import numpy as np
import pandas as pd
import torch

from common import ROOT, data_dir, print_table, write_result
from dsb2018_segmentation import SETTINGS, grayscale
from morphospace.evaluate.segmentation import pooled_scores, segmentation_scores
from morphospace.io.images import write_tiff
from morphospace.io.paired import normalize_image
from morphospace.models.registry import resolve_run_config
from morphospace.models.run import load_module
from morphospace.models.training import RunConfig
from morphospace.segment.nuclei import instances_from_probability, segment_nuclei
from morphospace.workflows.train import train as train_run

WATERSHED = dict(min_area=10, min_distance=3, h=0.5)


def _prepare(root, work) -> tuple[list[str], list[str]]:
    """Grey TIFFs, label TIFFs and a manifest of the training images; the test image ids."""
    index = pd.read_csv(root / "index.csv")
    ids = sorted(index["image_id"])
    order = np.random.default_rng(0).permutation(len(ids))
    test = sorted(ids[i] for i in order[: round(0.2 * len(ids))])
    train = sorted(set(ids) - set(test))
    manifest = work / "train_manifest.csv"
    if not manifest.is_file():
        for image_id in ids:
            image = grayscale(iio.imread(root / "images" / f"{image_id}.png"))
            labels = iio.imread(root / "labels" / f"{image_id}.png").astype(np.uint16)
            write_tiff(work / "images" / f"{image_id}.tiff", image)
            write_tiff(work / "labels" / f"{image_id}.tiff", labels)
        pd.DataFrame({"Metadata_FieldId": train, "FileName_Image": [f"images/{i}.tiff" for i in train],
                      "FileName_Nuclei": [f"labels/{i}.tiff" for i in train]}).to_csv(manifest, index=False)
    return train, test


def _config(work, minutes: float) -> RunConfig:
    return resolve_run_config({
        "name": "dsb2018_unet", "runs_dir": str(work / "runs"), "seed": 0,
        "data": {"manifest": str(work / "train_manifest.csv"),
                 "channels": {"inputs": ["Image"], "mask": "Nuclei"},
                 "normalization": {"method": "percentile", "low": 1.0, "high": 99.8},
                 "split": {"by": "field", "fractions": {"train": 0.95, "val": 0.05}},
                 "tiles": {"size": 128, "tiles_per_epoch": 1024, "batch_size": 8}},
        "model": {"family": "isl", "task": "segmentation", "net": {"arch": "unet", "channels": [32, 64, 128, 256]},
                  "loss": {"kind": "jaccard"}, "lr": 1e-3},
        "trainer": {"max_epochs": 1000, "max_minutes": minutes, "precision": "auto"},
    })


def _scores(rows: list[dict], name: str) -> dict:
    summary = pooled_scores(pd.DataFrame(rows))
    return {"method": name, "images": summary["images"], "mean_foreground_iou": summary["foreground_iou_mean"],
            "f1_at_0.5_pooled": summary["f1_pooled"], "f1_at_0.5_mean": summary["f1_mean"],
            "precision": summary["precision_pooled"], "recall": summary["recall_pooled"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--minutes", type=float, default=15.0, help="U-Net training budget")
    args = parser.parse_args()
    root = data_dir(args.data) / "dsb2018"
    work = ROOT / "work" / "dsb2018"
    train, test = _prepare(root, work)
    config = _config(work, args.minutes)
    summary = train_run(config, progress=False)
    _, model = load_module(config.run_dir)
    learned, classical = [], []
    normalization = config.data.normalization
    for image_id in test:
        image = grayscale(iio.imread(root / "images" / f"{image_id}.png"))
        truth = iio.imread(root / "labels" / f"{image_id}.png")
        field = torch.from_numpy(normalize_image(image, normalization))[None]
        probability = model.predict_field(field, tile=256, overlap=0.5)[0].numpy()
        learned.append(segmentation_scores(truth, instances_from_probability(probability, 0.5, **WATERSHED)))
        classical.append(segmentation_scores(truth, segment_nuclei(image, **SETTINGS["prepare defaults"])))
    rows = [_scores(learned, f"U-Net, soft Jaccard ({summary.epochs} epochs, {args.minutes:g} min)"),
            _scores(classical, "classical (prepare defaults)")]
    print_table(rows, f"DSB2018 nuclei segmentation, {len(test)} test images (IoU >= 0.5 matching)")
    path = write_result("dsb2018_unet", {
        "convention": "per test image foreground IoU (1 if both empty), mean over images; instance F1 at IoU>=0.5 "
                      "with Hungarian one-to-one matching, pooled counts and per-image mean; fixed split by image "
                      "(20% test, seed 0); both methods on the same test images",
        "split": {"train_images": len(train), "test_images": len(test)},
        "training": json.loads(summary.model_dump_json()), "watershed": WATERSHED, "rows": rows,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
