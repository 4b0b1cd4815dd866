"""``prepare`` and ``features`` on a dask cluster started as on several machines: ``dask scheduler``
and ``dask worker`` as separate processes; a worker killed mid-task loses and duplicates nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from morphospace.cli import main
from morphospace.features.cellprofiler import FeaturesConfig
from morphospace.io.store import CropStore
from morphospace.workflows.prepare import PrepareConfig, prepare
from morphospace.workflows.profiling import extract_features

pytestmark = pytest.mark.slow

WORKER_CONFIG = """
distributed:
  nanny:
    pre-spawn-environ:
      MALLOC_TRIM_THRESHOLD_: null
"""
"""The dask configuration the README gives for workers on a user's cluster."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> str:
    """The address of a scheduler and two single-threaded workers, each its own process."""
    from dask.distributed import Client

    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = str(folder / "scheduler.json")
    (folder / "workers.yaml").write_text(WORKER_CONFIG)
    dask = str(Path(sys.executable).with_name("dask"))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
             "env": {**os.environ, "DASK_CONFIG": str(folder)}}
    processes = [subprocess.Popen([dask, "scheduler", "--scheduler-file", scheduler_file, "--port", "0",
                                   "--dashboard-address", ":0"], **quiet)]
    try:
        for _ in range(600):
            if os.path.exists(scheduler_file):
                break
            time.sleep(0.1)
        processes.append(subprocess.Popen([dask, "worker", "--scheduler-file", scheduler_file, "--nworkers", "2",
                                           "--nthreads", "1"], **quiet))
        with Client(scheduler_file=scheduler_file) as client:
            client.wait_for_workers(2, timeout=120)
            address = client.scheduler.address
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=60)


@pytest.fixture(scope="module")
def four_fields(screen: Path, tmp_path_factory) -> Path:
    """A copy of four fields of the screen, with their manifest and the store prepared in-process."""
    folder = tmp_path_factory.mktemp("four_fields")
    manifest = pd.read_csv(screen / "manifest.csv").head(4)
    manifest.to_csv(folder / "manifest.csv", index=False)
    for name in manifest[[c for c in manifest.columns if c.startswith("FileName_")]].to_numpy().ravel():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(screen / name, folder / name)
    prepare(folder / "manifest.csv", folder / "store", PrepareConfig(illumination={"min_fields": 2}), progress=False)
    return folder


def test_prepare_and_features_on_a_scheduler_give_the_in_process_results(cluster: str, four_fields: Path,
                                                                         tmp_path: Path, capsys):
    assert main(["--no-progress", "prepare", "--manifest", str(four_fields / "manifest.csv"), "--out",
                 str(tmp_path / "store"), "--scheduler", cluster, "--set", "illumination.min_fields=2"]) == 0
    on_cluster, reference = CropStore(tmp_path / "store"), CropStore(four_fields / "store")
    np.testing.assert_array_equal(on_cluster.read(slice(None)), reference.read(slice(None)))
    pd.testing.assert_frame_equal(on_cluster.cells, reference.cells)
    assert main(["--no-progress", "features", "--store", str(tmp_path / "store"), "--out",
                 str(tmp_path / "cells.parquet"), "--scheduler", cluster, "--set", "chunk_cells=8"]) == 0
    # in this process, tasks sized by timing: the same table, however the work was cut
    extract_features(four_fields / "store", tmp_path / "reference.parquet", FeaturesConfig(), progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cells.parquet"),
                                  pd.read_parquet(tmp_path / "reference.parquet"))
    assert not (tmp_path / "cells.parquet.parts").exists()
    assert f"dask scheduler {cluster}, 2 worker(s); dashboard http" in capsys.readouterr().err


def test_the_readme_worker_configuration_keeps_the_default_memory_trimming(cluster: str):
    from dask.distributed import Client

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"```yaml{WORKER_CONFIG}```" in readme
    with Client(cluster) as client:
        trims = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
    assert len(trims) == 2 and set(trims.values()) == {None}


def test_a_worker_killed_mid_task_loses_and_duplicates_no_cell(cluster: str, four_fields: Path, tmp_path: Path):
    from dask.distributed import Client

    store, config = four_fields / "store", FeaturesConfig(chunk_cells=8)
    extract_features(store, tmp_path / "reference.parquet", config, progress=False)
    with Client(cluster) as client:
        victim = next(iter(client.run(os.getpid).values()))
        job = threading.Thread(target=extract_features, args=(store, tmp_path / "cells.parquet", config),
                               kwargs={"scheduler": cluster, "progress": False})
        job.start()
        parts = tmp_path / "cells.parquet.parts"
        while job.is_alive() and not (parts / "part-000001.parquet").exists():
            time.sleep(0.002)
        os.kill(victim, signal.SIGKILL)
        killed_mid_run = job.is_alive()
        job.join(timeout=300)
        client.wait_for_workers(2, timeout=120)
        assert victim not in client.run(os.getpid).values()
    assert killed_mid_run and not job.is_alive()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cells.parquet"),
                                  pd.read_parquet(tmp_path / "reference.parquet"))


def test_a_worker_killed_while_preparing_loses_and_duplicates_no_field(cluster: str, four_fields: Path,
                                                                        tmp_path: Path):
    from dask.distributed import Client

    with Client(cluster) as client:
        victim = next(iter(client.run(os.getpid).values()))
        job = threading.Thread(target=prepare, args=(four_fields / "manifest.csv", tmp_path / "store",
                                                     PrepareConfig(illumination={"min_fields": 2})),
                               kwargs={"scheduler": cluster, "progress": False})
        job.start()
        fields = tmp_path / "store.partial" / "fields"
        while job.is_alive() and not (fields.is_dir() and any(fields.iterdir())):
            time.sleep(0.002)
        os.kill(victim, signal.SIGKILL)
        killed_mid_run = job.is_alive()
        job.join(timeout=300)
        client.wait_for_workers(2, timeout=120)
    assert killed_mid_run and not job.is_alive()
    on_cluster, reference = CropStore(tmp_path / "store"), CropStore(four_fields / "store")
    np.testing.assert_array_equal(on_cluster.read(slice(None)), reference.read(slice(None)))
    pd.testing.assert_frame_equal(on_cluster.cells, reference.cells)


def test_a_local_worker_killed_mid_task_loses_and_duplicates_no_cell(four_fields: Path, tmp_path: Path):
    from distributed import default_client

    store, config = four_fields / "store", FeaturesConfig(chunk_cells=8)
    extract_features(store, tmp_path / "reference.parquet", config, progress=False)
    job = threading.Thread(target=extract_features, args=(store, tmp_path / "cells.parquet", config),
                           kwargs={"workers": 2, "progress": False})
    job.start()
    parts = tmp_path / "cells.parquet.parts"
    while job.is_alive() and not (parts / "part-000001.parquet").exists():
        time.sleep(0.002)
    victim = next(iter(default_client().run(os.getpid).values()))  # the job's local cluster
    os.kill(victim, signal.SIGKILL)
    killed_mid_run = job.is_alive()
    job.join(timeout=300)
    assert killed_mid_run and not job.is_alive()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cells.parquet"),
                                  pd.read_parquet(tmp_path / "reference.parquet"))
