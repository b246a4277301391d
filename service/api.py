"""The JSON API: inspect a die, give feedback, find similar defects, steer routing."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from model.schema import CLASS_NAMES, FABS, NUM_CLASSES
from registry import CHAMPION
from registry.servable import NotServable
from service.auth import require
from service.batcher import DeadlineError
from service.config import ADMIN, OPERATOR, STATION, ApiKey
from service.feedback import MAX_COMMENT_CHARS, store_feedback
from service.inputs import parse_die
from service.inspection import inspect
from service.inspection_log import FeedbackError, LogUnavailableError
from service.inspection_log import UnknownDieError as UnknownInspectionError
from service.similar import NoIndexError
from service.similar import UnknownDieError as UnknownEmbeddingError

router = APIRouter(prefix="/api/v1")
StationKey = Annotated[ApiKey, Depends(require(STATION))]
OperatorKey = Annotated[ApiKey, Depends(require(OPERATOR))]
AdminKey = Annotated[ApiKey, Depends(require(ADMIN))]


class InspectResponse(BaseModel):
    """The verdict on one die, with the reasons an operator can check."""

    die_id: str
    wafer_id: str
    defect_class: int = Field(ge=0, lt=NUM_CLASSES, description="0 good, 1-4 a defect class")
    class_name: str = Field(description=", ".join(CLASS_NAMES))
    confidence: float = Field(description="Probability of the returned class")
    flagged: bool = Field(description="Defect probability reached the model's threshold")
    defect_probability: float = Field(description="1 - P(good)")
    probabilities: dict[str, float]
    attention_heatmap: str = Field(
        description="Base64 PNG at the image's size, decoding to RGBA (indexed, alpha per "
        "palette entry): the region attention as a transparent layer to draw over the die image"
    )
    anomalous_parameters: list[dict] = Field(
        description="Parameters beyond the sigma limit: name, value, unit, z, step"
    )
    missing_parameters: list[str]
    explanation: str
    latency_ms: float
    model_version: str
    model_kind: str
    decided_by: Literal["champion", "candidate"]
    route: Literal["off", "shadow", "canary"]
    inspection_id: str


class FeedbackRequest(BaseModel):
    """An operator's verdict on an inspected die; the operator is the key's holder."""

    die_id: str = Field(max_length=128)
    verdict: Literal["confirm", "override"]
    true_class: int | None = Field(None, ge=0, lt=NUM_CLASSES, description="For an override")
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)


class RoutingRequest(BaseModel):
    mode: Literal["off", "shadow", "canary"]
    share: float = Field(0.0, ge=0.0, le=1.0, description="Canary share of dies")


@router.post("/inspect", response_model=InspectResponse, tags=["inspection"])
async def inspect_die(
    request: Request,
    image: Annotated[UploadFile, File(description="256x256 RGB die image, PNG or JPEG")],
    process_log: Annotated[str, Form(description="JSON object: parameter name -> value")],
    die_id: Annotated[str, Form()],
    wafer_id: Annotated[str, Form()],
    station: StationKey,
    operator_notes: Annotated[str, Form()] = "",
    metadata: Annotated[str, Form(description="JSON: lot_id, fab, shift, ...")] = "",
) -> dict:
    """Classify one die and explain why; a 200 means the inspection is stored durably.

    503 with Retry-After when the model's queue is full, 504 when the model does not answer
    within the request deadline, counted from the request's arrival (nothing is stored in
    either case).
    """
    start = request.state.arrived_at  # the deadline counts from the request's arrival
    state = request.app.state.service
    data = await image.read()
    die = await asyncio.to_thread(
        parse_die, data, process_log, die_id, wafer_id, operator_notes, metadata,
        state.config.max_image_bytes, state.config.max_missing_share,
    )  # fmt: skip
    deadline_s = state.config.request_timeout_s
    remaining = deadline_s - (time.perf_counter() - start)
    if remaining <= 0:  # it waited for the server that long: the model would answer too late
        raise DeadlineError(f"the die waited past its {deadline_s:g} s deadline")
    body = await inspect(state, die, remaining)
    state.metrics.request_latency.observe(time.perf_counter() - start)
    return body


@router.post("/feedback", tags=["feedback"], status_code=201)
async def give_feedback(request: Request, feedback: FeedbackRequest, holder: OperatorKey):
    """Confirm or override a decision; the same feedback twice is stored once (200)."""
    try:
        row, created = await asyncio.to_thread(
            store_feedback,
            request.app.state.service,
            feedback.die_id,
            feedback.verdict,
            holder.name,
            feedback.true_class,
            feedback.comment,
        )
    except UnknownInspectionError as err:
        raise HTTPException(404, f"no inspection of die {feedback.die_id}") from err
    except FeedbackError as err:
        raise HTTPException(422, str(err)) from err
    except LogUnavailableError as err:
        reason = "the inspection log is unavailable: feedback not stored, retry"
        raise HTTPException(503, reason) from err
    return JSONResponse(jsonable(row), status_code=201 if created else 200)


@router.get("/inspections/{die_id}", tags=["inspection"])
async def get_inspection(request: Request, die_id: str, _: OperatorKey):
    """The latest logged inspection of a die with every model's decision."""
    record = await asyncio.to_thread(request.app.state.service.log.get, die_id)
    if record is None:
        raise HTTPException(404, f"no inspection of die {die_id}")
    return jsonable(record)


