"""The README's Quick tour runs as written, block by block, in an empty folder.

Every ``morphospace`` command of every tour block runs in order through the CLI's ``main`` (the
Python block as a script in its own process), with smaller sizes and budgets appended as ``--set``
overrides (later overrides win) and one worker instead of two. Nothing else is changed: a command
whose input no earlier command made, or whose output an earlier one already wrote, fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from morphospace.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BBBC021 = ROOT.parent / "shared" / "data" / "bbbc021"

pytestmark = pytest.mark.slow

_SMALL_SCREEN = ["plates=1", "compounds_per_moa=1", "concentrations=1", "dmso_wells_per_plate=2",
                 "moas=[Actin disruptors, Eg5 inhibitors, Microtubule stabilizers]", "cells_per_field=10"]
_SMALL_CROP_MODEL = ["trainer.max_epochs=1", "model.base_channels=8", "data.batch_size=32"]
_SMALL_PAIRED_MODEL = ["trainer.max_epochs=1", "data.tiles.size=32", "data.tiles.tiles_per_epoch=16",
                       "data.tiles.batch_size=4", "model.net.channels=[8, 16]"]
_SCRIPT_SCREEN = ["compounds_per_moa=1", "concentrations=1", "dmso_wells_per_plate=1", "field_size=192",
                  "moas=['Actin disruptors', 'Eg5 inhibitors']"]
_SMALL_DEMO = [
    "simulate.plates=1", "simulate.moas=[Actin disruptors, Eg5 inhibitors, Protein synthesis]",
    "simulate.compounds_per_moa=2", "simulate.concentrations=1", "simulate.dmso_wells_per_plate=2",
    "simulate.field_size=192", "simulate.cells_per_field=8", "montage_cells=4", "overlay_fields=2",
    "models.presets={vae: 2}", "models.crop_size=32", "models.base_channels=8", "isl.max_epochs=2", "isl.tile=32",
    "isl.channels=[8, 16]",
]


def _smaller(words: list[str]) -> list[str]:
    """Overrides that shrink one tour command (``words`` without the leading ``morphospace``)."""
    command = words[0]
    if command == "simulate":
        transmitted = "transmitted" in words
        return _SMALL_SCREEN + (["field_size=256", "cells_per_field=14"] if transmitted else ["field_size=192"])
    if command == "train":
        return _SMALL_PAIRED_MODEL if words[1].startswith(("isl", "nuclei")) else _SMALL_CROP_MODEL
    if words[:2] == ["explore", "fewshot"]:
        return ["sizes=[1, all]", "steps=2", "inference.tile=64", "inference.crop_size=32"]
    if words[:2] == ["evaluate", "generation"]:
        return ["n=40", "extractor_epochs=1", "feature_cells=20"]
    if command == "demo":
        return _SMALL_DEMO
    return []


def _one_worker(words: list[str]) -> list[str]:
    return [("1" if previous == "--workers" else word) for previous, word in zip([""] + words, words)]


def tour_blocks() -> dict[str, list[tuple[str, str]]]:
    """The Quick tour's code blocks by sub-heading: ``{heading: [(language, code), ...]}``."""
    tour = README.read_text().split("## Quick tour", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[tuple[str, str]]] = {}
    for section in tour.split("\n### ")[1:]:
        heading = section.split("\n", 1)[0].strip()
        blocks[heading] = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    return blocks


def shell_commands(code: str, variables: dict[str, str]) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, ``NAME=value``
    lines set variables that later ``$NAME`` words are replaced by (from ``variables`` when given)."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if len(words) == 1 and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            name, value = words[0].split("=", 1)
            variables.setdefault(name, value)
            continue
        commands.append([re.sub(r"\$([A-Z_]+)", lambda m: variables[m.group(1)], word) for word in words])
    return commands


def run_block(heading: str, folder: Path, variables: dict[str, str] | None = None) -> list[list[str]]:
    """Run every bash command of the tour block ``heading`` in ``folder``; returns them."""
    variables = dict(variables or {})
    ran = []
    for language, code in tour_blocks()[heading]:
        if language != "bash":
            continue
        for words in shell_commands(code, variables):
            assert words[0] == "morphospace", f"the tour runs morphospace commands only, got {words}"
            argv = ["--no-progress", *_one_worker(words[1:])]
            argv += [item for override in _smaller(words[1:]) for item in ("--set", override)]
            assert main(argv) == 0, f"{heading}: `{shlex.join(words)}` failed"
            ran.append(words)
    return ran


def assert_strict_json(folder: Path) -> int:
    """Every JSON file under ``folder`` parses with a strict parser (no NaN / Infinity)."""
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    files = sorted(folder.rglob("*.json"))
    for path in files:
        try:
            json.loads(path.read_text(), parse_constant=refuse)
        except ValueError as exc:
            raise AssertionError(f"{path.relative_to(folder)}: {exc}") from None
    return len(files)


@pytest.fixture(scope="module")
def tour(tmp_path_factory) -> Path:
    """The folder the simulated-data blocks share, in tour order."""
    return tmp_path_factory.mktemp("tour")


def test_every_tour_block_is_known():
    headings = list(tour_blocks())
    assert headings == ["1. A simulated screen: raw fields -> crops -> features -> profiles -> scores",
                        "2. Generative models on that store", "3. In silico labeling and nuclei segmentation",
                        "4. Bring your own crops", "5. Real data: the BBBC021 crops and profiles",
                        "6. The whole study on simulated data, with report.html"]
    assert all(shell_commands(code, {"DATA": "data"}) for heading in headings
               for language, code in tour_blocks()[heading] if language == "bash")


