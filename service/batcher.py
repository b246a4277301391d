"""Micro-batching: concurrent requests for one model grouped into one model call.

The first waiting die opens a batch; dies arriving within `max_wait_ms` join it, up to
`max_batch`. While a batch runs (in a worker thread) new dies queue for the next one, so under
load batches fill up without any die waiting longer than one model call plus the window.
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


class MicroBatcher:
    """Groups `submit` calls into calls of `run(items) -> results` (same order, same length)."""

    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        max_batch: int = 8,
        max_wait_ms: float = 4.0,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "model",
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, item: Any) -> Any:
        """Queue one item; returns its result, or raises what the model call raised."""
        if self._worker is None or self._worker.done() or self._closing:
            raise BatcherClosedError("the model is not accepting dies")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def stop(self) -> None:
        """Answer every die already submitted, then end the worker."""
        if self._worker is not None and not self._closing:
            self._closing = True
            await self._queue.put(_STOP)
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            batch = await self._collect(loop)
            stopping = batch[-1] is _STOP if batch else True
            batch = [entry for entry in batch if entry is not _STOP]
            live = [(item, fut) for item, fut in batch if not fut.done()]  # drop disconnected
            if not live:
                continue
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run, [item for item, _ in live]
                )
            except Exception as err:  # the model call failed: every die in it learns why
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            if self._on_batch is not None:
                self._on_batch(len(live), time.perf_counter() - start)
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)

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
