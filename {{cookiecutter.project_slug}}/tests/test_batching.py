"""The batcher alone, with a stand-in model: what each request gets back, and when."""

import asyncio
from typing import Any

from {{ cookiecutter.module_name }}.runtime.model_input import Rows
from {{ cookiecutter.module_name }}.serving.batching import Batcher, ScoringError
from {{ cookiecutter.module_name }}.serving.model_process import predict_jobs
from {{ cookiecutter.module_name }}.serving.protocol import IdentifiedRows


def double(jobs: list[IdentifiedRows]) -> list[Any]:
    """A model that doubles `x`, and fails on a row holding "bad"."""
    rows = [row for _, rows in jobs for row in rows]
    if any(row["x"] == "bad" for row in rows):
        raise ValueError("bad row")
    return [2 * row["x"] for row in rows]


class Recorder:
    """Predicts batches with `double` and remembers their sizes in rows."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def __call__(self, jobs: list[IdentifiedRows]) -> list[Any]:
        self.batches.append(sum(len(rows) for _, rows in jobs))
        await asyncio.sleep(0.01)  # the model is busy: requests queue up meanwhile
        return predict_jobs(double, jobs)


def requests(sizes: list[int]) -> list[Rows]:
    """Requests of the given sizes, with distinct values across all of them."""
    start = 0
    result = []
    for size in sizes:
        result.append([{"x": value} for value in range(start, start + size)])
        start += size
    return result


async def serve(batcher: Batcher, jobs: list[Rows]) -> list[Any]:
    running = asyncio.create_task(batcher.run())
    try:
        return await asyncio.gather(
            *(batcher.submit(rows) for rows in jobs), return_exceptions=True
        )
    finally:
        running.cancel()


def test_concurrent_requests_share_batches_and_each_gets_its_own_rows() -> None:
    recorder = Recorder()
    jobs = requests([1, 3, 2, 1, 5, 1, 1, 2])

    results = asyncio.run(serve(Batcher(recorder, max_rows=64, max_wait=0.0), jobs))

    assert [list(result) for result in results] == [[2 * row["x"] for row in rows] for rows in jobs]
    assert len(recorder.batches) < len(jobs)


def test_a_request_is_never_split_and_batches_respect_max_rows() -> None:
    recorder = Recorder()
    jobs = requests([3, 10, 2, 2, 1])

    results = asyncio.run(serve(Batcher(recorder, max_rows=4, max_wait=0.0), jobs))

    assert [len(result) for result in results] == [3, 10, 2, 2, 1]
    assert 10 in recorder.batches  # larger than max_rows: alone, whole
    assert all(size <= 4 for size in recorder.batches if size != 10)


def test_a_bad_request_fails_alone() -> None:
    jobs = [[{"x": 1}], [{"x": "bad"}], [{"x": 3}]]

    results = asyncio.run(serve(Batcher(Recorder(), max_rows=64, max_wait=0.05), jobs))

    assert list(results[0]) == [2]
    assert isinstance(results[1], ValueError)
    assert list(results[2]) == [6]


def test_a_wrong_number_of_predictions_is_an_error_not_a_misaligned_answer() -> None:
    [outcome] = predict_jobs(lambda jobs: [0, 0], [("a", [{"x": 1}, {"x": 2}, {"x": 3}])])

    assert isinstance(outcome, ValueError)
    assert "2 predictions for 3 rows" in str(outcome)


def test_a_lone_caller_does_not_wait_for_the_batch_window() -> None:
    async def one_request() -> Any:
        batcher = Batcher(Recorder(), max_rows=64, max_wait=60.0)
        return await asyncio.wait_for(serve(batcher, [[{"x": 1}]]), timeout=10)

    assert [list(result) for result in asyncio.run(one_request())] == [[2]]


def test_the_batcher_survives_a_batch_that_fails_outside_the_model() -> None:
    calls = 0

    async def flaky(jobs: list[IdentifiedRows]) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("counting the predictions failed")
        return predict_jobs(double, jobs)

    async def two_rounds() -> tuple[Any, Any]:
        batcher = Batcher(flaky, max_rows=64, max_wait=0.0)
        running = asyncio.create_task(batcher.run())
        try:
            first = await asyncio.gather(batcher.submit([{"x": 1}]), return_exceptions=True)
            second = await asyncio.wait_for(batcher.submit([{"x": 2}]), timeout=10)
            return first[0], second
        finally:
            running.cancel()

    first, second = asyncio.run(two_rounds())

    assert isinstance(first, ScoringError)
    assert list(second) == [4]


def test_a_batch_with_a_wrong_number_of_outcomes_is_retried_request_by_request() -> None:
    async def short(jobs: list[IdentifiedRows]) -> list[Any]:
        return predict_jobs(double, jobs)[:-1] if len(jobs) > 1 else predict_jobs(double, jobs)

    async def batch_then_alone() -> tuple[list[Any], Any]:
        batcher = Batcher(short, max_rows=64, max_wait=0.0)
        running = asyncio.create_task(batcher.run())
        try:
            # Queued together before the batcher wakes: one batch of three.
            batched = await asyncio.gather(
                *(batcher.submit(rows) for rows in requests([1, 1, 1])), return_exceptions=True
            )
            return batched, await asyncio.wait_for(batcher.submit([{"x": 5}]), timeout=10)
        finally:
            running.cancel()

    batched, alone = asyncio.run(batch_then_alone())

    # The batch failed as a whole; tried again one by one, each request is answered.
    assert [list(result) for result in batched] == [[0], [2], [4]]
    assert list(alone) == [10]


def test_a_split_that_fails_fails_each_request_alone() -> None:
    # Two rows predicted as one: the batch's split fails, then each request's own.
    [first, second] = predict_jobs(
        lambda jobs: [0], [("a", [{"x": 1}]), ("b", [{"x": 2}, {"x": 3}])]
    )

    assert list(first) == [0]
    assert isinstance(second, ValueError)
