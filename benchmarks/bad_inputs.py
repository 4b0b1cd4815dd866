"""How the command line answers bad input and interruptions: one class of mistake per case.

Every case builds its own small input from a simulated screen (or a tiny crop or profile table),
runs ``morphospace`` as a user would, in a subprocess, and sorts the outcome into:

- ``right result``: exit 0 with the correct output (for cases where carrying on is right);
- ``clear error``: non-zero exit, no traceback, a message that names what is wrong, and no
  half-written output left where the output should be;
- ``unclear error``: non-zero exit, no traceback, but the message does not name the problem;
- ``traceback``: a raw Python traceback;
- ``half-written``: an error that leaves a partial output behind;
- ``stopped``: an error where the right answer is to carry on (e.g. ``on_error=skip``);
- ``silent or misleading``: exit 0 with a wrong, partial or misleading result.

``--before SRC`` runs every case a second time with the package sources in SRC (e.g. a checkout
of an earlier commit: ``git worktree add ../old COMMIT`` then ``--before ../old/src``) and writes
both columns.

    python benchmarks/bad_inputs.py [--before OLD/src] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import tifffile
import yaml

from common import print_table, write_result

GOOD = ("right result", "clear error")


@dataclass
class Outcome:
    status: str
    detail: str


@dataclass
class Case:
    name: str
    group: str
    run: Callable[["Workspace"], Outcome]


class Workspace:
    """A scratch folder, the simulated screen and its reference store, and how to call the CLI."""

    def __init__(self, root: Path, source: Path | None, shared: dict):
        self.root, self.source, self.shared = root, source, shared

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK")}
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "morphospace", "--no-progress", *map(str, args)]

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), env=self.env(), capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def copy_screen(self, name: str) -> Path:
        target = self.root / name
        shutil.copytree(self.shared["screen"], target)
        return target


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def judge_error(result, needles: tuple[str, ...], leftovers: tuple[Path, ...] = ()) -> Outcome | None:
    """The outcome of a run that should stop with an error naming every needle; None if it exited 0."""
    if result.returncode == 0:
        return None
    message = result.stderr + result.stdout
    if "Traceback (most recent call last)" in message:
        return Outcome("traceback", _last_line(message))
    left = [p.name for p in leftovers if p.exists()]
    if left:
        return Outcome("half-written", f"left {', '.join(left)}; {_last_line(message)}")
    if all(n.lower() in message.lower() for n in needles):
        return Outcome("clear error", _last_line(message))
    return Outcome("unclear error", _last_line(message))


def must_fail(result, needles: tuple[str, ...], silent: str, leftovers: tuple[Path, ...] = ()) -> Outcome:
    return judge_error(result, needles, leftovers) or Outcome("silent or misleading", silent)


def must_succeed(result) -> Outcome | None:
    """None when the run exited 0; else its failure (a run that should have carried on)."""
    if result.returncode == 0:
        return None
    message = result.stderr + result.stdout
    return Outcome("traceback" if "Traceback (most recent call last)" in message else "stopped", _last_line(message))


# ----------------------------------------------------------------------------- inputs

def write_screen(root: Path) -> dict:
    """One simulated plate (14 fields of 256 px) and its store prepared without interruption."""
    from morphospace.simulate import SimulateConfig, simulate_screen
    from morphospace.workflows.prepare import prepare

    screen = root / "screen"
    simulate_screen(SimulateConfig(plates=1, compounds_per_moa=1, concentrations=1, dmso_wells_per_plate=2, seed=3),
                    screen, progress=False)
    reference = root / "reference_store"
    prepare(screen / "manifest.csv", reference, progress=False)
    return {"screen": screen, "reference": reference}


def write_crops(path: Path, n: int = 64, size: int = 16) -> Path:
    """An npz of ``n`` two-channel crops (discs of two sizes) with per-crop metadata."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    radius = rng.uniform(2.5, 5.0, n)
    r2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    discs = (r2[None] < radius[:, None, None] ** 2).astype(np.float32)
    images = np.stack([discs, np.roll(discs, 1, axis=1)], axis=1) + rng.normal(0, 0.05, (n, 2, size, size))
    np.savez(path, images=images.astype(np.float32), plate=np.array([f"P{i % 2}" for i in range(n)]),
             compound=np.where(radius > 3.75, "big", "small"))
    return path


