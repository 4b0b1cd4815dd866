import logging
from pathlib import Path

import pytest

from morphospace.config import Config
from morphospace.runs import RunConflictError, check_run_directory, open_run_directory, setup_logging


class RunConfig(Config):
    seed: int = 0
    size: int = 8


def test_new_then_resumed_then_conflicting(tmp_path: Path):
    run, resumed = open_run_directory(tmp_path / "run", RunConfig())
    assert not resumed and (run / "config.yaml").is_file()
    _, resumed = open_run_directory(tmp_path / "run", RunConfig())
    assert resumed
    with pytest.raises(RunConflictError, match="keys size differ"):
        open_run_directory(tmp_path / "run", RunConfig(size=9))
    (run / "stale.txt").write_text("x")
    _, resumed = open_run_directory(tmp_path / "run", RunConfig(size=9), overwrite=True)
    assert not resumed and not (run / "stale.txt").exists()


def test_refuses_foreign_directory(tmp_path: Path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("a")
    with pytest.raises(RunConflictError, match="not a morphospace run"):
        open_run_directory(tmp_path / "other", RunConfig())


def test_logging_goes_to_file(tmp_path: Path):
    setup_logging(tmp_path / "log.txt")
    logging.getLogger("morphospace.test").info("hello from the test")
    for handler in logging.getLogger("morphospace").handlers:
        handler.flush()
    assert "hello from the test" in (tmp_path / "log.txt").read_text()
    setup_logging(None)
    assert sum(isinstance(h, logging.FileHandler) for h in logging.getLogger("morphospace").handlers) == 0


def test_a_key_added_since_with_its_default_is_no_difference(tmp_path: Path):
    import yaml

    run, _ = open_run_directory(tmp_path / "run", RunConfig())
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": 0}))  # written before `size` existed
    assert check_run_directory(run, RunConfig()) is True
    with pytest.raises(RunConflictError, match="keys size differ"):
        check_run_directory(run, RunConfig(size=9))


def test_another_process_temporary_file_does_not_make_a_folder_foreign(tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".config.yaml.123.abcd.tmp").write_text("half")
    assert check_run_directory(tmp_path / "run", RunConfig()) is False


def test_source_digest_follows_names_and_bytes_of_sources_only(tmp_path: Path):
    from morphospace.runs import code_stamp, source_digest

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "b.yaml").write_text("k: 1\n")
    first = source_digest(tmp_path)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"\x00compiled")
    (tmp_path / "notes.txt").write_text("not a source")
    assert source_digest(tmp_path) == first
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert source_digest(tmp_path) != first
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    assert source_digest(tmp_path) == first
    (tmp_path / "pkg" / "a.py").rename(tmp_path / "pkg" / "c.py")
    assert source_digest(tmp_path) != first
    version, digest = code_stamp().rsplit("+", 1)
    assert len(digest) == 12 and int(digest, 16) >= 0 and version
