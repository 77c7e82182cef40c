"""The one runner: picklable jobs in this process, in a pool of worker processes, or on Dask.

``run(work, context, jobs)`` calls ``work(*context, *job)`` for every job and yields ``(index,
result, error)`` as each finishes, in any order: ``result`` is what ``work`` returned, or None where
it raised ``error`` (the rest go on). ``context`` is what every job shares (a folder run's key and
gate policy); it travels to each worker once (on Dask under a random name, so no task name, log line
or dashboard entry carries it). The runner knows nothing of schemes, keys or files: ``work`` is a
module-level function a worker can import, and jobs go out in batches so that scheduling a task
costs less than the work in it.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Sequence

BATCH_JOBS = 32  # jobs per task at most, for the pool and Dask (see _batches)
BATCHES_PER_WORKER = 16
MIN_ITEMS_PER_WORKER = 32  # map_ordered's default: below this a worker's start-up outweighs its share

Outcome = tuple[int, Any, "BaseException | None"]


def run(work: Callable[..., Any], context: tuple, jobs: Sequence[tuple], workers: int = 1,
        scheduler: str | None = None, per_task: int | None = None) -> Iterator[Outcome]:
    """``(index, result, error)`` for each ``work(*context, *job)`` of ``jobs`` as it finishes.

    In this process (``workers`` 1, or a single job), a pool of ``workers`` processes
    (:func:`pool_context` says how they start), or Dask (``scheduler``: ``"local"`` for a
    LocalCluster of ``workers`` processes, or a scheduler's address). Jobs start in the order
    given; ``per_task`` jobs go to a worker at a time (default: as many as keep the scheduling
    cheap, see :func:`_batches`; 1 for jobs of minutes, so the last ones spread over the workers).
    """
    if scheduler is not None:
        from medveil.parallel.cluster import dask_client

        with dask_client(scheduler, workers) as client:
            yield from _run_on_dask(client, work, context, jobs, per_task)
    elif workers <= 1 or len(jobs) <= 1:
        for index, job in enumerate(jobs):
            yield from _work_batch(work, context, [(index, *job)])
    else:
        with ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=_init_worker,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_work_batch, work, context, batch): batch
                       for batch in _batches(jobs, workers, per_task)}
            for future in as_completed(futures):
                yield from _outcomes(future, futures[future])


_cores = 1


def set_cores(count: int) -> int:
    """Let :func:`map_ordered` use ``count`` processes in this process; returns the count it replaces.

    One by default: a library caller gets no processes it did not ask for (a script that asks must
    guard its main module with ``if __name__ == "__main__"``, as multiprocessing's spawn requires).
    A ``medveil`` command gives it :func:`available_cores` while it runs; a bench cell its share of them.
    """
    global _cores
    previous, _cores = _cores, max(1, count)
    return previous


def available_cores() -> int:
    """Return the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_ordered(work: Callable[..., Any], context: tuple, items: Sequence[Any],
                min_items: int = MIN_ITEMS_PER_WORKER) -> list:
    """``[work(*context, item) for item in items]`` over a pool of :func:`set_cores` processes, in order.

    For per-image work that holds one core (tracing, rendering): a pool pays for its start-up
    (a spawned worker imports medveil anew), so it is used only where every worker gets at least
    ``min_items``; a daemonic process (which may not start children) works alone. The first
    error is raised, as the loop would raise it.
    """
    workers = min(_cores, len(items) // max(1, min_items))
    if workers <= 1 or multiprocessing.current_process().daemon:
        return [work(*context, item) for item in items]
    results: list = [None] * len(items)
    for index, result, error in run(work, context, [(item,) for item in items], workers):
        if error is not None:
            raise error
        results[index] = result
    return results


def pool_context() -> multiprocessing.context.BaseContext:
    """How to start worker processes: fork where that is safe, spawn where not.

    A forked worker starts in milliseconds with this process's imports; a spawned one imports
    medveil anew (~0.4 s each, which made two workers slower than one on a 200 MB folder). Fork is
    unsafe once another thread runs (it may hold a lock the child inherits held) or once numba or
    torch is loaded (their thread pools do not survive a fork), so those processes spawn. A forked
    worker shares what its parent holds, a folder run's lock included (:func:`medveil.io.manifest.run_lock`):
    a killed run's folder stays locked until its workers, which follow it within half a second, have
    stopped writing.
    """
    if threading.active_count() > 1 or not {"numba", "torch"}.isdisjoint(sys.modules):
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("fork")


def _init_worker(parent: int) -> None:
    # Parallelism comes from the processes. Importing numba just to say so would cost each worker
    # ~0.3 s; it reads this when (if ever) a volume loads the compiled loop.
    if "numba" in sys.modules:
        sys.modules["numba"].set_num_threads(1)
    else:
        os.environ["NUMBA_NUM_THREADS"] = "1"

    def exit_with_parent() -> None:  # a SIGKILLed run must not leave its workers behind
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()


def _run_on_dask(client, work: Callable[..., Any], context: tuple, jobs: Sequence[tuple],
                 per_task: int | None = None) -> Iterator[Outcome]:
    """``(index, result, error)`` for each of ``jobs`` as Dask workers finish them, in any order.

    ``context`` travels to the workers once (:func:`~medveil.parallel.cluster.scatter_secret`); task names
    carry no job's arguments either. A task whose worker dies is rerun elsewhere by Dask, so ``work``
    must be safe to repeat (a folder run's outputs are written atomically: a rerun replaces nothing
    but temporaries and its own files, with the same bytes).
    """
    import uuid

    from distributed import as_completed as finished

    from medveil.parallel.cluster import scatter_secret

    shared = scatter_secret(client, context)
    name = uuid.uuid4().hex[:8]
    workers = len(client.scheduler_info()["workers"])
    futures = {client.submit(_work_batch, work, shared, batch, pure=False, key=f"medveil-run-{name}-{i}"): batch
               for i, batch in enumerate(_batches(jobs, workers, per_task))}
    for future in finished(futures):
        yield from _outcomes(future, futures.pop(future))  # released: a worker lost later redoes no finished job


def _batches(jobs: Sequence[tuple], workers: int, per_task: int | None = None) -> list[list[tuple]]:
    """``(index, *job)`` for ``jobs``, cut in order into tasks of ``per_task`` jobs each.

    By default each carries up to :data:`BATCH_JOBS` (a task costs a few milliseconds of scheduling,
    as much as a small DICOM file's work), while every worker still gets :data:`BATCHES_PER_WORKER`
    tasks or more to balance the load.
    """
    size = per_task or max(1, min(BATCH_JOBS, len(jobs) // (BATCHES_PER_WORKER * max(1, workers))))
    numbered = [(index, *job) for index, job in enumerate(jobs)]
    return [numbered[start:start + size] for start in range(0, len(numbered), size)]


def _outcomes(future, batch: list[tuple]) -> list[Outcome]:
    """Return a finished batch's ``(index, result, error)``.

    Every job of it fails with the task where the task itself failed (a worker that crashed on one of its jobs,
    say), as a failed job does.
    """
    error = future.exception()
    return future.result() if error is None else [(index, None, error) for index, *_ in batch]


def _work_batch(work: Callable[..., Any], context: tuple, batch: list[tuple]) -> list[Outcome]:
    """``(index, result, error)`` for each ``(index, *job)`` of ``batch``, one after another."""
    outcomes: list[Outcome] = []
    for index, *job in batch:
        try:
            outcomes.append((index, work(*context, *job), None))
        except Exception as exc:
            outcomes.append((index, None, exc))
    return outcomes