def profile_table(seed: int = 0) -> pd.DataFrame:
    """Well profiles: 6 MoAs x 2 compounds x 2 doses x 3 replicate wells (one per plate), the two
    compounds of a MoA in two batches, plus 12 DMSO wells; 20 features with a MoA signal."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (6, 20))
    rows, values = [], []
    for moa in range(6):
        for compound in range(2):
            for dose in (1.0, 10.0):
                for well in range(3):
                    rows.append({"Metadata_Compound": f"c{moa}{compound}", "Metadata_Concentration": dose,
                                 "Metadata_MoA": f"moa{moa}", "Metadata_Batch": f"B{compound}",
                                 "Metadata_Plate": f"P{well}", "Metadata_Well": f"W{moa}{compound}{dose:g}"})
                    values.append(centres[moa] + rng.normal(0, 1.5, 20))
    for well in range(12):
        rows.append({"Metadata_Compound": "DMSO", "Metadata_Concentration": 0.0, "Metadata_MoA": "DMSO",
                     "Metadata_Batch": f"B{well % 2}", "Metadata_Plate": f"P{well % 3}",
                     "Metadata_Well": f"D{well}"})
        values.append(rng.normal(0, 1.5, 20))
    return pd.concat([pd.DataFrame(rows), pd.DataFrame(np.array(values), columns=[f"f{i}" for i in range(20)])],
                     axis=1)


def _nsc(stdout: str) -> str:
    return stdout.split("NSC ")[1].split("%")[0] + "%" if "NSC " in stdout else "?"


def _replace_files(screen: Path, channel_rows: list[tuple[int, str]], make: Callable[[np.ndarray], np.ndarray]) -> None:
    manifest = pd.read_csv(screen / "manifest.csv")
    for row, channel in channel_rows:
        path = screen / manifest.loc[row, f"FileName_{channel}"]
        tifffile.imwrite(path, make(tifffile.imread(path)))


def _field_rows(store: Path, field_id: str) -> int:
    cells = pd.read_parquet(store / "cells.parquet")
    return int((cells["Metadata_FieldId"] == field_id).sum())


# ----------------------------------------------------------------------------- prepare cases

def _concurrent_prepare(space: Workspace, delay: float) -> Outcome:
    out = space.root / "store"
    args = ("prepare", "--manifest", space.shared["screen"] / "manifest.csv", "--out", out)
    first = space.start(*args)
    time.sleep(delay)
    second = space.start(*args)
    results = [(p.wait(), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, *_ in results)
    reference = pd.read_parquet(space.shared["reference"] / "cells.parquet")
    complete = out.exists() and len(pd.read_parquet(out / "cells.parquet")) == len(reference)
    if codes == [0, 0] or not complete:
        return Outcome("silent or misleading", f"exit codes {codes}; store complete: {complete}")
    refused = next(stderr for code, _, stderr in results if code != 0)
    if "Traceback" in refused:
        return Outcome("traceback", _last_line(refused))
    if "lock" in refused.lower() and "pid" in refused.lower():
        return Outcome("clear error", _last_line(refused))
    return Outcome("unclear error", _last_line(refused))


def prepare_together(space: Workspace) -> Outcome:
    return _concurrent_prepare(space, 0.0)


def prepare_two_seconds_apart(space: Workspace) -> Outcome:
    return _concurrent_prepare(space, 2.0)


def prepare_noise_field(space: Workspace) -> Outcome:
    screen = space.copy_screen("noise_screen")
    manifest = pd.read_csv(screen / "manifest.csv")
    rng = np.random.default_rng(1)
    _replace_files(screen, [(0, c) for c in ("DNA", "Actin", "Tubulin")],
                   lambda a: rng.normal(400, 40, a.shape).clip(0).astype(a.dtype))
    out = space.root / "store"
    result = space.cli("prepare", "--manifest", screen / "manifest.csv", "--out", out)
    if (failed := must_succeed(result)) is not None:
        return failed
    field = manifest.loc[0, "Metadata_FieldId"]
    cells = _field_rows(out, field)
    qc = pd.read_csv(out / "qc.csv").set_index("Metadata_FieldId")
    reason = str(qc.loc[field].get("reason", ""))
    if cells == 0 and "no_foreground" in reason:
        return Outcome("right result", f"0 cells; qc.csv: {reason}")
    return Outcome("silent or misleading", f"{cells} 'cells' from a field of camera noise; qc.csv reason {reason!r}")


def prepare_odd_size_skip(space: Workspace) -> Outcome:
    screen = space.copy_screen("odd_screen")
    _replace_files(screen, [(0, c) for c in ("DNA", "Actin", "Tubulin")], lambda a: a[:200, :220])
    out = space.root / "store"
    result = space.cli("prepare", "--manifest", screen / "manifest.csv", "--out", out, "--set", "on_error=skip")
    return must_succeed(result) or Outcome("right result", f"exit 0, {len(pd.read_parquet(out / 'cells.parquet'))} cells")


def prepare_missing_file_skip(space: Workspace) -> Outcome:
    screen = space.copy_screen("missing_screen")
    manifest = pd.read_csv(screen / "manifest.csv")
    (screen / manifest.loc[2, "FileName_Actin"]).unlink()
    out = space.root / "store"
    result = space.cli("prepare", "--manifest", screen / "manifest.csv", "--out", out, "--set", "on_error=skip")
    if (failed := must_succeed(result)) is not None:
        return failed
    qc = pd.read_csv(out / "qc.csv").set_index("Metadata_FieldId")
    status = qc.loc[manifest.loc[2, "Metadata_FieldId"]]
    return Outcome("right result", f"qc.csv: {status.get('status')} {status.get('reason')}")


def prepare_missing_file(space: Workspace) -> Outcome:
    screen = space.copy_screen("missing_screen")
    manifest = pd.read_csv(screen / "manifest.csv")
    missing = screen / manifest.loc[2, "FileName_Actin"]
    missing.unlink()
    out = space.root / "store"
    result = space.cli("prepare", "--manifest", screen / "manifest.csv", "--out", out)
    return must_fail(result, (missing.name,), "exit 0 with a file missing", (out,))


def prepare_planar_rgb(space: Workspace) -> Outcome:
    screen = space.copy_screen("rgb_screen")
    _replace_files(screen, [(1, "DNA")], lambda a: np.stack([a, a // 2, a // 3]))
    out = space.root / "store"
    result = space.cli("prepare", "--manifest", screen / "manifest.csv", "--out", out)
    return must_fail(result, ("short_stacks",), "a (3, H, W) file read as a z-stack and max-projected", (out,))


def prepare_nan_pixels(space: Workspace) -> Outcome:
    screen = space.copy_screen("nan_screen")
    manifest = pd.read_csv(screen / "manifest.csv")

    def with_nan(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32)
        a[10:20, 10:20] = np.nan
        return a

    _replace_files(screen, [(3, "DNA")], with_nan)
    out = space.root / "store"
    result = space.cli("prepare", "--manifest", screen / "manifest.csv", "--out", out)
    name = Path(manifest.loc[3, "FileName_DNA"]).name
    return must_fail(result, (name, "nan"), "NaN pixels accepted", (out,))


def prepare_truncated_tiff(space: Workspace) -> Outcome:
    screen = space.copy_screen("truncated_screen")
    path = screen / pd.read_csv(screen / "manifest.csv").loc[4, "FileName_Tubulin"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    out = space.root / "store"
    result = space.cli("prepare", "--manifest", screen / "manifest.csv", "--out", out)
    return must_fail(result, (path.name,), "a truncated file accepted", (out,))


def prepare_no_filename_columns(space: Workspace) -> Outcome:
    manifest = pd.read_csv(space.shared["screen"] / "manifest.csv")
    bad = space.root / "manifest.csv"
    manifest.rename(columns=lambda c: c.replace("FileName_", "Path_")).to_csv(bad, index=False)
    out = space.root / "store"
    return must_fail(space.cli("prepare", "--manifest", bad, "--out", out), ("FileName_",), "exit 0", (out,))


def prepare_resume_changed_manifest(space: Workspace) -> Outcome:
    """Killed after a few fields, then resumed on a manifest with rows reordered and one removed; the
    store must equal a fresh run on that manifest."""
    screen = space.copy_screen("resume_screen")
    manifest = pd.read_csv(screen / "manifest.csv")
    out = space.root / "store"
    process = space.start("prepare", "--manifest", screen / "manifest.csv", "--out", out)
    fields = out.with_name("store.partial") / "fields"
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if fields.is_dir() and len([p for p in fields.iterdir() if not p.name.startswith(".")]) >= 4:
            process.kill()
            break
        time.sleep(0.02)
    process.wait()
    changed = manifest.drop(index=1).iloc[::-1]
    changed.to_csv(screen / "manifest.csv", index=False)
    result = space.cli("prepare", "--manifest", screen / "manifest.csv", "--out", out)
    if (failed := must_succeed(result)) is not None:
        return failed
    fresh = space.root / "fresh"
    if (failed := must_succeed(space.cli("prepare", "--manifest", screen / "manifest.csv", "--out", fresh))):
        return Outcome("unclear error", "the fresh run failed: " + failed.detail)
    qc = [pd.read_csv(s / "qc.csv").set_index("Metadata_FieldId").sort_index() for s in (out, fresh)]
    cells = [pd.read_parquet(s / "cells.parquet").groupby("Metadata_FieldId").size() for s in (out, fresh)]
    same_status = qc[0]["status"].equals(qc[1]["status"])
    same_cells = cells[0].sort_index().equals(cells[1].sort_index())
    same_n = "n_cells" not in qc[0] or qc[0]["n_cells"].equals(qc[1]["n_cells"])
    if same_status and same_cells and same_n:
        return Outcome("right result", f"resumed store equals a fresh run ({int(cells[0].sum())} cells)")
    return Outcome("silent or misleading", f"QC status equal: {same_status}; cells per field equal: {same_cells}; "
                                           f"qc.csv n_cells equal: {same_n}")


# ----------------------------------------------------------------------------- import and store cases

def import_wrong_length(space: Workspace) -> Outcome:
    path = write_crops(space.root / "crops.npz")
    archive = dict(np.load(path))
    archive["well"] = np.array(["A01"] * 10)
    np.savez(path, **archive)
    out = space.root / "store"
    return must_fail(space.cli("import", "--npz", path, "--out", out), ("well", "64"),
                     "a metadata array of 10 values for 64 crops dropped", (out,))


def import_two_dimensional(space: Workspace) -> Outcome:
    path = write_crops(space.root / "crops.npz")
    archive = dict(np.load(path))
    archive["position"] = np.zeros((64, 2))
    np.savez(path, **archive)
    out = space.root / "store"
    return must_fail(space.cli("import", "--npz", path, "--out", out), ("position",),
                     "a 2-D metadata array dropped", (out,))


def import_not_npz(space: Workspace) -> Outcome:
    path = space.root / "crops.npz"
    path.write_bytes(b"\x80\x04this is a pickle, not an npz archive" * 10)
    out = space.root / "store"
    return must_fail(space.cli("import", "--npz", path, "--out", out), ("not an npz",), "exit 0", (out,))


def import_fractional_frame(space: Workspace) -> Outcome:
    folder = space.root / "tiffs"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", np.random.default_rng(0).uniform(0, 1, (4, 16, 16)).astype(np.float32))
    csv = space.root / "crops.csv"
    pd.DataFrame({"file": ["stack.tif"] * 2, "frame": ["0", "1.5"]}).to_csv(csv, index=False)
    out = space.root / "store"
    return must_fail(space.cli("import", "--tiff", folder, "--metadata", csv, "--out", out), ("frame", "1.5"),
                     "a fractional frame accepted", (out,))


def store_missing_chunk(space: Workspace) -> Outcome:
    out = space.root / "store"
    crops = write_crops(space.root / "crops.npz")
    if (failed := must_succeed(space.cli("import", "--npz", crops, "--out", out, "--channels", "DNA,Actin"))):
        return Outcome("unclear error", "the import failed: " + failed.detail)
    chunks = sorted(p for p in (out / "images.zarr").rglob("*") if p.is_file()
                    and not p.name.startswith(".") and p.name != "zarr.json")
    chunks[0].unlink()
    table = space.root / "features.parquet"
    result = space.cli("features", "--store", out, "--out", table)
    return must_fail(result, ("images.zarr", "missing"), "a missing chunk read as zeros", (table,))


# ----------------------------------------------------------------------------- table cases

def _moa(space: Workspace, table: pd.DataFrame, *options: str, name: str = "profiles.csv"):
    path = space.root / name
    table.to_csv(path, index=False)
    return space.cli("evaluate", "moa", "--profiles", path, *options)


def _moa_with_bad_column(space: Workspace, name: str, values: np.ndarray) -> Outcome:
    """``evaluate moa`` on a table with one extra feature column ``name``: right when the column is
    named in a warning and NSC equals the table's without it."""
    table = profile_table()
    clean = _moa(space, table, name="clean.csv")
    result = _moa(space, table.assign(**{name: values}))
    if (failed := must_succeed(result)) is not None:
        return failed
    if _nsc(result.stdout) == _nsc(clean.stdout) and name in result.stderr:
        return Outcome("right result", f"{name} named in a warning; NSC {_nsc(result.stdout)} as without it")
    return Outcome("silent or misleading", f"NSC {_nsc(result.stdout)} (without the column {_nsc(clean.stdout)})")


