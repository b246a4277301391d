"""Micro-batching: concurrent submissions share model calls and each gets its own result."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.batcher import BatcherClosedError, MicroBatcher


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


def test_a_failing_call_fails_only_its_batch():
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
    assert all(isinstance(r, ValueError) for r in results[:4])
    assert results[4:] == [40, 50, 60, 70]


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
