"""Where work runs: in-process or on a local dask cluster."""

from __future__ import annotations

import os

import pytest

from morphospace.parallel import compute_context, run_parallel_ordered


def _worker_environment(_: int) -> tuple[str | None, str | None]:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")


@pytest.mark.slow
def test_local_workers_keep_the_default_memory_trimming_and_one_thread_each():
    with compute_context(workers=2) as client:
        environments = run_parallel_ordered(_worker_environment, [0, 1], client, progress=False)
    assert environments == [(None, "1"), (None, "1")]