def moa_nan_column(space: Workspace) -> Outcome:
    return _moa_with_bad_column(space, "f_empty", np.full(len(profile_table()), np.nan))


def moa_infinite_value(space: Workspace) -> Outcome:
    return _moa_with_bad_column(space, "f_inf", np.where(np.arange(len(profile_table())) == 5, np.inf, 1.0))


def moa_text_column(space: Workspace) -> Outcome:
    table = profile_table()
    table["Well"] = "A01"
    result = _moa(space, table)
    if (failed := must_succeed(result)) is not None:
        return failed
    if "Well" in result.stderr:
        return Outcome("right result", "the non-numeric column 'Well' named in a warning")
    return Outcome("silent or misleading", "the non-numeric column 'Well' left out without a word")


def moa_one_compound(space: Workspace) -> Outcome:
    table = profile_table()
    table = table[table["Metadata_Compound"].isin(["c00", "DMSO"])]
    return must_fail(_moa(space, table), ("two compounds",), "exit 0 with an accuracy over no possible neighbour")


def moa_no_batch_column(space: Workspace) -> Outcome:
    result = _moa(space, profile_table().drop(columns="Metadata_Batch"))
    if (failed := must_succeed(result)) is not None:
        return failed
    if "NSCB" in result.stdout and "not computed" in result.stdout:
        return Outcome("right result", _last_line(result.stdout))
    return Outcome("silent or misleading", f"the console does not say NSCB is missing: {_last_line(result.stdout)}")


