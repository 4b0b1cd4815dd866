"""Classical nuclei segmentation on the 557 real DSB2018 images: the baseline for learned models.

Method: :func:`morphospace.segment.nuclei.segment_nuclei` (Gaussian smoothing, Otsu threshold,
distance-transform watershed, size filter). Images whose Otsu foreground covers more than half
of the field are taken as dark-on-bright and inverted first. Two settings are reported: the
``prepare`` defaults (tuned for 20x cell-painting fields) and a setting adapted once to the smaller
DSB2018 nuclei (chosen a priori, not searched on the labels).

Conventions: per image, foreground IoU (1 when both masks are empty) and instance F1 at IoU >= 0.5
(one-to-one Hungarian matching); reported as means over images and as F1 from counts pooled over
all images.

    python benchmarks/dsb2018_segmentation.py [--data ../shared/data] [--workers 2]
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
from skimage.filters import threshold_otsu

from common import data_dir, print_table, write_result
from morphospace.evaluate.segmentation import pooled_scores, segmentation_scores
from morphospace.parallel import compute_context, run_parallel
from morphospace.segment.nuclei import segment_nuclei

SETTINGS = {
    "prepare defaults": dict(sigma=1.0, min_area=30, max_area=5000, min_distance=5, h=1.0),
    "small nuclei": dict(sigma=1.0, min_area=10, max_area=None, min_distance=3, h=0.5),
}


def grayscale(image: np.ndarray) -> np.ndarray:
    """Grey float32 (H, W) of a DSB2018 image: colours averaged, and inverted when its Otsu foreground
    covers more than half of the image (dark nuclei on a bright background)."""
    image = image.astype(np.float32)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=-1)
    if (image > threshold_otsu(image)).mean() > 0.5:
        image = image.max() - image
    return image


def _score(image_id: str, root: Path, setting: dict) -> dict:
    image = grayscale(iio.imread(root / "images" / f"{image_id}.png"))
    truth = iio.imread(root / "labels" / f"{image_id}.png")
    start = time.perf_counter()
    labels = segment_nuclei(image, **setting)
    seconds = time.perf_counter() - start
    return {"image_id": image_id, "seconds": seconds, **segmentation_scores(truth, labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, help="only the first N images (smoke test)")
    args = parser.parse_args()
    root = data_dir(args.data) / "dsb2018"
    index = pd.read_csv(root / "index.csv")
    ids = index["image_id"].tolist()[: args.limit]
    rows = []
    for name, setting in SETTINGS.items():
        with compute_context(args.workers) as client:
            results = dict(run_parallel(partial(_score, root=root, setting=setting), ids, client, desc=name))
        frame = pd.DataFrame([results[i] for i in range(len(ids))])
        summary = pooled_scores(frame)
        rows.append({"setting": name, "images": summary["images"], "mean_foreground_iou": summary["foreground_iou_mean"],
                     "f1_at_0.5_pooled": summary["f1_pooled"], "f1_at_0.5_mean": summary["f1_mean"],
                     "precision": summary["precision_pooled"], "recall": summary["recall_pooled"],
                     "seconds_per_image": float(frame["seconds"].mean())})
    print_table(rows, "Classical nuclei segmentation on DSB2018 (IoU >= 0.5 matching)")
    best = max(rows, key=lambda r: r["f1_at_0.5_pooled"])
    path = write_result("dsb2018_segmentation", {
        "convention": "foreground IoU per image (1 if both empty), mean over images; instance F1 at IoU>=0.5 "
                      "with Hungarian one-to-one matching, pooled counts and per-image mean",
        "settings": SETTINGS, "rows": rows, "baseline": best,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
