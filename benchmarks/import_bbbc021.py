"""Import speed of the real BBBC021 crops into crop stores.

Baseline in the same run: loading the same npz into memory with ``numpy.load`` (what any import
must do at least). Reports crops/s, the ratio import time / load time, and the store size.

    python benchmarks/import_bbbc021.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common import data_dir, print_table, write_result
from morphospace.io.importers import import_npz
from morphospace.io.store import CropStore

FILES = ["bbbc021_crops68_random1000_allmoa.npz", "bbbc021_crops68_dmso_6plates.npz",
         "bbbc021_crops68_cycloheximide.npz"]


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bbbc021 = data_dir(args.data) / "bbbc021"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in FILES:
            source = bbbc021 / name
            load_times, import_times = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                with np.load(source) as archive:
                    images = archive["images"]
                    n = len(images)
                load_times.append(time.perf_counter() - start)
                out = Path(tmp) / "store"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                import_npz(source, out, channels=["DNA", "Actin", "Tubulin"], bbbc021_dir=bbbc021, progress=False)
                import_times.append(time.perf_counter() - start)
            store = CropStore(out)
            assert len(store) == n
            best_import, best_load = min(import_times), min(load_times)
            rows.append({
                "file": name, "crops": n, "import_s": best_import, "crops_per_s": n / best_import,
                "np_load_s": best_load, "import_over_load": best_import / best_load,
                "npz_mb": source.stat().st_size / 1e6, "store_mb": _folder_size(out) / 1e6,
            })
    print_table(rows, "Import of BBBC021 crops (best of %d runs; includes BBBC021 annotation)" % args.repeats)
    path = write_result("import_bbbc021", {
        "convention": "wall-clock seconds, best of repeats; baseline numpy.load of the same npz in the same process",
        "repeats": args.repeats, "rows": rows,
    })
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
