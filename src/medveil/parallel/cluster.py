"""Dask distributed, for work beyond one process: folder obfuscation and the benchmark grid.

``"local"`` starts a LocalCluster on this machine; anything else is the address of a running
scheduler (``tcp://host:8786``) whose workers reach the same folders as this process. Workers must
not be daemonic processes where they run the benchmark's oracle attacks, which start a child
process (start them with ``DASK_DISTRIBUTED__WORKER__DAEMON=False``; a LocalCluster is made so). Secrets go to
the workers with :func:`scatter_secret`, never as task arguments: Dask names and logs tasks by their
arguments' hashes, and shows them on its dashboard.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from medveil.errors import InputError
from medveil.io.image import first_line
from medveil.parallel.memory import MALLOC_THRESHOLDS


@contextmanager
def dask_client(scheduler: str, workers: int) -> Iterator:
    """Return a Dask distributed client.

    ``"local"`` starts a LocalCluster of ``workers`` single-threaded processes (gone with the block), anything else
    is a running scheduler's address (``tcp://host:8786``).
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--scheduler needs Dask: pip install 'dask[distributed]'") from None
    if scheduler == "local":
        # Oracle attacks keep the key in a child process (BlackBox): a daemonic worker may not start one.
        malloc = {f"distributed.nanny.pre-spawn-environ.{name}": value for name, value in MALLOC_THRESHOLDS.items()}
        with dask.config.set({"distributed.worker.daemon": False, **malloc}), \
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=30)
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {first_line(exc)}") from None
    with client:
        yield client


def scatter_secret(client, value: Any):
    """``value`` sent to every worker once under a random name (``hash=False``).

    No task name, log line or dashboard entry carries it, nor a hash of it. Returns the future to pass to tasks.
    """
    return client.scatter(value, broadcast=True, hash=False)


def local_threads(workers: int) -> int:
    """Torch threads per worker process of a LocalCluster of ``workers``: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // workers)
