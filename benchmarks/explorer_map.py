"""Interactive maps on real BBBC021 crops, as a user sees them in headless Chromium: page size,
time to write, time until every map rendered, and the time from moving the mouse onto a point until
its crop shows (hover) or a click fills the gallery.

Maps (CellProfiler fast-set features of the crops, PCA, 64 px thumbnails):
- ``cells_all``: all 8,774 crops, one point per cell;
- ``cells_10000``: 10,000 points, the 8,774 crops plus 1,226 of them drawn again at random (the
  largest real set here has 8,774 crops; the map's default cap is 10,000 points);
- ``cells_10000_no_crops``: the same map without a store, the baseline of the load-time ratio;
- ``wells``: median well profiles of the same features, a montage of four of a well's cells per point;
- the demo's ``report.html`` (``--demo DIR``, a finished demo folder; default: run the demo into
  the work folder, reused when there).

Latencies are the median and maximum over 20 points drawn at random (seed 0), measured from the
mouse move until the preview image is visible (Playwright round trips included).

    python benchmarks/explorer_map.py [--data ../shared/data] [--demo morphospace-demo]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bbbc021_cp2image import _features
from bbbc021_generative import _stores
from common import ROOT, data_dir, print_table, write_result
from morphospace.explore.browser import browser_missing, click_point, hover_point, open_page
from morphospace.explore.cell_map import write_map
from morphospace.features.profiles import aggregate_profiles

WORK = ROOT / "work"
WELL_KEYS = ["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]


def _tables(store: Path, work: Path) -> dict[str, Path]:
    """The per-cell feature table and the tables derived from it, as files ``explore map`` reads."""
    features_path, _ = _features(store, work, "fast")
    cells = pd.read_parquet(features_path)
    extra = cells.sample(10_000 - len(cells), replace=False, random_state=0)
    paths = {"cells_all": features_path, "cells_10000": work / "map_cells_10000.parquet",
             "wells": work / "map_wells.parquet"}
    pd.concat([cells, extra], ignore_index=True).to_parquet(paths["cells_10000"])
    keys = [k for k in WELL_KEYS if k in cells]
    aggregate_profiles(cells.drop(columns="Metadata_StoreIndex"), keys).to_parquet(paths["wells"])
    return paths


def _measure_page(path: Path, maps: list[str], points: dict[str, int]) -> dict[str, float]:
    """Load time, and hover and click latencies on the named maps of the page at ``path``."""
    rng = np.random.default_rng(0)
    hovers, clicks = [], []
    with open_page(path) as check:
        load = check.load_seconds
        for name in maps:
            for index in rng.choice(points[name], 20, replace=False):
                source, seconds = hover_point(check, name, int(index))
                assert source.startswith("data:image/png"), f"{path.name}: no crop on hover of point {index}"
                hovers.append(seconds)
            start = time.perf_counter()
            click_point(check, name, int(rng.integers(points[name])))
            clicks.append(time.perf_counter() - start)
        errors = list(check.errors)
    if errors:
        raise SystemExit(f"{path}: JavaScript errors: {errors[:3]}")
    return {"load_s": load, "hover_median_s": statistics.median(hovers), "hover_max_s": max(hovers),
            "click_median_s": statistics.median(clicks)}


def _demo_report(demo: Path | None, work: Path) -> Path:
    if demo is not None:
        return demo / "report.html"
    from morphospace.workflows.demo import run_demo

    folder = work / "demo"
    if not (folder / "report.html").is_file():
        run_demo(folder, progress=False)
    return folder / "report.html"


def _demo_points(report: Path) -> dict[str, int]:
    """Points on the demo's two maps (the store's crops and the profile table's wells)."""
    folder = report.parent
    return {"cells-map": len(pd.read_parquet(folder / "features" / "cells.parquet", columns=["Metadata_StoreIndex"])),
            "wells-map": len(pd.read_parquet(folder / "features" / "profiles.parquet", columns=["Metadata_Plate"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--demo", type=Path, help="a finished demo folder whose report.html is measured")
    args = parser.parse_args()
    missing = browser_missing()
    if missing:
        raise SystemExit(f"this benchmark needs a browser: {missing}")
    store, _ = _stores(data_dir(args.data) / "bbbc021", WORK)
    tables = _tables(store, WORK)
    rows = []
    for case, table, with_store in (("cells_all", tables["cells_all"], True),
                                    ("cells_10000", tables["cells_10000"], True),
                                    ("cells_10000_no_crops", tables["cells_10000"], False),
                                    ("wells", tables["wells"], True)):
        out = WORK / "maps" / f"{case}.html"
        start = time.perf_counter()
        _, cell_map = write_map(table, out, store if with_store else None)
        written = time.perf_counter() - start
        row = {"case": case, "points": cell_map.n_points, "crops": with_store, "write_s": written,
               "size_mb": out.stat().st_size / 1e6}
        if with_store:
            row |= _measure_page(out, ["map"], {"map": cell_map.n_points})
        else:
            with open_page(out) as check:
                row["load_s"] = check.load_seconds
        rows.append(row)
    report = _demo_report(args.demo, WORK)
    rows.append({"case": "demo_report", "points": sum(_demo_points(report).values()), "crops": True,
                 "write_s": None, "size_mb": report.stat().st_size / 1e6,
                 **_measure_page(report, ["wells-map", "cells-map"], _demo_points(report))})
    by_case = {row["case"]: row for row in rows}
    ratio = by_case["cells_10000"]["load_s"] / by_case["cells_10000_no_crops"]["load_s"]
    print_table(rows, "Maps in headless Chromium (seconds; hover and click from the mouse event until shown)")
    print(f"load time of the 10,000-point map with crops / without: {ratio:.2f}")
    path = write_result("explorer_map", {
        "convention": ("CellProfiler fast-set features of the real BBBC021 crops, PCA, 64 px thumbnails (64-colour "
                       "PNG); headless Chromium with software rendering, 1280 x 1000 window; load = page.goto until "
                       "every Bokeh root has a view; hover = mouse move until the preview image is visible; "
                       "median and max over 20 random points per map (seed 0)"),
        "cases": rows, "load_10000_with_crops_vs_without": ratio})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
