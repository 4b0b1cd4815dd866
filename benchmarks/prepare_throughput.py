"""Throughput and memory of ``prepare`` on a simulated screen.

(1) fields/s and cells/s with 1 worker (in-process) and 2 workers (local dask cluster), and their
ratio; (2) peak resident memory of a whole ``prepare`` run on 10 and on 40 fields (1 worker, each
in a fresh subprocess), to show that memory does not grow with the number of fields.

    python benchmarks/prepare_throughput.py [--field-size 512] [--fields 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from common import print_table, write_result
from morphospace.simulate import SimulateConfig, simulate_screen
from morphospace.workflows.prepare import prepare

_MEMORY_PROBE = """
import json, resource, sys
from morphospace.workflows.prepare import prepare
summary = prepare(sys.argv[1], sys.argv[2], workers=1, progress=False)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"cells": summary.n_cells, "fields": summary.n_fields, "peak_kib": peak_kib}))
"""


def _screen(root: Path, field_size: int, n_fields: int, seed: int) -> Path:
    """A one-plate screen with at least ``n_fields`` fields at BBBC021-like cell density."""
    density = 14 / 256**2
    config = SimulateConfig(plates=1, field_size=field_size, cells_per_field=density * field_size**2,
                            compounds_per_moa=1, concentrations=3, dmso_wells_per_plate=4, seed=seed)
    simulate_screen(config, root, workers=2, progress=False)
    return root / "manifest.csv"


def _subset(manifest: Path, n: int, out: Path) -> Path:
    frame = pd.read_csv(manifest).head(n)
    frame["FileName_DNA"] = [str(manifest.parent / p) for p in frame["FileName_DNA"]]
    for column in ("FileName_Actin", "FileName_Tubulin"):
        frame[column] = [str(manifest.parent / p) for p in frame[column]]
    frame.to_csv(out, index=False)
    return out


def _peak_memory(manifest: Path, store: Path) -> tuple[float, dict]:
    """Peak RSS in MiB of a fresh process running prepare in-process (Linux ru_maxrss is in KiB)."""
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(manifest), str(store)], check=True,
                            capture_output=True, text=True)
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    return counts["peak_kib"] / 1024, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--field-size", type=int, default=512)
    parser.add_argument("--fields", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = _subset(_screen(tmp / "screen", args.field_size, args.fields, args.seed), args.fields,
                           tmp / "manifest.csv")
        speed = []
        for workers in (1, 2):
            start = time.perf_counter()
            summary = prepare(manifest, tmp / f"store_{workers}", workers=workers, progress=False)
            seconds = time.perf_counter() - start
            speed.append({"workers": workers, "fields": summary.n_fields, "cells": summary.n_cells,
                          "seconds": seconds, "fields_per_s": summary.n_fields / seconds,
                          "cells_per_s": summary.n_cells / seconds})
        for row in speed:
            row["speedup_vs_1_worker"] = speed[0]["seconds"] / row["seconds"]
        memory = []
        for n in (10, args.fields):
            small = _subset(manifest, n, tmp / f"manifest_{n}.csv")
            peak, counts = _peak_memory(small, tmp / f"store_mem_{n}")
            memory.append({"fields": n, "cells": counts["cells"], "peak_rss_mib": peak})
        memory[1]["ratio_to_10_fields"] = memory[1]["peak_rss_mib"] / memory[0]["peak_rss_mib"]
        memory[0]["ratio_to_10_fields"] = 1.0
    print_table(speed, f"prepare throughput, {args.field_size}x{args.field_size} px fields (all steps on)")
    print_table(memory, "peak resident memory of a prepare run, 1 worker, fresh process")
    path = write_result("prepare_throughput", {
        "convention": "wall-clock seconds of a whole prepare run (QC, illumination, corrections, segmentation, "
                      "crops, store); 1 worker = in-process, 2 = local dask cluster incl. its start-up; "
                      "peak RSS (getrusage ru_maxrss) of a fresh process running prepare in-process",
        "field_size": args.field_size, "speed": speed, "memory": memory,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