def moa_other_column_names(space: Workspace) -> Outcome:
    table = profile_table().rename(columns={"Metadata_MoA": "Metadata_moa"})
    result = _moa(space, table, "--moa-column", "Metadata_moa")
    return must_succeed(result) or Outcome("right result", _last_line(result.stdout))


def evaluate_existing_out(space: Workspace) -> Outcome:
    out = space.root / "evaluation"
    _moa(space, profile_table(), "--out", out)
    before = (out / "moa.json").read_bytes() if (out / "moa.json").exists() else b""
    result = _moa(space, profile_table(seed=1), "--out", out, name="other.csv")
    changed = (out / "moa.json").exists() and (out / "moa.json").read_bytes() != before
    return judge_error(result, ("--overwrite",)) or Outcome(
        "silent or misleading", "an earlier result replaced without --overwrite" if changed else "exit 0")


def profiles_all_nan(space: Workspace) -> Outcome:
    table = profile_table()
    table[[c for c in table if c.startswith("f")]] = np.nan
    path, out = space.root / "features.csv", space.root / "profiles.parquet"
    table.to_csv(path, index=False)
    result = space.cli("profiles", "--features", path, "--out", out)
    return must_fail(result, ("features.csv",), "a profile table with no features written", (out,))


def profiles_zero_shrinkage(space: Workspace) -> Outcome:
    path, out = space.root / "features.csv", space.root / "profiles.parquet"
    profile_table().to_csv(path, index=False)
    result = space.cli("profiles", "--features", path, "--out", out, "--set", "sphere.shrinkage=0")
    return must_fail(result, ("shrinkage",), "a singular whitening accepted", (out,))


