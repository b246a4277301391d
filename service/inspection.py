"""One inspection: route the die, run the models, explain the decision, log everything.

The image goes to the image store (durably) while the deciding model runs. The response
waits for that model only, then for the occlusion attribution (its batcher, under the same
deadline), then for the log record to be on disk (fsynced, committed with the records of
concurrent requests): a 200 means the inspection is stored and will be in the inspection
log, even if the process dies the next moment. A model routed the die that does not decide
it (a challenger in shadow) scores it afterwards, and its decision is added to the logged
inspection (service.shadow). The die's embedding is indexed afterwards too.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from registry import CHAMPION
from service.attribution import batched_attribution
from service.batcher import BatcherClosedError, DeadlineError, OverloadedError
from service.engine import DieOutput
from service.explain import anomalous_parameters, explain, overlay_base64
from service.models import CANDIDATE
from service.records import DieInput
from service.state import ServiceState

log = logging.getLogger("dieguard.service")


SWAP_RETRIES = 2  # a die caught by a model swap is decided again on the new model, this often


class NoModelError(RuntimeError):
    """No champion is loaded yet (the service is not ready)."""


class StorageError(RuntimeError):
    """The image or the log record could not be written to disk: nothing was acknowledged."""


async def inspect(state: ServiceState, die: DieInput, timeout_s: float) -> dict:
    """Decide one die, store it durably and return the API response body (see service.api).

    Raises:
        NoModelError, OverloadedError, DeadlineError (no model answer within `timeout_s`),
        StorageError, or what the champion raised on this die.
    """
    start = time.perf_counter()
    _champion(state)  # refused before anything is stored
    image = asyncio.ensure_future(asyncio.to_thread(_store_image, state, die))
    image.add_done_callback(_consume)  # a refused die leaves at most an unreferenced image
    for attempt in range(SWAP_RETRIES + 1):
        try:
            route, models, deciding, output, anomalies, shares = await _decide(
                state, die, timeout_s - (time.perf_counter() - start)
            )
            break
        except BatcherClosedError:  # a model was swapped under the die: decide on the new one
            if attempt == SWAP_RETRIES:
                raise
            log.info("a model was replaced while %s was inspected; deciding again", die.die_id)
    decisions = [output.decision]
    image_ref = await image
    body = response_body(die, output, anomalies, shares)
    body |= {"route": route, "decided_by": deciding, "inspection_id": uuid.uuid4().hex}
    await asyncio.to_thread(_finish, state, die, body, decisions, output, image_ref, start)
    _count(state, die, body, decisions)
    state.pending_embeddings.append(embedding_row(die, body, output))
    others = [m for role, m in models.items() if role != deciding]
    if others:  # the inspection is stored: their decisions are added to it
        state.shadows.score(die, body["inspection_id"], others)
    return body


async def _decide(state: ServiceState, die: DieInput, timeout_s: float):
    """Route the die, run the deciding model, explain its decision: (route, the models routed,
    the deciding role, its output, the anomalous parameters, their attribution shares)."""
    start = time.perf_counter()
    champion = _champion(state)
    candidate = state.pool.get(CANDIDATE) if state.pool.wants_candidate() else None
    route = state.pool.routing.mode if candidate else "off"
    deciding = state.pool.routing.deciding_role(die.die_id) if candidate else CHAMPION
    models = {CHAMPION: champion, **({CANDIDATE: candidate} if candidate else {})}
    try:
        output = await models[deciding].batcher.submit(die, timeout_s)
    except Exception as err:
        if deciding == CHAMPION or isinstance(err, OverloadedError | DeadlineError):
            raise
        log.exception("the candidate failed on %s; the champion decides", die.die_id)
        del models[deciding]  # nothing of it to log
        deciding = CHAMPION
        output = await champion.batcher.submit(die, timeout_s - (time.perf_counter() - start))
    model = models[deciding]
    anomalies = anomalous_parameters(die.process, model.engine.scaler, state.config.anomaly_sigma)
    remaining = timeout_s - (time.perf_counter() - start)
    shares = await batched_attribution(
        model.batcher, model.engine, die, output, anomalies, remaining
    )
    return route, models, deciding, output, anomalies, shares


def _champion(state: ServiceState):
    """The loaded champion; NoModelError when there is none."""
    champion = state.pool.get(CHAMPION)
    if champion is None:
        raise NoModelError(state.pool.last_error or "no champion model is loaded yet")
    return champion


def _store_image(state: ServiceState, die: DieInput) -> str:
    """The upload in the content store, fsynced; its ref."""
    try:
        return state.images.put(die.image_bytes, die.image_format)
    except OSError as err:
        log.error("could not store the image of %s: %s", die.die_id, err)
        raise StorageError("the inspection could not be stored; retry") from err


def _consume(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


def _finish(state: ServiceState, die, body: dict, decisions, output, image_ref, start) -> None:
    """The heatmap and the latency into the body, then the log record on disk (fsynced)
    before the station hears back: one thread hop for both."""
    body["attention_heatmap"] = overlay_base64(output.region_map, die.image.shape[0])
    body["latency_ms"] = round((time.perf_counter() - start) * 1000.0, 2)
    try:
        state.log.record(inspection_record(die, body, decisions, image_ref, output))
    except OSError as err:
        log.error("could not store the inspection of %s: %s", die.die_id, err)
        raise StorageError("the inspection could not be stored; retry") from err


def _count(state: ServiceState, die: DieInput, body: dict, decisions) -> None:
    m = state.metrics
    for decision in decisions:
        served = decision.role == body["decided_by"]
        m.observe_decision(decision.class_name, decision.model_version, decision.role, served)
    m.inspections.inc()
    m.missing_parameters.inc(len(die.missing_parameters))
    if not die.note:
        m.missing_notes.inc()


def response_body(
    die: DieInput, output: DieOutput, anomalies: list[dict], shares: dict[str, float]
) -> dict:
    """What the station gets back for one die (without the heatmap, routing and timing).

    Args:
        anomalies: `anomalous_parameters` of the die under the deciding model's scaler.
        shares: the attribution of those anomalies (service.attribution).
    """
    d = output.decision
    text = explain(
        d.class_name, d.flagged, d.confidence, output.region_map, anomalies, bool(die.note), shares
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
        "anomalous_parameters": anomalies,
        "missing_parameters": list(die.missing_parameters),
        "explanation": text,
        "model_version": d.model_version,
        "model_kind": d.model_kind,
    }


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
