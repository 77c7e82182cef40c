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


def test_map_ordered_keeps_the_order_raises_the_first_error_and_stays_serial_unless_asked(monkeypatch):
    from typer.testing import CliRunner

    from medveil.cli import app

    assert CliRunner().invoke(app, ["attack", "list"]).exit_code == 0  # a command uses every core, then gives them back
    started = []
    monkeypatch.setattr(parallel, "run", lambda *a, **k: started.append(a) or [])
    assert parallel.map_ordered(operator.mul, (3,), list(range(100))) == [3 * i for i in range(100)]
    assert not started  # a library caller gets no processes it did not ask for
    monkeypatch.undo()
    monkeypatch.setattr(parallel, "_cores", 2)
    assert parallel.map_ordered(operator.mul, (3,), list(range(100)), min_items=8) == [3 * i for i in range(100)]
    with pytest.raises(ZeroDivisionError):
        parallel.map_ordered(operator.truediv, (1,), [1, 2, 0, 4] * 8, min_items=4)


def test_structural_traces_on_every_core_with_the_same_images(monkeypatch, rng):
    import numpy as np

    import medveil

    scheme = medveil.from_key(medveil.generate_key("structural", size=24, raster=32))
    images = rng.integers(0, 256, (72, 32, 32), dtype=np.uint8)
    images[:, 8:24, 8:24] = 255
    used = []
    run = parallel.run
    monkeypatch.setattr(parallel, "run", lambda *a, **k: used.append(a[3]) or run(*a, **k))
    serial = scheme(images)
    monkeypatch.setattr(parallel, "_cores", 2)
    assert np.array_equal(scheme(images), serial) and used == [2]


def test_a_command_keeps_image_sized_arrays_on_the_heap(monkeypatch):
    """glibc maps and unmaps each buffer over its threshold anew: a bench cell spent a third of its time
    in the kernel zeroing pages. Every medveil command sets the thresholds once."""
    import platform

    from typer.testing import CliRunner

    from medveil.cli import app
    from medveil.parallel import memory

    if platform.libc_ver()[0] == "glibc":
        assert memory.keep_arrays_on_heap()
    calls = []
    monkeypatch.setattr(memory, "keep_arrays_on_heap", lambda: calls.append(1) or True)
    assert CliRunner().invoke(app, ["attack", "list"]).exit_code == 0 and calls == [1]