@router.get("/similar/{die_id}", tags=["similar defects"])
async def similar_defects(
    request: Request,
    die_id: str,
    _: OperatorKey,
    k: Annotated[int, Query(ge=1, le=100)] = 5,
    defect_class: Annotated[int | None, Query(ge=1, lt=NUM_CLASSES, description="1-4")] = None,
    fab: Annotated[Literal[FABS] | None, Query()] = None,  # type: ignore[valid-type]
) -> dict:
    """The nearest past defects to a die, in the embedding space of the model that saw it."""
    state = request.app.state.service
    version = await _embedding_version(state, die_id)
    try:
        rows = await asyncio.to_thread(
            state.similar.search, version, die_id, k=k, defect_class=defect_class, fab=fab
        )
    except UnknownEmbeddingError as err:
        raise HTTPException(404, f"die {die_id} is not in the index of model v{version}") from err
    except NoIndexError as err:
        raise HTTPException(409, str(err)) from err
    except ValueError as err:
        raise HTTPException(422, str(err)) from err
    return {"die_id": die_id, "model_version": version, "similar": rows}


async def _embedding_version(state, die_id: str) -> str:
    record = await asyncio.to_thread(state.log.get, die_id)
    if record is not None:
        return str(record["model_version"])
    champion = state.pool.get(CHAMPION)
    if champion is None:
        raise HTTPException(503, "no champion model is loaded yet")
    return champion.version


@router.get("/admin/routing", tags=["admin"])
async def get_routing(request: Request, _: AdminKey) -> dict:
    """The routing mode and the loaded models."""
    return models_status(request.app.state.service)


@router.put("/admin/routing", tags=["admin"])
async def set_routing(request: Request, routing: RoutingRequest, _: AdminKey):
    """Switch shadow or canary routing on or off; the candidate loads or unloads now.
    409 when the registry's serving rule refuses the candidate (no approval, rejected)."""
    state = request.app.state.service
    if state.watcher is not None and routing.mode != "off":
        try:
            await state.watcher.check_candidate()
        except NotServable as err:
            raise HTTPException(409, str(err)) from err
    state.pool.routing.mode, state.pool.routing.share = routing.mode, routing.share
    if state.watcher is not None:
        await state.watcher.sync_reporting()
    return models_status(state)


def models_status(state) -> dict:
    models = {
        role: {
            "version": m.version,
            "kind": m.engine.kind,
            "loaded_at": m.loaded_at.isoformat(),
            "runs_on": m.engine.runs_on,  # the bundle variant, precision and provider
        }
        for role, m in state.pool.models.items()
    }
    routing = state.pool.routing
    return {
        "routing": {"mode": routing.mode, "share": routing.share},
        "models": models,
        "error": state.pool.last_error,
    }


def jsonable(value):
    """Datetimes as ISO text, recursively (rows come from the database)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