def test_simulated_screen_to_scores(tour: Path, monkeypatch):
    monkeypatch.chdir(tour)
    run_block("1. A simulated screen: raw fields -> crops -> features -> profiles -> scores", tour)
    for name in ("moa.json", "retrieval.json", "clustering.json"):
        assert (tour / "eval" / name).is_file()
    assert assert_strict_json(tour) >= 5


def test_generative_models(tour: Path, monkeypatch):
    monkeypatch.chdir(tour)
    run_block("2. Generative models on that store", tour)
    assert (tour / "runs" / "lsgan_simulated" / "report.html").is_file()
    assert (tour / "vae_embeddings.parquet").is_file() and (tour / "eval_vae" / "moa.json").is_file()
    assert assert_strict_json(tour) > 10


def test_in_silico_labeling(tour: Path, monkeypatch):
    monkeypatch.chdir(tour)
    run_block("3. In silico labeling and nuclei segmentation", tour)
    assert any((tour / "predicted").iterdir())
    assert (tour / "runs" / "fewshot_simulated" / "fewshot.csv").is_file()
    assert_strict_json(tour)


def write_phenotype_folders(root: Path, classes: int = 3, per_class: int = 16, size: int = 64) -> Path:
    """A folder-per-class collection of 8-bit one-channel PNG nuclei: class k holds ellipses of
    its own size and elongation on a noisy background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - size / 2
    for k in range(classes):
        folder = root / f"phenotype_{k}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            a, b = 6 + 4 * k + rng.uniform(-1, 1), 6 + rng.uniform(-1, 1)
            angle = rng.uniform(0, np.pi)
            u = xx * np.cos(angle) + yy * np.sin(angle)
            v = -xx * np.sin(angle) + yy * np.cos(angle)
            nucleus = (u / a) ** 2 + (v / b) ** 2 <= 1
            image = 20 + 150 * nucleus + rng.normal(0, 8, (size, size))
            iio.imwrite(folder / f"cell_{i:03d}.png", np.clip(image, 0, 255).astype(np.uint8))
    return root


def test_bring_your_own_crops(tmp_path: Path, monkeypatch):
    """The "done" path: folder-per-class PNGs -> store -> features -> cell profiles -> clustering ->
    VAE -> embeddings -> generation scores with the folder labels -> report, with no settings but
    the smaller budgets."""
    write_phenotype_folders(tmp_path / "my_crops")
    monkeypatch.chdir(tmp_path)
    run_block("4. Bring your own crops", tmp_path)
    features = [c for c in pd.read_parquet(tmp_path / "my_cells.parquet").columns if not c.startswith("Metadata_")]
    assert features and all(c.startswith("Nuclei_") for c in features)
    clustering = json.loads((tmp_path / "my_eval" / "clustering.json").read_text())
    assert clustering["label"] == "Metadata_Phenotype"
    assert (tmp_path / "runs" / "vae_crops" / "report.html").is_file()
    assert assert_strict_json(tmp_path) >= 5


@pytest.mark.skipif(not BBBC021.is_dir(), reason="the real BBBC021 files are not next to the project")
def test_real_bbbc021(tmp_path: Path, monkeypatch):
    """The real-data block on the official tables and profiles, the 1,000 all-MoA crops and the first
    60 crops of each of the two other crop files."""
    data = tmp_path / "data"
    data.mkdir()
    for table in ("BBBC021_v1_image.csv.gz", "BBBC021_v1_moa.csv", "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz"):
        (data / table).symlink_to(BBBC021 / table)
    for crops in sorted(BBBC021.glob("bbbc021_crops68_*.npz")):
        with np.load(crops) as archive:
            keep = slice(None) if "allmoa" in crops.name else slice(60)
            np.savez(data / crops.name, **{key: archive[key][keep] for key in archive.files})
    monkeypatch.chdir(tmp_path)
    run_block("5. Real data: the BBBC021 crops and profiles", tmp_path, {"DATA": str(data)})
    moa = json.loads((tmp_path / "ljosa_eval" / "moa.json").read_text())
    assert moa["nsc"]["accuracy"] == pytest.approx(0.951, abs=0.001)
    assert (tmp_path / "runs" / "vae_bbbc021" / "report.html").is_file()
    assert_strict_json(tmp_path)


def test_demo_and_python(tour: Path, monkeypatch):
    monkeypatch.chdir(tour)
    run_block("6. The whole study on simulated data, with report.html", tour)
    assert (tour / "morphospace-demo" / "report.html").is_file()
    (language, code), = [block for block in tour_blocks()["6. The whole study on simulated data, with report.html"]
                         if block[0] == "python"]
    smaller = {"SimulateConfig(plates=3, seed=2)": f"SimulateConfig(plates=3, seed=2, {', '.join(_SCRIPT_SCREEN)})",
               '"trainer.max_epochs=5"]': '"trainer.max_epochs=1", "model.base_channels=8"]'}
    for text, replacement in smaller.items():
        assert text in code, f"the README's Python example no longer holds {text!r}"
        code = code.replace(text, replacement)
    script = tour / "tour_example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=tour, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tour / "py_runs" / "vae_simulated" / "summary.json").is_file()
    assert_strict_json(tour)

