"""The models that do not decide a die, scored after the station has its answer.

In shadow mode the challenger, in canary mode the model the die's route passes over: each
scores the die on its own batcher once the deciding model's inspection is stored and
answered, and its decision goes to the inspection log as a record of its own (spooled and
fsynced like an inspection, replayed after a crash), added to the acknowledged inspection.
A decision that never comes (the model failed, was swapped or was full, the disk refused
it, the process died first) is only missing and counted: the inspection stays as it was.
"""

from __future__ import annotations

import asyncio
import logging

from service.inspection_log import InspectionLog
from service.log_tables import added_decision_record
from service.metrics import ServiceMetrics
from service.models import LoadedModel
from service.records import DieInput

log = logging.getLogger("dieguard.service")


class ShadowScoring:
    """The decisions still being scored after their answers; `drain` waits for them."""

    def __init__(self, inspection_log: InspectionLog, metrics: ServiceMetrics) -> None:
        self.log, self.metrics = inspection_log, metrics
        self._running: set[asyncio.Task] = set()

    def score(self, die: DieInput, inspection_id: str, models: list[LoadedModel]) -> None:
        """Score the die on each model in the background and log each decision."""
        loop = asyncio.get_running_loop()
        for model in models:
            task = loop.create_task(self._score(die, inspection_id, model))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def pending(self) -> int:
        """Decisions being scored or written."""
        return len(self._running)

    async def drain(self) -> None:
        """Wait until every decision started so far is logged or lost (at shutdown)."""
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _score(self, die: DieInput, inspection_id: str, model: LoadedModel) -> None:
        try:
            decision = (await model.batcher.submit(die)).decision
            record = added_decision_record(inspection_id, die.die_id, die.received_at, decision)
            await asyncio.to_thread(self.log.record, record)
        except Exception as err:  # only this decision is lost; the inspection stands
            self.metrics.shadow_lost.labels(model.role).inc()
            log.warning("the %s decision on %s is lost: %r", model.role, die.die_id, err)
            return
        self.metrics.observe_decision(
            decision.class_name, decision.model_version, decision.role, served=False
        )