# ----------------------------------------------------------------------------- train cases

def _train_config(space: Workspace, name: str, **trainer) -> Path:
    store = space.root / "crops_store"
    if not store.exists():
        space.cli("import", "--npz", write_crops(space.root / "crops.npz"), "--out", store, "--channels", "DNA,Actin")
    config = {"name": name, "runs_dir": str(space.root / "runs"), "seed": 0,
              "data": {"store": str(store), "batch_size": 16, "normalization": {"out_range": [-1, 1]},
                       "split": {"by": None, "train": 0.9, "val": 0.1, "test": 0.0}},
              "model": {"family": "vae", "latent_dim": 8, "base_channels": 8},
              "trainer": {"max_epochs": 4, "precision": "32-true", "sample_images": 4, **trainer}}
    path = space.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train_together(space: Workspace) -> Outcome:
    config = _train_config(space, "vae", max_epochs=20)
    processes = [space.start("train", config) for _ in range(2)]
    results = [(p.wait(), *p.communicate()) for p in processes]
    codes = sorted(code for code, *_ in results)
    if codes == [0, 0]:
        return Outcome("silent or misleading", "both processes trained into the same run folder")
    refused = next(stderr for code, _, stderr in results if code != 0)
    if "Traceback" in refused:
        return Outcome("traceback", _last_line(refused))
    if codes[0] == 0 and "lock" in refused.lower():
        return Outcome("clear error", _last_line(refused))
    return Outcome("unclear error", f"exit codes {codes}: {_last_line(refused)}")


