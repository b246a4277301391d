"""One inspection: route the die, run the models, explain the decision, log everything.

The response waits only for the deciding model; the other model's decision (shadow or
canary), the image, the log record and the die's embedding are written afterwards, off the
response path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from registry import CHAMPION
from service.attribution import anomaly_attribution
from service.engine import DieOutput, ModelEngine
from service.explain import anomalous_parameters, explain, overlay_base64
from service.models import CANDIDATE
from service.records import DieInput
from service.state import ServiceState

log = logging.getLogger("dieguard.service")


class NoModelError(RuntimeError):
    """No champion is loaded yet (the service is not ready)."""


async def inspect(state: ServiceState, die: DieInput) -> dict:
    """Decide one die and return the API response body (see service.api)."""
    start = time.perf_counter()
    champion = state.pool.get(CHAMPION)
    if champion is None:
        raise NoModelError(state.pool.last_error or "no champion model is loaded yet")
    candidate = state.pool.get(CANDIDATE) if state.pool.wants_candidate() else None
    route = state.pool.routing.mode if candidate else "off"
    deciding = state.pool.routing.deciding_role(die.die_id) if candidate else CHAMPION
    models = {CHAMPION: champion, **({CANDIDATE: candidate} if candidate else {})}
    runs = {role: asyncio.ensure_future(m.batcher.submit(die)) for role, m in models.items()}
    try:
        output = await runs[deciding]
    except Exception:
        if deciding == CHAMPION:
            raise
        log.exception("the candidate failed on %s; the champion decides", die.die_id)
        deciding, output = CHAMPION, await runs[CHAMPION]
    body = await asyncio.to_thread(
        response_body, die, output, models[deciding].engine, state.config.anomaly_sigma
    )
    body |= {"route": route, "decided_by": deciding, "inspection_id": uuid.uuid4().hex}
    body["latency_ms"] = round((time.perf_counter() - start) * 1000.0, 2)
    state.spawn(_record(state, die, runs, body, output))
    return body


def response_body(die: DieInput, output: DieOutput, engine: ModelEngine, sigma: float) -> dict:
    """What the station gets back for one die (without routing and timing fields)."""
    d = output.decision
    anomalies = anomalous_parameters(die.process, engine.scaler, sigma)
    text = explain(
        d.class_name,
        d.flagged,
        d.confidence,
        output.region_map,
        anomalies,
        bool(die.note),
        anomaly_attribution(engine, die, output, anomalies),
    )
    return {
        "die_id": die.die_id,
        "wafer_id": die.wafer_id,
        "defect_class": d.defect_class,
        "class_name": d.class_name,
        "confidence": round(d.confidence, 4),
        "flagged": d.flagged,
        "defect_probability": round(d.defect_probability, 4),
        "probabilities": {k: round(v, 4) for k, v in d.probabilities.items()},
        "attention_heatmap": overlay_base64(output.region_map, die.image.shape[0]),
        "anomalous_parameters": anomalies,
        "missing_parameters": list(die.missing_parameters),
        "explanation": text,
        "model_version": d.model_version,
        "model_kind": d.model_kind,
    }


async def _record(state: ServiceState, die, runs: dict, body: dict, output: DieOutput) -> None:
    """Log the inspection with every model's decision once all have answered."""
    decisions = []
    for role, run in runs.items():
        try:
            decisions.append((await run).decision)
        except Exception as err:  # logged below; the station already has its answer
            log.warning("%s model failed on %s: %s", role, die.die_id, err)
    m = state.metrics
    for decision in decisions:
        served = decision.role == body["decided_by"]
        m.observe_decision(decision.class_name, decision.model_version, decision.role, served)
    m.inspections.inc()
    m.missing_parameters.inc(len(die.missing_parameters))
    if not die.note:
        m.missing_notes.inc()
    try:
        image_ref = await asyncio.to_thread(state.images.put, die.image_bytes, die.image_format)
    except OSError as err:
        log.error("could not store the image of %s: %s", die.die_id, err)
        image_ref = ""
    state.log.record(inspection_record(die, body, decisions, image_ref, output))
    state.pending_embeddings.append(embedding_row(die, body, output))


def inspection_record(die: DieInput, body: dict, decisions, image_ref: str, output) -> dict:
    """The inspection log's record of one answered inspection."""
    return {
        "inspection_id": body["inspection_id"],
        "die_id": die.die_id,
        "wafer_id": die.wafer_id,
        "received_at": die.received_at,
        "image_ref": image_ref,
        "image_sha256": image_ref.rsplit("/", 1)[-1].split(".")[0] if image_ref else "",
        "process_log": die.process,
        "missing_parameters": list(die.missing_parameters),
        "operator_notes": die.note,
        "metadata": die.metadata,
        "route": body["route"],
        "served_by": body["decided_by"],
        "defect_class": body["defect_class"],
        "class_name": body["class_name"],
        "confidence": body["confidence"],
        "flagged": body["flagged"],
        "model_version": body["model_version"],
        "model_kind": body["model_kind"],
        "decisions": [d.as_dict() for d in decisions],
        "anomalous_parameters": body["anomalous_parameters"],
        "explanation": body["explanation"],
        "region_map": [float(v) for v in output.region_map],
        "latency_ms": body["latency_ms"],
    }


def embedding_row(die: DieInput, body: dict, output: DieOutput) -> dict:
    """The similar-defect index row of an inspected die (its label is the model's)."""
    return {
        "model_version": body["model_version"],
        "die_id": die.die_id,
        "vector": output.embedding,
        "defect_class": body["defect_class"],
        "class_name": body["class_name"],
        "source": "inspection",
        "wafer_id": die.wafer_id,
        "fab": die.metadata.get("fab") or die.die_id.split("-", 1)[0],
        "date": die.received_at.date().isoformat(),
        "note": die.note,
        "label_origin": "model",
    }
