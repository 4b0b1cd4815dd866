"""Multi-process training on one machine: images/s of 2-process DDP (gloo) against 1 process, on the
real BBBC021 DMSO crops, measured in the same run.

Each measurement is ``morphospace train <model>_bbbc021`` in a fresh process for
``--epochs`` epochs of the 5,318 DMSO crops (64 x 64, batch 64 per process, fp32 so that both sides
compute alike): 1 process with all cores as torch threads, or ``--set trainer.devices=2
trainer.strategy=ddp trainer.accelerator=cpu`` (Lightning gives each process cores / 2 threads).
images/s is the run's ``summary.json`` ``samples_per_second``: every process's crops after the
first (warm-up) batch over the fit loop's time. With 2 processes each step sees 2 x 64 crops, so an
epoch has half the optimiser steps. Runs alternate (1, 2, 1, 2 ...) and the table gives the median
of ``--repeats`` runs per setting; ratio = 2-process images/s / 1-process images/s.

    python benchmarks/ddp_speed.py [--data ../shared/data] [--models vae,lsgan] [--epochs 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import data_dir, print_table, write_result
from morphospace.io.importers import import_npz

SETTINGS = {1: [], 2: ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu"]}


def _run(model: str, store: Path, runs: Path, name: str, epochs: int, processes: int) -> dict:
    overrides = [f"data.store={store}", f"runs_dir={runs}", f"name={name}", f"trainer.max_epochs={epochs}",
                 "trainer.precision=32-true", "trainer.sample_every_n_epochs=1000", *SETTINGS[processes]]
    command = [sys.executable, "-m", "morphospace", "--no-progress", "train",
               f"{model}_bbbc021", *[a for o in overrides for a in ("--set", o)]]
    env = {key: value for key, value in os.environ.items()
           if key not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "OMP_NUM_THREADS")}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads((runs / name / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--models", default="vae,lsgan")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = import_npz(data_dir(args.data) / "bbbc021" / "bbbc021_crops68_dmso_6plates.npz", tmp / "store",
                           ["DNA", "Actin", "Tubulin"], progress=False).path
        for model in [m for m in args.models.split(",") if m]:
            speeds = {1: [], 2: []}
            for repeat in range(args.repeats):
                for processes in (1, 2):
                    summary = _run(model, store, tmp / "runs", f"{model}_{processes}p_{repeat}", args.epochs, processes)
                    speeds[processes].append(summary["samples_per_second"])
                    runs.append({"model": model, "processes": processes, "repeat": repeat,
                                 "images_per_s": summary["samples_per_second"], "steps": summary["optimizer_steps"],
                                 "torch_threads": summary["torch_threads"],
                                 "final_metrics": {k: v for k, v in summary["metrics"].items()
                                                   if k.endswith("_epoch")}})
            one, two = statistics.median(speeds[1]), statistics.median(speeds[2])
            rows.append({"model": model, "images_per_s_1_process": one, "images_per_s_2_processes": two,
                         "ratio_2_vs_1": two / one})
    print_table(rows, f"training images/s on {os.cpu_count()} CPU cores, BBBC021 DMSO crops, {args.epochs} epoch(s), "
                      f"median of {args.repeats}")
    path = write_result("ddp_speed", {
        "convention": ("images/s = summary.json samples_per_second of a fresh `morphospace train` process: all "
                       "processes' crops after the first batch over the fit loop's time; fp32, batch 64 per process; "
                       "1 process uses every core as torch threads, 2-process DDP (gloo) gives each process half; "
                       "ratio = 2-process / 1-process, medians over repeats run alternately in one session"),
        "epochs": args.epochs, "repeats": args.repeats, "rows": rows, "runs": runs,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