def train_without_last_checkpoint(space: Workspace) -> Outcome:
    config = _train_config(space, "vae", max_epochs=3)
    if (failed := must_succeed(space.cli("train", config))):
        return Outcome("unclear error", "the first run failed: " + failed.detail)
    run = space.root / "runs" / "vae"
    (run / "checkpoints" / "last.ckpt").unlink()
    if not list((run / "checkpoints").glob("epoch=*.ckpt")):
        return Outcome("unclear error", "no epoch checkpoint was written to resume from")
    result = space.cli("train", config, "--set", "trainer.max_epochs=5")
    if (failed := must_succeed(result)) is not None:
        return failed
    metrics = pd.read_csv(run / "metrics.csv")
    epochs = metrics.dropna(subset=[c for c in metrics if c.startswith("train")][:1])["epoch"]
    duplicated = int(epochs.groupby(epochs).size().gt(epochs.groupby(epochs).size().min()).sum())
    if duplicated:
        return Outcome("silent or misleading", f"restarted from epoch 0: {duplicated} epoch(s) logged twice")
    return Outcome("right result", "resumed from the newest epoch checkpoint")


def train_wrong_crop_size(space: Workspace) -> Outcome:
    config = _train_config(space, "vae")
    result = space.cli("train", config, "--set", "data.crop_size=66")
    return must_fail(result, ("crop_size",), "exit 0", (space.root / "runs" / "vae",))


