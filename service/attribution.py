"""The decision share of one die's out-of-range parameters, from the serving model itself.

Each out-of-range value of a flagged die is set back to its training mean (z = 0) in a copy
of the die, the serving model decides those copies, and each share is the drop in the decided
class's log-odds (model.attribution). In the service the copies go through the model's
batcher like any die: batched with other dies, on the model's thread, under the request's
deadline.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np

from model.attribution import log_odds_drops
from model.schema import parameter_names
from service.batcher import MicroBatcher
from service.engine import DieOutput, ModelEngine
from service.records import DieInput


def anomaly_attribution(
    engine: ModelEngine, die: DieInput, output: DieOutput, anomalies: list[dict]
) -> dict[str, float]:
    """How much of a flagged die's decision each out-of-range parameter carries, with the
    engine called directly (for audits; the service uses `batched_attribution`).

    Empty for a die not flagged, for the vision-only baseline (one region, no process input)
    and without anomalies.

    Returns:
        {parameter name: drop in the decided class's log-odds without its value}.
    """
    if not _attributable(output, anomalies):
        return {}
    occluded = engine.predict(occluded_dies(engine, die, anomalies), output.decision.role)
    return _shares(output, occluded, anomalies)


async def batched_attribution(
    batcher: MicroBatcher,
    engine: ModelEngine,
    die: DieInput,
    output: DieOutput,
    anomalies: list[dict],
    timeout_s: float,
) -> dict[str, float]:
    """`anomaly_attribution` with the occluded copies submitted to the model's batcher.

    Raises:
        OverloadedError, DeadlineError (no answer within `timeout_s`), BatcherClosedError.
    """
    if not _attributable(output, anomalies):
        return {}
    runs = [
        asyncio.ensure_future(batcher.submit(copy, timeout_s))
        for copy in occluded_dies(engine, die, anomalies)
    ]
    try:
        occluded = await asyncio.gather(*runs)
    except BaseException:
        for run in runs:
            run.cancel()
        raise
    return _shares(output, occluded, anomalies)


def occluded_dies(engine: ModelEngine, die: DieInput, anomalies: list[dict]) -> list[DieInput]:
    """Copies of the die, each with one anomaly's value set back to its training mean."""
    index = {name: i for i, name in enumerate(parameter_names())}
    mean = engine.scaler.mean
    return [
        replace(die, process=die.process | {a["name"]: float(mean[index[a["name"]]])})
        for a in anomalies
    ]


def _attributable(output: DieOutput, anomalies: list[dict]) -> bool:
    return output.decision.flagged and bool(anomalies) and output.region_map.size > 1


def _shares(output: DieOutput, occluded: list[DieOutput], anomalies: list[dict]) -> dict:
    logits = np.stack([output.logits, *(o.logits for o in occluded)])
    drops = log_odds_drops(logits, output.decision.defect_class)
    return {a["name"]: float(s) for a, s in zip(anomalies, drops)}
