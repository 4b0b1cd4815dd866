"""Training speed of the Statistical Cell with and without channels-last convolutions.

The 2D and 3D settings of ``statistical_cell.py`` (``statistical_cell_simulated`` with that
benchmark's overrides per part: 64 x 64 crops, batch 32, base 16 channels in 2D; 16 x 64 x 64
stacks, batch 16, base 4 channels in 3D; the config's precision) train a fixed number of optimizer
steps (``--steps-2d``, ``--steps-3d``) through morphospace on a small simulated structures store,
once with ``trainer.channels_last`` false and once true, alternating, ``--repeats`` times, in one
process. Images/s is the fit loop's after its warm-up batch (data loading included); each
setting's median over the repeats is reported, and the ratio channels-last / contiguous. Writes
``results/statistical_cell_speed.json``.

    python benchmarks/statistical_cell_speed.py [--steps-2d 40] [--steps-3d 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import print_table, write_result
from morphospace.models.registry import load_run_config
from morphospace.simulate import SimulateConfig, simulate_structures
from morphospace.workflows.train import train
from statistical_cell import SETTINGS

CELLS_PER_CONDITION = 8
"""Simulated cells per (structure, condition): 6 x 4 x 8 x 2 plates = 384 crops, enough batches."""


def _store(folder: Path, dims: int) -> Path:
    store = folder / f"structures_{dims}d"
    config = SimulateConfig(mode="structures", dims=dims, plates=2, seed=0,
                            structures={"cells_per_condition": CELLS_PER_CONDITION})
    simulate_structures(config, store, progress=False)
    return store


def _images_per_second(store: Path, dims: int, channels_last: bool, steps: int, runs: Path, repeat: int) -> float:
    part = SETTINGS[f"{dims}d"]["full"]
    config = load_run_config("statistical_cell_simulated", [
        f"name=speed_{dims}d_{'last' if channels_last else 'contiguous'}_{repeat}", f"data.store={store}",
        f"runs_dir={runs}", f"trainer.max_steps={steps}", "trainer.max_epochs=1000",
        f"trainer.channels_last={str(channels_last).lower()}", "trainer.sample_every_n_epochs=1000",
        *(["model.spatial_dims=3"] if dims == 3 else []), *part["overrides"]])
    return train(config, progress=False).samples_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-2d", type=int, default=40)
    parser.add_argument("--steps-3d", type=int, default=12, help="fewer: a 3D step takes about 5 times a 2D one")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for dims in (2, 3):
            store = _store(Path(folder), dims)
            steps = getattr(args, f"steps_{dims}d")
            speeds: dict[bool, list[float]] = {False: [], True: []}
            for repeat in range(args.repeats):
                for channels_last in (False, True):
                    speeds[channels_last].append(_images_per_second(store, dims, channels_last, steps,
                                                                    Path(folder) / "runs", repeat))
            contiguous, last = (statistics.median(speeds[flag]) for flag in (False, True))
            rows.append({"part": f"{dims}d", "steps": steps, "contiguous_images_per_s": contiguous,
                         "channels_last_images_per_s": last, "ratio": last / contiguous,
                         "contiguous_runs": speeds[False], "channels_last_runs": speeds[True]})
    print_table([{k: v for k, v in row.items() if not k.endswith("_runs")} for row in rows],
                "Statistical Cell training images/s (median over repeats)")
    path = write_result("statistical_cell_speed", {
        "convention": ("images/s of the fit loop after its warm-up batch, 'steps' optimizer steps per run, "
                       f"median over {args.repeats} runs per setting (contiguous and channels-last alternating, one "
                       "process); settings of statistical_cell.py's 2D and 3D parts; ratio = channels-last / "
                       "contiguous"),
        "repeats": args.repeats, "parts": rows})
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
