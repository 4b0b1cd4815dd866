"""The README's "bring your own crops" path on real nuclei, run as a new user would: every command
through the command line, built-in defaults, no settings beyond the data paths.

Collection: the DNA channel of the 1,000 all-MoA BBBC021 crops (`bbbc021_crops68_random1000_allmoa.npz`),
centre 64 x 64, scaled to 8 bits by the collection's 99.9th percentile and saved as one-channel PNGs,
one sub-folder per MoA (12 MoAs + DMSO): the layout of a phenotype-classified nuclei collection.

Path: ``import --folders`` -> ``features`` -> ``profiles --level cells`` -> ``evaluate clustering``
(CellProfiler Nuclei features) -> ``train vae_crops`` (its default 20 epochs) -> ``embed`` ->
``evaluate clustering`` (VAE embeddings) -> ``evaluate generation --labels`` -> ``report``.
Quality: cell-level SVM 5-fold accuracy and V-measure of the MoA label (DMSO cells left out, as
``evaluate clustering`` does by default), beside the share of the largest class (what predicting it
for every cell scores). One nucleus rarely shows its MoA, so
accuracies are low for any representation; the point is that the path runs on defaults and that
features and embeddings carry the label above the majority baseline.

    python benchmarks/own_crops_bbbc021.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from common import data_dir, print_table, write_result

LABEL = "Metadata_MoA"


def write_collection(npz: Path, out: Path, size: int = 64) -> dict[str, int]:
    """One-channel 8-bit PNG nuclei of the crop file, one sub-folder per MoA; returns the counts."""
    with np.load(npz) as archive:
        images, moas = archive["images"], archive["moa"].astype(str)
    start = (images.shape[1] - size) // 2
    dna = images[:, start:start + size, start:start + size, 0].astype(np.float64)
    scaled = np.clip(dna / np.percentile(dna, 99.9) * 255, 0, 255).astype(np.uint8)
    counts: dict[str, int] = {}
    for index, (image, moa) in enumerate(zip(scaled, moas)):
        folder = out / moa.replace("/", "-").replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        iio.imwrite(folder / f"nucleus_{index:04d}.png", image)
        counts[folder.name] = counts.get(folder.name, 0) + 1
    return counts


def run(command: list[str], cwd: Path) -> tuple[float, str]:
    """Run ``morphospace COMMAND`` in ``cwd``; returns the seconds it took and its summary line."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "morphospace", "--no-progress", *command], cwd=cwd,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`morphospace {' '.join(command)}` failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="real data folder (default ../shared/data)")
    args = parser.parse_args()
    npz = data_dir(args.data) / "bbbc021" / "bbbc021_crops68_random1000_allmoa.npz"
    work = Path(tempfile.mkdtemp(prefix="own_crops_"))
    counts = write_collection(npz, work / "my_crops")
    commands = [
        ["import", "--folders", "my_crops", "--label-column", LABEL, "--out", "my_store"],
        ["features", "--store", "my_store", "--out", "my_cells.parquet"],
        ["profiles", "--features", "my_cells.parquet", "--out", "my_profiles.parquet", "--level", "cells"],
        ["evaluate", "clustering", "--table", "my_profiles.parquet", "--label", LABEL, "--out", "eval_features"],
        ["train", "vae_crops", "--set", "data.store=my_store"],
        ["embed", "--run", "runs/vae_crops", "--out", "my_embeddings.parquet"],
        ["evaluate", "clustering", "--table", "my_embeddings.parquet", "--label", LABEL, "--out", "eval_vae"],
        ["evaluate", "generation", "--run", "runs/vae_crops", "--labels", LABEL],
        ["report", "--run", "runs/vae_crops"],
    ]
    steps = []
    for command in commands:
        seconds, line = run(command, work)
        steps.append({"command": "morphospace " + " ".join(command), "seconds": round(seconds, 1), "line": line})
        print(f"{seconds:7.1f} s  {line}")
    measured = json.loads((work / "my_cells.parquet.json").read_text())
    clustering = {name: json.loads((work / folder / "clustering.json").read_text())
                  for name, folder in (("cellprofiler_nuclei", "eval_features"), ("vae_embedding", "eval_vae"))}
    generation = json.loads((work / "runs" / "vae_crops" / "evaluation" / "generation.json").read_text())
    rows = [{"representation": name, "svm_accuracy": c["svm_accuracy"], "svm_folds": c["svm_folds"],
             "kmeans_v_measure": next(iter(c["metrics"].values()))["V-measure"]} for name, c in clustering.items()]
    scored = {label: n for label, n in counts.items() if label != "DMSO"}  # evaluate clustering leaves out DMSO
    majority = max(scored.values()) / sum(scored.values())
    rows.append({"representation": "largest class for every cell", "svm_accuracy": majority, "svm_folds": None,
                 "kmeans_v_measure": None})
    print_table(rows, f"cell-level MoA label from one nucleus ({sum(scored.values())} cells, {len(scored)} MoAs; "
                      "DMSO left out as evaluate clustering does by default)")
    print_table([{k: s[k] for k in ("command", "seconds")} for s in steps], "commands")
    path = write_result("own_crops_bbbc021", {
        "convention": "every command through the CLI with built-in defaults and no --set beyond data.store; "
                      "clustering: cell-level rows, SVM k-fold accuracy and the V-measure of K-means with k = the "
                      "number of labels, against the folder label (MoA), DMSO cells left out (the default); baseline = share of "
                      "the largest class among the scored cells",
        "classes": counts, "objects_measured": measured.get("objects"),
        "objects_not_measured": measured.get("objects_not_measured"), "steps": steps, "clustering": rows,
        "generation": {"fid": generation["in_domain"]["fid"], "kid_mean": generation["in_domain"]["kid_mean"],
                       "extractor_training": generation.get("extractor_training")},
    })
    print(f"written {path}")


if __name__ == "__main__":
    main()
