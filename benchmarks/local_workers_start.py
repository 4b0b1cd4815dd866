"""Start-up of a local dask cluster of 2 workers, by how its worker processes start.

Each measurement runs in a fresh process that has imported the ``features`` workflow (as the
``morphospace features`` command has): the seconds from entering ``compute_context(workers=2)``
until both workers have run a first function of that workflow (importing it if they lack it), for the first cluster of the process (``cold``:
for ``forkserver`` this includes starting the server and its imports) and for a second one
(``warm``). ``fork`` forks the calling process (unsafe once it runs threads, kept for the
comparison), ``forkserver`` is the Linux default, ``spawn`` the one of macOS and Windows.
Median over ``--repeats`` processes per method, the methods interleaved.

    python benchmarks/local_workers_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from common import print_table, write_result

METHODS = ("fork", "forkserver", "spawn")

_PROBE = """
import json, os, sys, time
from morphospace.parallel import compute_context
from morphospace.workflows.profiling import task_cells

def seconds(method):
    start = time.perf_counter()
    with compute_context(workers=2, start_method=method) as client:
        client.run(task_cells, 0.01, 1000, 2, 32)  # a function of the features workflow, as its first task
        return time.perf_counter() - start

if __name__ == "__main__":
    print(json.dumps([seconds(sys.argv[1]), seconds(sys.argv[1])]))
"""


def _measure(method: str) -> tuple[float, float]:
    """(cold, warm) seconds of one fresh process."""
    result = subprocess.run([sys.executable, "-c", _PROBE, method], check=True, capture_output=True, text=True)
    cold, warm = json.loads(result.stdout.strip().splitlines()[-1])
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {method: [] for method in METHODS}
    for _ in range(args.repeats):
        for method in METHODS:
            times[method].append(_measure(method))
    rows = [{"start_method": method,
             "cold_s": statistics.median(cold for cold, _ in times[method]),
             "warm_s": statistics.median(warm for _, warm in times[method])} for method in METHODS]
    fork = rows[0]
    for row in rows:
        row["cold_minus_fork_s"] = row["cold_s"] - fork["cold_s"]
    print_table(rows, "local dask cluster of 2 workers: seconds to the first answer of both")
    path = write_result("local_workers_start", {
        "convention": ("wall-clock seconds from entering compute_context(workers=2) until both workers ran a "
                       "function of the features workflow, in a fresh process that imported that workflow; cold = "
                       "the process's first cluster, warm = its second; median over the repeats, methods "
                       "interleaved"),
        "repeats": args.repeats,
        "rows": rows,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
