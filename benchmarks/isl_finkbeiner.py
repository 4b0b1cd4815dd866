"""In silico labeling on the real Finkbeiner field: 13 phase-contrast z-planes -> DAPI, MAP2, NFH.

The field (1024 x 1024) is split spatially by ``configs/isl_finkbeiner.yaml``: left 65% train, next
15% validation, right 20% test. Each run trains for ``--minutes`` of wall clock from that config
with the loss and network given, then is scored on the test band by ``evaluate isl`` (crops of
``--crop`` px; per-crop PCC split by empty / non-empty target, SSIM, PSNR, nuclei Jaccard for DAPI).
The seed's numbers (DAPI from brightfield + phase on its own data, L1): U-Net 0.933, U-Net with a
pretrained DenseNet-121 encoder 0.952 test PCC on non-empty crops.

    python benchmarks/isl_finkbeiner.py [--data ../shared/data] [--minutes 15] [--losses l1,pix2pix,perceptual]
"""

from __future__ import annotations

import argparse

import pandas as pd

from common import ROOT, data_dir, print_table, write_result
from morphospace.config import load_config
from morphospace.workflows.isl import ISLTrainConfig, train_isl
from morphospace.workflows.isl_inference import InferenceConfig, evaluate_isl_run

TARGETS = {"DAPI": "dapi", "MAP2": "map2", "NFH": "nfh"}
SEED_DAPI_PCC = {"unet": 0.933, "pretrained-encoder unet": 0.952}


def _manifest(field_dir, work) -> str:
    row = {"Metadata_FieldId": "finkbeiner"}
    row |= {f"FileName_Phase{z:02d}": str(field_dir / f"phase_contrast_z{z:02d}.png") for z in range(13)}
    row |= {f"FileName_{name}": str(field_dir / f"{stem}_confocal_maxproj.png") for name, stem in TARGETS.items()}
    path = work / "manifest.csv"
    work.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(path, index=False)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per run")
    parser.add_argument("--losses", default="l1,pix2pix,perceptual")
    parser.add_argument("--archs", default="unet", help="unet and/or flexible_unet")
    parser.add_argument("--crop", type=int, default=64, help="evaluation crop side, px")
    args = parser.parse_args()
    work = ROOT / "work" / "isl_finkbeiner"
    manifest = _manifest(data_dir(args.data) / "isl_finkbeiner", work)
    rows, details = [], {}
    for arch in [a for a in args.archs.split(",") if a]:
        for loss in [k for k in args.losses.split(",") if k]:
            config = load_config(ISLTrainConfig, ROOT.parent / "configs" / "isl_finkbeiner.yaml", [
                f"name=isl_finkbeiner_{loss}_{arch}", f"runs_dir={work / 'runs'}", f"data.manifest={manifest}",
                f"model.loss.kind={loss}", f"model.net.arch={arch}", f"trainer.max_minutes={args.minutes}"])
            summary = train_isl(config, progress=False)
            evaluation = evaluate_isl_run(config.run_dir, settings=InferenceConfig(tile=256, crop_size=args.crop))
            details[f"{arch}/{loss}"] = {"training": summary.model_dump(mode="json"), "scores": evaluation.scores}
            row = {"network": arch, "loss": loss, "epochs": summary.epochs,
                   "tiles_per_s": round(summary.tiles_per_second, 1)}
            for name, pcc in evaluation.scores["pcc"].items():
                row[f"{name}_pcc_non_empty"] = pcc["non_empty"]["mean"]
                row[f"{name}_pcc_empty"] = pcc["empty"]["mean"]
            rows.append(row)
    print_table(rows, f"Finkbeiner field, test band (right 20%), {args.crop} px crops, {args.minutes:g} min per run")
    path = write_result("isl_finkbeiner", {
        "convention": (f"per-crop Pearson correlation on {args.crop} px crops of the test band (right 20% of the "
                       "field; never seen in training), split by empty / non-empty target crops (under 0.5% of "
                       "pixels above z-score 2); targets z-scored per image"),
        "seed_dapi_pcc_non_empty": SEED_DAPI_PCC, "rows": rows, "runs": details,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
