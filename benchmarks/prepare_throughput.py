"""Throughput and memory of ``prepare`` on a simulated screen.

(1) fields/s and cells/s with 1 worker (in-process) and 2 workers (local dask cluster), and their
ratio ``prepare_2w_vs_1w``; (2) peak resident memory of a whole ``prepare`` run on 10 and on 40
fields (1 worker, each in a fresh subprocess), and of each worker of a fresh 2-worker cluster, to
show that memory does not grow with the number of fields.

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
from morphospace.parallel import compute_context
from morphospace.simulate import SimulateConfig, simulate_screen
from morphospace.workflows.prepare import prepare

_MEMORY_PROBE = """
import json, sys
from morphospace.workflows.prepare import prepare
sys.path.insert(0, sys.argv[3])
from prepare_throughput import peak_rss_kib
summary = prepare(sys.argv[1], sys.argv[2], workers=1, progress=False)
print(json.dumps({"cells": summary.n_cells, "fields": summary.n_fields, "peak_kib": peak_rss_kib()}))
"""


def peak_rss_kib() -> int:
    """Peak resident memory of this process since it started, in KiB (Linux ``VmHWM``). Unlike
    ``getrusage``'s ``ru_maxrss``, which a spawned process inherits from its parent, it counts only
    this process's own memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmHWM (not Linux?)")


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
    """Peak RSS in MiB of a fresh process running prepare in-process."""
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(manifest), str(store),
                             str(Path(__file__).parent)], check=True,
                            capture_output=True, text=True)
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    return counts["peak_kib"] / 1024, counts


def _worker_peak_memory(manifest: Path, store: Path) -> tuple[list[float], int]:
    """Peak RSS in MiB of each worker of a fresh 2-worker local cluster that ran prepare, and the cells."""
    with compute_context(workers=2) as client:
        summary = prepare(manifest, store, scheduler=client.scheduler.address, progress=False)
        peaks = client.run(peak_rss_kib)
    return [kib / 1024 for kib in peaks.values()], summary.n_cells


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
        worker_memory = []
        for n in (10, args.fields):
            peaks, cells = _worker_peak_memory(tmp / f"manifest_{n}.csv", tmp / f"store_workers_{n}")
            worker_memory.append({"fields": n, "cells": cells, "worker_peak_rss_mib": max(peaks)})
        for row in worker_memory:
            row["ratio_to_10_fields"] = row["worker_peak_rss_mib"] / worker_memory[0]["worker_peak_rss_mib"]
    print_table(speed, f"prepare throughput, {args.field_size}x{args.field_size} px fields (all steps on)")
    print_table(memory, "peak resident memory of a prepare run, 1 worker, fresh process")
    print_table(worker_memory, "peak resident memory of the larger worker, 2 workers, fresh local cluster")
    path = write_result("prepare_throughput", {
        "convention": "wall-clock seconds of a whole prepare run (QC, illumination, corrections, segmentation, "
                      "crops, store); 1 worker = in-process, 2 = local dask cluster incl. its start-up; "
                      "peak RSS (Linux VmHWM, the process's own high-water mark) of a fresh process running "
                      "prepare in-process, and of each worker process of a fresh 2-worker cluster (the larger "
                      "reported)",
        "field_size": args.field_size, "prepare_2w_vs_1w": speed[1]["speedup_vs_1_worker"], "speed": speed,
        "memory": memory, "worker_memory": worker_memory,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
