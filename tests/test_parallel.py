"""Where work runs: in-process or on a local dask cluster."""

from __future__ import annotations

import os
import sys

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from morphospace.parallel import compute_context, local_start_method


@pytest.mark.slow
@pytest.mark.parametrize("start_method", [None, "spawn"])
def test_local_workers_keep_the_default_memory_trimming_and_one_thread_each(start_method):
    with threadpool_limits(limits=2), compute_context(workers=2, start_method=start_method) as client:
        trims = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
        threads = client.run(os.environ.get, "OMP_NUM_THREADS")
        pools = client.run(threadpool_info)  # a library function: spawned workers cannot import this test module
        pids = client.run(os.getpid)
    assert len(trims) == 2 and set(trims.values()) == {None}
    assert set(threads.values()) == {"1"}
    assert all({pool["num_threads"] for pool in info} == {1} for info in pools.values())  # not the machine's 2
    assert os.getpid() not in pids.values()


def test_local_workers_start_from_a_forkserver_on_linux_and_spawn_elsewhere(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert local_start_method() == "forkserver"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert local_start_method() == "spawn"


@pytest.mark.slow
def test_local_workers_are_not_forked_from_the_calling_process():
    """This process runs threads (dask's event loop at least): a worker forked from it could
    inherit a lock held by one of them, and wait on it for ever."""
    with compute_context(workers=2) as client:
        parents = client.run(os.getppid)
        # imported here by conftest before any test; the lambda travels by value and imports nothing
        loaded = client.run(lambda: "morphospace.io.store" in sys.modules)
    assert len(parents) == 2 and os.getpid() not in parents.values()
    assert set(loaded.values()) == {True}  # imported by the server before it forked them

