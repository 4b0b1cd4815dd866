"""Few-shot nuclei segmentation on the Finkbeiner field: phase contrast -> nuclei masks, trained on N
tiles from random weights and from the DAPI in-silico-labeling model (the seed's Figure 27).

Truth masks come from segmenting the field's real DAPI (``segment_nuclei``, Otsu + watershed,
sigma 2 px). The built-in ``fewshot_finkbeiner`` config trains ``nuclei_finkbeiner`` on N = 1, 2,
5, 10, 50 fixed 128 px tiles of the training band (each holding a nucleus) and on random tiles of the
whole band, ``--steps`` optimiser steps each, and scores every run on the same 64 px crops of the test
band (right 20%). The pretrained start is the L1 U-Net of ``isl_finkbeiner.py`` (run that first).
Seed (its own data, 512 px crops): Jaccard 0.795 pretrained vs 0.482 from scratch with one training
image; 0.923 with all 554 images.

    python benchmarks/fewshot_finkbeiner.py [--data ../shared/data] [--steps 300]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import imageio.v3 as iio

from common import RESULTS, ROOT, data_dir, print_table, write_result
from isl_finkbeiner import finkbeiner_manifest
from morphospace.config import load_config
from morphospace.io.images import write_tiff
from morphospace.segment.nuclei import segment_nuclei
from morphospace.workflows.fewshot import FewShotConfig, run_fewshot

SEED_JACCARD = {"one image, pretrained": 0.795, "one image, scratch": 0.482, "all 554 images": 0.923}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per run")
    parser.add_argument("--pretrained", default=str(ROOT / "work" / "isl_finkbeiner" / "runs" / "isl_finkbeiner_l1_unet"),
                        help="finished L1 U-Net run of isl_finkbeiner.py")
    args = parser.parse_args()
    pretrained = Path(args.pretrained).resolve()
    if not (pretrained / "checkpoints" / "last.ckpt").is_file():
        raise SystemExit(f"{args.pretrained}: no finished run; run benchmarks/isl_finkbeiner.py --losses l1 first")
    field_dir = data_dir(args.data) / "isl_finkbeiner"
    work = ROOT / "work" / "fewshot_finkbeiner"
    dapi = iio.imread(field_dir / "dapi_confocal_maxproj.png").astype("float32")
    labels = segment_nuclei(dapi, sigma=2.0, min_area=30)
    write_tiff(work / "nuclei_labels.tiff", labels.astype("uint16"))
    manifest = finkbeiner_manifest(field_dir, work, {"FileName_NucleiLabels": str(work / "nuclei_labels.tiff")})
    config = load_config(FewShotConfig, "fewshot_finkbeiner", [
        f"runs_dir={work / 'runs'}", f"segmentation={'nuclei_finkbeiner'}",
        f"overrides=['data.manifest={manifest}']", f"pretrained_run={pretrained}", f"steps={args.steps}"])
    table = run_fewshot(config)
    figure = RESULTS / "fewshot_finkbeiner.png"
    shutil.copyfile(config.out_dir / "fewshot.png", figure)
    rows = table.drop(columns="run").to_dict("records")
    print_table(rows, f"Few-shot nuclei segmentation, Finkbeiner test band, 64 px crops, {args.steps} steps per run")
    path = write_result("fewshot_finkbeiner", {
        "convention": ("mean foreground IoU (Jaccard) of 0.5-thresholded probabilities against DAPI-derived masks "
                       "over the 64 px crops of the test band (right 20% of the field), 1 when both are empty; also "
                       "over crops with nuclei only, and instance F1 at IoU 0.5 (pooled, watershed instances)"),
        "truth": f"segment_nuclei(DAPI, sigma=2, min_area=30): {int(labels.max())} nuclei in the field",
        "seed_jaccard": SEED_JACCARD, "steps": args.steps, "rows": rows, "figure": str(figure.relative_to(ROOT)),
    })
    print(f"\nwritten {path} and {figure}")


if __name__ == "__main__":
    main()