CASES = [
    Case("two prepare runs into one output, started together", "prepare", prepare_together),
    Case("two prepare runs into one output, 2 s apart", "prepare", prepare_two_seconds_apart),
    Case("a field of camera noise", "prepare", prepare_noise_field),
    Case("a field of another size, on_error=skip", "prepare", prepare_odd_size_skip),
    Case("a missing file, on_error=skip", "prepare", prepare_missing_file_skip),
    Case("a missing file", "prepare", prepare_missing_file),
    Case("a planar RGB TIFF (3, H, W)", "prepare", prepare_planar_rgb),
    Case("NaN pixels", "prepare", prepare_nan_pixels),
    Case("a truncated TIFF", "prepare", prepare_truncated_tiff),
    Case("a manifest without FileName_ columns", "prepare", prepare_no_filename_columns),
    Case("killed, resumed with rows reordered and one removed", "prepare", prepare_resume_changed_manifest),
    Case("npz metadata of the wrong length", "import", import_wrong_length),
    Case("2-D npz metadata", "import", import_two_dimensional),
    Case("a file that is not an npz", "import", import_not_npz),
    Case("a fractional frame in the TIFF table", "import", import_fractional_frame),
    Case("a missing zarr chunk", "store", store_missing_chunk),
    Case("one all-NaN feature column", "evaluate", moa_nan_column),
    Case("one infinite value", "evaluate", moa_infinite_value),
    Case("a non-numeric column", "evaluate", moa_text_column),
    Case("one compound", "evaluate", moa_one_compound),
    Case("no batch column", "evaluate", moa_no_batch_column),
    Case("pycytominer's Metadata_moa", "evaluate", moa_other_column_names),
    Case("--out an existing result", "evaluate", evaluate_existing_out),
    Case("all features NaN", "profiles", profiles_all_nan),
    Case("sphere.shrinkage = 0", "profiles", profiles_zero_shrinkage),
    Case("two train runs into one run folder", "train", train_together),
    Case("last.ckpt missing, epoch checkpoints there", "train", train_without_last_checkpoint),
    Case("a crop size the model cannot take", "train", train_wrong_crop_size),
]


def run_cases(cases: list[Case], source: Path | None, shared: dict, scratch: Path) -> dict[str, Outcome]:
    outcomes = {}
    for number, case in enumerate(cases):
        root = scratch / f"{'before' if source else 'after'}_{number:02d}"
        root.mkdir()
        started = time.monotonic()
        try:
            outcomes[case.name] = case.run(Workspace(root, source, shared))
        except Exception as exc:  # noqa: BLE001 - a broken case is reported, the others still run
            outcomes[case.name] = Outcome("case failed", f"{type(exc).__name__}: {exc}")
        outcomes[case.name].detail = outcomes[case.name].detail.replace(f"{scratch}{os.sep}", "")
        print(f"  {case.name}: {outcomes[case.name].status} ({time.monotonic() - started:.0f} s)", flush=True)
    return outcomes


def _commit(source: Path | None) -> str:
    folder = source or Path(__file__).resolve().parent
    result = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return result.stdout.strip() + (" + uncommitted changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="package sources of an earlier version to compare with")
    parser.add_argument("--only", nargs="+", help="run only the cases whose name contains one of these")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or any(o in c.name for o in args.only)]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        shared = write_screen(scratch)
        versions = {"after": None, **({"before": args.before.resolve()} if args.before else {})}
        outcomes = {}
        for label, source in versions.items():
            print(f"{label} ({_commit(source)}):", flush=True)
            outcomes[label] = run_cases(cases, source, shared, scratch)
    rows = [{"group": c.group, "case": c.name,
             **{f"{label}": outcomes[label][c.name].status for label in reversed(list(versions))},
             "after: detail": outcomes["after"][c.name].detail[:110]} for c in cases]
    totals = {label: {status: sum(o.status == status for o in found.values())
                      for status in sorted({o.status for o in found.values()})} for label, found in outcomes.items()}
    if args.only:  # a subset is printed, never written over the full results
        print_table(rows, "bad input and interruptions (subset, not written)")
        return
    write_result("bad_inputs", {
        "convention": "each case run through the command line in a subprocess on generated input; right result = "
                      "exit 0 with the correct output; clear error = non-zero exit, no traceback, a message naming "
                      "the problem, no partial output",
        "versions": {label: _commit(source) for label, source in versions.items()},
        "totals": totals,
        "handled": {label: sum(o.status in GOOD for o in found.values()) for label, found in outcomes.items()},
        "cases": [{"group": c.group, "case": c.name,
                   **{label: {"status": outcomes[label][c.name].status, "detail": outcomes[label][c.name].detail}
                      for label in versions}} for c in cases],
    })
    print_table(rows, "bad input and interruptions")
    print("\n" + "; ".join(f"{label}: {sum(totals[label].get(s, 0) for s in GOOD)} of {len(cases)} handled "
                           f"({', '.join(f'{n} {s}' for s, n in totals[label].items())})" for label in totals))


if __name__ == "__main__":
    main()
