"""Micro-batching: concurrent requests for one model grouped into one model call.

The first waiting die opens a batch; dies arriving within `max_wait_ms` join it, up to
`max_batch`. While a batch runs (in a worker thread) new dies queue for the next one, so under
load batches fill up without any die waiting longer than one model call plus the window.

The queue is bounded (`max_queue`: past it `submit` raises OverloadedError at once) and every
die has a deadline (`timeout_s`: DeadlineError when its answer is not there by then). A call
that raises is retried die by die, so one bad die fails alone. `stalled` says when a model
call has run past the deadline: the model has stopped answering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_STOP = object()  # queued by stop(): finish what came before it, then end


class BatcherClosedError(RuntimeError):
    """The batcher was stopped (the model is being replaced or the service is shutting down)."""


class OverloadedError(RuntimeError):
    """The queue is full: the die was not accepted (retry after a moment)."""


class DeadlineError(TimeoutError):
    """The die's answer did not come within its deadline (the die is dropped)."""


class MicroBatcher:
    """Groups `submit` calls into calls of `run(items) -> results` (same order, same length)."""

    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        max_batch: int = 8,
        max_wait_ms: float = 4.0,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "model",
        max_queue: int = 64,
        timeout_s: float = 1.0,
    ) -> None:
        self._run = run
        self.max_batch, self.max_queue, self.timeout_s = max_batch, max_queue, timeout_s
        self.max_wait = max_wait_ms / 1000.0
        self._on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._closing = False
        self._busy_since: float | None = None  # monotonic start of the running model call
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue(self.max_queue + 1)  # + 1: room for the stop marker
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, item: Any, timeout_s: float | None = None) -> Any:
        """Queue one item; returns its result, or raises what the model call raised.

        Raises:
            OverloadedError: the queue is full. DeadlineError: no answer within `timeout_s`
            (default: the batcher's). BatcherClosedError: the batcher is stopping.
        """
        if self._worker is None or self._worker.done() or self._closing:
            raise BatcherClosedError("the model is not accepting dies")
        if self._queue.qsize() >= self.max_queue:
            raise OverloadedError(f"{self.max_queue} dies are already waiting for the model")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(future, max(timeout, 0.0))
        except TimeoutError as err:
            raise DeadlineError(f"no answer from the model within {timeout:.2f} s") from err

    def stalled(self) -> bool:
        """True while a model call has been running for longer than the deadline."""
        started = self._busy_since
        return started is not None and time.monotonic() - started > self.timeout_s

    def queued(self) -> int:
        """Dies waiting for a model call."""
        return 0 if self._queue is None else self._queue.qsize()

    async def stop(self) -> None:
        """Answer every die already submitted, then end the worker."""
        if self._worker is not None and not self._closing:
            self._closing = True
            await self._queue.put(_STOP)
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=False)

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch = await self._collect(asyncio.get_running_loop())
            stopping = batch[-1] is _STOP if batch else True
            batch = [entry for entry in batch if entry is not _STOP]
            live = [(item, fut) for item, fut in batch if not fut.done()]  # drop timed out
            if live:
                await self._answer(live)

    async def _answer(self, live: list) -> None:
        """One model call for the batch; when it fails, one call per die."""
        start = time.perf_counter()
        try:
            results = await self._call([item for item, _ in live])
        except Exception as err:
            if len(live) == 1:
                return _settle(live, error=err)
            for entry in live:  # a bad die, or a batch the model cannot take: die by die
                await self._answer([entry])
            return
        if self._on_batch is not None:
            self._on_batch(len(live), time.perf_counter() - start)
        _settle(live, results=results)

    async def _call(self, items: list) -> list:
        loop = asyncio.get_running_loop()
        self._busy_since = time.monotonic()
        try:
            results = await loop.run_in_executor(self._executor, self._run, items)
        finally:
            self._busy_since = None
        if len(results) != len(items):
            raise RuntimeError(f"the model returned {len(results)} results for {len(items)} dies")
        return results

    async def _collect(self, loop) -> list:
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch and batch[-1] is not _STOP:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch


def _settle(live: list, results: list | None = None, error: Exception | None = None) -> None:
    """Give each waiting die its result, or the error."""
    for i, (_, fut) in enumerate(live):
        if fut.done():
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(results[i])
