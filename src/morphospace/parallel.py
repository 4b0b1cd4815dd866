"""Run a function over many items, in-process or on a dask.distributed cluster, with a progress bar.

Open one :func:`compute_context` for a whole job and pass it to every :func:`run_parallel` call,
so the cluster starts once. Work is submitted in a bounded window, so memory does not grow with
the number of items; results come back in completion order, each paired with its item's position.

Examples
--------
>>> with compute_context(workers=1) as client:
...     sorted(run_parallel(abs, [-1, -2, 3], client, progress=False))
[(0, 1), (1, 2), (2, 3)]
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm

__all__ = ["compute_context", "run_parallel", "run_parallel_ordered", "worker_count", "local_start_method",
           "worker_preload"]

logger = logging.getLogger(__name__)

#: Dask configuration of local workers. dask's nannies set ``MALLOC_TRIM_THRESHOLD_=65536`` in each
#: worker's environment, so that freed memory goes back to the system early; the trims this causes
#: slowed CellProfiler measurement (many small arrays per crop) by 10-15% per crop on BBBC021 crops,
#: so local workers keep the C library's own, adaptive threshold.
LOCAL_WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def local_start_method() -> str:
    """How local workers start: ``"forkserver"`` on Linux, else ``"spawn"`` (macOS, Windows).

    A forkserver is a fresh single-threaded process that imports the modules the workers need
    once (see :func:`worker_preload`) and forks every worker from itself, so workers start
    quickly without inheriting this process's threads. Forking this process directly is not safe
    once it runs threads (dask's event loop, a progress bar, PyTorch's pools): a worker forked
    while one of them held a lock waits for it for ever."""
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


def worker_preload() -> list[str]:
    """Modules a forkserver imports before it forks workers: dask's worker and every morphospace
    module this process has imported, so that a worker can run this process's functions at once.

    >>> "distributed" in worker_preload() and "morphospace.parallel" in worker_preload()
    True
    """
    ours = sorted(name for name in sys.modules if name == "morphospace" or name.startswith("morphospace."))
    return ["distributed", *ours]


def _start_forkserver() -> None:
    """Sets the forkserver's preload and starts it, so that it imports while the scheduler starts
    (later calls change nothing: the server, once running, keeps the modules it imported). dask
    sets its own list the first time it makes a forkserver context, so that happens first and this
    list replaces it."""
    import multiprocessing
    from multiprocessing import forkserver

    from distributed.utils import get_mp_context

    get_mp_context()
    multiprocessing.get_context("forkserver").set_forkserver_preload(worker_preload())
    forkserver.ensure_running()


def _one_thread_plugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class OneThreadPerWorker(WorkerPlugin):
        """Runs every local worker's native thread pools (BLAS, OpenMP) on one thread, restarted
        workers included: a worker forked from a forkserver inherits the pools the server's
        imports sized for the whole machine, which ``OMP_NUM_THREADS`` set at the worker's start
        no longer resizes."""

        def setup(self, worker: Any) -> None:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1)

    return OneThreadPerWorker()


@contextlib.contextmanager
def compute_context(workers: int = 1, scheduler: str | None = None,
                    start_method: str | None = None) -> Iterator[Any]:
    """Where work runs: None (this process) for ``workers <= 1`` without a scheduler; otherwise a
    dask.distributed client connected to ``scheduler`` (``tcp://host:8786``) or to a local
    cluster of ``workers`` single-threaded processes started by ``start_method`` (``"fork"``,
    ``"spawn"`` or ``"forkserver"``; None: :func:`local_start_method`), closed on exit."""
    if workers <= 1 and not scheduler:
        yield None
        return
    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            logger.info("dask scheduler %s, %d worker(s); dashboard %s", scheduler, worker_count(client),
                        client.dashboard_link)
            yield client
        return
    method = start_method or local_start_method()
    with contextlib.ExitStack() as stack:
        # for the cluster's whole life: the nannies read it again to restart a worker that died
        start = {"distributed.worker.multiprocessing-method": method}
        stack.enter_context(dask.config.set({**LOCAL_WORKER_CONFIG, **start}))
        if method == "forkserver":
            _start_forkserver()
        cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                   dashboard_address=":0", silence_logs=logging.ERROR))
        client = stack.enter_context(Client(cluster))
        client.register_plugin(_one_thread_plugin(), name="morphospace-one-thread")
        logger.info("local dask cluster of %d worker(s); dashboard %s", workers, client.dashboard_link)
        yield client


def worker_count(client: Any) -> int:
    """Workers connected to ``client`` (1 for None: this process)."""
    if client is None:
        return 1
    return max(1, len(client.scheduler_info().get("workers", {})))


def run_parallel(
    func: Callable[[Any], Any],
    items: Sequence[Any],
    client: Any = None,
    progress: bool = True,
    desc: str = "",
    window: int | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(position, func(item))`` for every item.

    Parameters
    ----------
    func
        A picklable function of one item.
    items
        The work.
    client
        From :func:`compute_context`: None runs in this process.
    progress, desc
        Progress bar and its label.
    window
        Most items in flight at once on a cluster (default: 2 per worker).

    Exceptions raised by ``func`` propagate with their original type.
    """
    with tqdm(total=len(items), desc=desc, unit="item", disable=not progress) as bar:
        if client is None:
            for position, item in enumerate(items):
                yield position, func(item)
                bar.update(1)
            return
        yield from _run_on_cluster(func, items, client, bar, window)


def run_parallel_ordered(func: Callable[[Any], Any], items: Sequence[Any], client: Any = None, progress: bool = True,
                         desc: str = "") -> list[Any]:
    """``[func(item) for item in items]``, computed as :func:`run_parallel` computes them.

    >>> run_parallel_ordered(abs, [-1, -2, 3], progress=False)
    [1, 2, 3]
    """
    results: list[Any] = [None] * len(items)
    for position, result in run_parallel(func, items, client, progress, desc):
        results[position] = result
    return results


def _run_on_cluster(func, items, client, bar, window) -> Iterator[tuple[int, Any]]:
    from dask.distributed import as_completed

    limit = window or 2 * worker_count(client)
    pending = iter(enumerate(items))
    positions: dict[str, int] = {}
    queue = as_completed()

    def submit_next() -> None:
        for position, item in pending:
            future = client.submit(func, item, pure=False)
            positions[future.key] = position
            queue.add(future)
            return

    for _ in range(limit):
        submit_next()
    for future in queue:
        result = future.result()
        position = positions.pop(future.key)
        future.release()
        bar.update(1)
        yield position, result
        submit_next()
