"""Helpers shared by the benchmarks: where the real data is, and writing results."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import morphospace
from morphospace.atomic import json_text, write_text_atomic

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DEFAULT_DATA = ROOT.parent.parent / "shared" / "data"


def stored_run(result: str, part: str) -> Path:
    """The run directory that ``results/<result>.json`` names for its block ``part`` (its training run)."""
    return ROOT.parent / json.loads((RESULTS / f"{result}.json").read_text())[part]["training"]["run"]


def simulated_blocks(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The simulated parts' blocks of a ``statistical_cell*.json`` result as (part, key, block): part
    ``simulated_2d`` or ``simulated_3d``, key the block's own name (``simulated_3d_aligned`` for
    a part run outside its default frame)."""
    return [(key[:len("simulated_2d")], key, block) for key, block in document.items()
            if key.startswith(("simulated_2d", "simulated_3d")) and isinstance(block, dict)]


def data_dir(value: str | None) -> Path:
    """The real-data folder: ``--data``, else ``$MORPHOSPACE_DATA``, else ``../shared/data`` beside the project."""
    path = Path(value or os.environ.get("MORPHOSPACE_DATA", DEFAULT_DATA))
    if not path.is_dir():
        raise SystemExit(f"real data folder {path} not found; pass --data DIR")
    return path


def machine() -> dict[str, Any]:
    from morphospace.models.training import cpu_has_bf16

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu_bf16_units": cpu_has_bf16(), "morphospace": morphospace.__version__}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``results/<name>.json`` with the payload, the date and the machine; paths inside the
    repository are written relative to its root."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {"benchmark": name, "date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                **payload}
    text = json_text(document)  # strict JSON: missing values as null
    write_text_atomic(path, text.replace(str(ROOT.parent) + os.sep, ""))  # paths in the repository: relative to it
    return path


def moa_scores(profiles: Any) -> dict[str, Any]:
    """NSC, NSCB (103 / 92) and same-MoA mAP of a well table, treatments = mean of wells."""
    from morphospace.evaluate.moa import evaluate_moa, treatment_profiles
    from morphospace.evaluate.retrieval import moa_retrieval

    treatments = treatment_profiles(profiles, operation="mean")
    results = evaluate_moa(treatments)
    return {"treatments": results["nsc"].n_treatments, "nsc": results["nsc"].accuracy,
            "nsc_compound_mean": results["nsc"].compound_accuracy, "nscb_103": results["nscb"].accuracy,
            "nscb_92": results["nscb_multi_batch_moas"].accuracy,
            "moa_map": moa_retrieval(treatments, null_size=10000).mean_average_precision}


def timed(step: str, seconds: dict[str, float], function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)``, its wall-clock seconds stored in ``seconds[step]`` and printed."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds[step] = time.perf_counter() - start
    print(f"{step}: {seconds[step]:.0f} s", flush=True)
    return result


def cached_seconds(path: Path, make: Callable[[], Any]) -> float | None:
    """Seconds that making the cached file ``path`` took: ``make()`` runs and is timed when ``path`` is
    missing, the seconds kept beside it in ``<path>.seconds``; for a file cached earlier, the seconds
    kept then (None when it was cached without them), so that a rerun reports the work, not the read."""
    timing = path.with_name(f"{path.name}.seconds")
    if not path.exists():
        start = time.perf_counter()
        make()
        timing.write_text(f"{time.perf_counter() - start:.1f}\n")
    return float(timing.read_text()) if timing.is_file() else None


def print_table(rows: Sequence[dict[str, Any]], title: str) -> None:
    """Print rows of equal keys as an aligned text table."""
    if not rows:
        print(f"{title}: no rows")
        return
    columns = list(rows[0])
    cells = [[_format(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
