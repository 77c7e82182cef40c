"""The one runner: every job's result or error, in this process, a process pool, or Dask."""

import operator

import pytest

from medveil import parallel


@pytest.mark.parametrize("workers", [1, 2])
def test_every_job_gives_its_result_or_its_error_and_the_rest_go_on(workers):
    outcomes = sorted(parallel.run(operator.truediv, (12,), [(3,), (0,), (4,)], workers=workers), key=lambda o: o[0])
    assert [(index, result) for index, result, _ in outcomes] == [(0, 4.0), (1, None), (2, 3.0)]
    assert outcomes[0][2] is None and isinstance(outcomes[1][2], ZeroDivisionError)


def test_jobs_go_out_in_batches_that_still_balance_the_load():
    jobs = [(i,) for i in range(1000)]
    batches = parallel._batches(jobs, workers=2)
    assert [job for batch in batches for job in batch] == [(i, i) for i in range(1000)]  # numbered, none lost
    assert max(map(len, batches)) <= parallel.BATCH_JOBS and len(batches) >= 2 * parallel.BATCHES_PER_WORKER
