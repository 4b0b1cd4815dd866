"""Where work runs: in-process or on a local dask cluster."""

from __future__ import annotations

import os
import sys

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from morphospace.parallel import compute_context, local_start_method


@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_local_workers_keep_the_default_memory_trimming_and_one_thread_each(start_method):
    with threadpool_limits(limits=2), compute_context(workers=2, start_method=start_method) as client:
        trims = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
        threads = client.run(os.environ.get, "OMP_NUM_THREADS")
        pools = client.run(threadpool_info)  # a library function: spawned workers cannot import this test module
        pids = client.run(os.getpid)
    assert len(trims) == 2 and set(trims.values()) == {None}
    assert set(threads.values()) == {"1"}
    assert all({pool["num_threads"] for pool in info} == {1} for info in pools.values())  # forked: not the parent's 2
    assert os.getpid() not in pids.values()


def test_local_workers_fork_on_linux_and_spawn_elsewhere(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert local_start_method() == "fork"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert local_start_method() == "spawn"
