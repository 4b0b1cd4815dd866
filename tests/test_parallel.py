"""Where work runs: in-process or on a local dask cluster."""

from __future__ import annotations

import os

import pytest

from morphospace.parallel import compute_context


@pytest.mark.slow
def test_local_workers_keep_the_default_memory_trimming_and_one_thread_each():
    with compute_context(workers=2) as client:
        trims = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
        threads = client.run(os.environ.get, "OMP_NUM_THREADS")
    assert len(trims) == 2 and set(trims.values()) == {None}
    assert set(threads.values()) == {"1"}
