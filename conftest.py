"""Shared by the tests and the doctests: scratch folders that pytest itself cleans up."""
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def _tempfile_folders_under_pytest_basetemp(tmp_path_factory: pytest.TempPathFactory):
    """Point :mod:`tempfile` at pytest's base folder, which keeps only the last few runs.

    The doctests show ``tempfile.mkdtemp()`` as a user would write it; without this each run would leave its
    folders in the system's temporary folder for good.
    """
    previous = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tempfile"))
    yield
    tempfile.tempdir = previous
