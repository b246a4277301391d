"""Micro-batching: concurrent submissions share model calls and each gets its own result."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.batcher import BatcherClosedError, DeadlineError, MicroBatcher, OverloadedError


def run(coroutine):
    return asyncio.run(coroutine)


class Recorder:
    """A model stand-in that records the batches it was called with."""

    def __init__(self, delay_s: float = 0.0, fail_on=None) -> None:
        self.batches: list[list] = []
        self.delay_s, self.fail_on = delay_s, fail_on
        self.release = threading.Event()

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot score {self.fail_on}")
        if self.delay_s:
            self.release.wait(self.delay_s)
        return [x * 10 for x in items]


def test_concurrent_items_are_batched_and_answered_in_order():
    model = Recorder()

    async def main():
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=50)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        await batcher.stop()
        return results

    assert run(main()) == [i * 10 for i in range(20)]
    assert [len(b) for b in model.batches] == [8, 8, 4]


def test_a_lone_item_waits_at_most_the_window():
    model = Recorder()

    async def main():
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=1)
        batcher.start()
        first = await batcher.submit(1)
        second = await batcher.submit(2)
        await batcher.stop()
        return first, second

    assert run(main()) == (10, 20)
    assert model.batches == [[1], [2]]


def test_dies_arriving_during_a_call_form_the_next_batch():
    model = Recorder(delay_s=0.2)

    async def main():
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=1)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # the first call is running
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
        model.release.set()
        await asyncio.gather(first, *rest)
        await batcher.stop()

    run(main())
    assert model.batches == [[0], [1, 2, 3, 4, 5]]


def test_a_die_that_fails_fails_alone():
    model = Recorder(fail_on=3)

    async def main():
        batcher = MicroBatcher(model, max_batch=4, max_wait_ms=20)
        batcher.start()
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(8)), return_exceptions=True
        )
        await batcher.stop()
        return results

    results = run(main())
    assert isinstance(results[3], ValueError) and "cannot score 3" in str(results[3])
    assert results[:3] + results[4:] == [0, 10, 20, 40, 50, 60, 70]
    assert [0, 1, 2, 3] in model.batches and [0] in model.batches  # the batch, then one by one


def test_a_model_returning_too_few_rows_fails_the_dies_instead_of_hanging():
    async def main():
        batcher = MicroBatcher(lambda items: items[:-1], max_batch=4, max_wait_ms=20)
        batcher.start()
        results = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True), 5
        )
        await batcher.stop()
        return results

    results = run(main())
    assert all(isinstance(r, RuntimeError) and "0 results for 1" in str(r) for r in results)


def test_a_full_queue_refuses_at_once():
    model = Recorder(delay_s=5.0)

    async def main():
        batcher = MicroBatcher(model, max_batch=1, max_wait_ms=0, max_queue=3, timeout_s=5)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # the first call is running; three more fill the queue
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 4)]
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError, match="3 dies are already waiting"):
            await batcher.submit(9)
        model.release.set()
        answers = await asyncio.gather(first, *queued)
        await batcher.stop()
        return answers

    assert run(main()) == [0, 10, 20, 30]


def test_a_hung_model_meets_the_deadline_and_reads_as_stalled():
    model = Recorder(delay_s=30.0)

    async def main():
        batcher = MicroBatcher(model, max_batch=2, max_wait_ms=1, timeout_s=0.3)
        batcher.start()
        started = time.monotonic()
        with pytest.raises(DeadlineError, match="within 0.30 s"):
            await batcher.submit(1)
        waited = time.monotonic() - started
        await asyncio.sleep(0.1)
        stalled_while_hung = batcher.stalled()
        model.release.set()  # the model answers again
        await asyncio.sleep(0.1)
        recovered = await batcher.submit(2), batcher.stalled()
        await batcher.stop()
        return waited, stalled_while_hung, recovered

    waited, stalled_while_hung, recovered = run(main())
    assert 0.3 <= waited < 1.0 and stalled_while_hung
    assert recovered == (20, False)


def test_stop_answers_what_was_submitted_then_refuses():
    model = Recorder()

    async def main():
        batcher = MicroBatcher(model, max_batch=2, max_wait_ms=1)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.stop()
        answered = await asyncio.gather(*pending)
        with pytest.raises(BatcherClosedError):
            await batcher.submit(9)
        return answered

    assert run(main()) == [0, 10, 20, 30, 40]
