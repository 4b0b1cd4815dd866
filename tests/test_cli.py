from pathlib import Path

import numpy as np
import pytest

from morphospace import __version__
from morphospace.cli import main
from morphospace.io.store import CropStore


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out


@pytest.mark.parametrize("command", ["simulate", "prepare", "import", "demo"])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "example:" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_import_npz(tmp_path: Path, capsys):
    np.savez(tmp_path / "c.npz", images=np.random.default_rng(0).integers(0, 999, (4, 10, 10, 3)).astype(np.uint16),
             plate=np.array(["A"] * 4))
    code = main(["--no-progress", "import", "--npz", str(tmp_path / "c.npz"), "--out", str(tmp_path / "s"),
                 "--channels", "DNA,Actin,Tubulin"])
    assert code == 0 and "imported 4 crops" in capsys.readouterr().out
    assert CropStore(tmp_path / "s").channels == ["DNA", "Actin", "Tubulin"]
    assert main(["import", "--npz", str(tmp_path / "c.npz"), "--out", str(tmp_path / "s")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_bad_input_exits_non_zero_with_message(tmp_path: Path, capsys):
    assert main(["import", "--npz", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "s")]) == 2
    assert "missing.npz: file not found" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "sim"), "--set", "platez=2"]) == 2
    assert "key 'platez': unknown key" in capsys.readouterr().err


def test_simulate_then_prepare(tmp_path: Path, capsys):
    code = main(["--no-progress", "simulate", "--out", str(tmp_path / "sim"), "--seed", "2", "--set", "plates=1",
                 "--set", "moas=[Actin disruptors]", "--set", "compounds_per_moa=1", "--set", "concentrations=1",
                 "--set", "dmso_wells_per_plate=2", "--set", "field_size=128", "--set", "cells_per_field=5"])
    assert code == 0 and "simulated" in capsys.readouterr().out
    code = main(["--no-progress", "prepare", "--manifest", str(tmp_path / "sim" / "manifest.csv"), "--out",
                 str(tmp_path / "store"), "--set", "crops.size=32", "--set", "illumination.enabled=false", "--json"])
    assert code == 0 and '"n_cells"' in capsys.readouterr().out
    assert CropStore(tmp_path / "store").crop_shape == (32, 32)
