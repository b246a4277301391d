"""The operator dashboard: recent flagged dies, one die's evidence, and feedback from a browser.

Server-rendered pages (Jinja2 templates in `service/templates`, no JavaScript) behind HTTP
basic authentication with an operator key as the password. A die page shows the image beside
its attention heatmap, the decision and its reasons, every model's decision, similar past
defects and the feedback given; its form confirms or overrides the decision. Feedback posts
from another origin are refused.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Annotated
from urllib.parse import quote, urlsplit

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from model.cache import read_image
from model.contract import ImageFormatError
from model.schema import CLASS_NAMES
from service.config import ApiKey
from service.explain import heatmap_png
from service.feedback import store_feedback
from service.image_store import image_format
from service.inspection_log import FeedbackError, LogUnavailableError
from service.inspection_log import UnknownDieError as UnknownInspectionError
from service.pages import Operator, error_page, page
from service.similar import NoIndexError
from service.similar import UnknownDieError as UnknownEmbeddingError
from service.views import router as views_router

log = logging.getLogger("dieguard.service")

router = APIRouter(prefix="/dashboard", include_in_schema=False)
router.include_router(views_router)

RECENT_LIMIT = 200
SIMILAR_K = 5
CLASS_CHOICES = [(i, name.replace("_", " ")) for i, name in enumerate(CLASS_NAMES)]
NOTICES = {"recorded": "Feedback recorded", "duplicate": "This feedback was already recorded"}


class _FormError(ValueError):
    """A feedback form the operator must correct."""


@router.get("", response_class=HTMLResponse)
async def recent_dies(
    request: Request, holder: Operator, show_all: Annotated[bool, Query(alias="all")] = False
):
    """The latest flagged dies (all dies with ?all=1), newest first."""
    state = request.app.state.service
    try:
        rows = await asyncio.to_thread(state.log.recent, RECENT_LIMIT, not show_all)
        given = await asyncio.to_thread(_feedback_by_inspection, state.log, rows)
    except LogUnavailableError as err:
        return error_page(request, holder, 503, "Inspection log unavailable", str(err))
    for row in rows:
        row["feedback"] = given.get(row["inspection_id"])
    context = {"rows": rows, "show_all": show_all, "limit": RECENT_LIMIT}
    return page(request, holder, "index.html", context)


@router.get("/dies/{die_id}", response_class=HTMLResponse)
async def die_page(request: Request, die_id: str, holder: Operator, notice: str = ""):
    """One die: image and heatmap, decision, reasons, decisions, similar defects, feedback."""
    return await _die_response(request, holder, die_id, notice=NOTICES.get(notice, ""))


@router.post("/dies/{die_id}/feedback", response_class=HTMLResponse)
async def give_feedback(request: Request, die_id: str, holder: Operator):
    """Store a confirm or override from the die page's form, then go back to the page."""
    if not _same_origin(request):
        message = "The form was posted from another site."
        return error_page(request, holder, 403, "Refused", message)
    form = await request.form()
    try:
        verdict, true_class, comment = _read_form(form)
        _, created = await asyncio.to_thread(
            store_feedback,
            request.app.state.service, die_id, verdict, holder.name, true_class, comment,
        )  # fmt: skip
    except (_FormError, FeedbackError) as err:
        return await _die_response(request, holder, die_id, error=str(err), form=form, status=422)
    except UnknownInspectionError:
        return _unknown_die(request, holder, die_id)
    except LogUnavailableError as err:
        message = f"The feedback was not stored; try again. ({err})"
        return error_page(request, holder, 503, "Inspection log unavailable", message)
    target = f"/dashboard/dies/{quote(die_id)}?notice={'recorded' if created else 'duplicate'}"
    return RedirectResponse(target, status_code=303)


@router.get("/dies/{die_id}/image.png")
async def die_image(request: Request, die_id: str, holder: Operator) -> Response:
    """The die image as uploaded (PNG or JPEG)."""
    found = await _stored_image(request, holder, die_id)
    if isinstance(found, Response):
        return found
    record, content = found
    media_type = "image/jpeg" if image_format(record["image_ref"]) == "jpeg" else "image/png"
    return Response(content, media_type=media_type, headers={"Cache-Control": "no-store"})


@router.get("/dies/{die_id}/heatmap.png")
async def die_heatmap(request: Request, die_id: str, holder: Operator) -> Response:
    """The die image with the deciding model's region attention laid over it, as PNG."""
    found = await _stored_image(request, holder, die_id)
    if isinstance(found, Response):
        return found
    record, content = found
    try:
        png = await asyncio.to_thread(_render_heatmap, content, record["region_map"])
    except (ImageFormatError, ValueError) as err:
        return error_page(request, holder, 404, "No heatmap", f"Cannot draw the heatmap: {err}")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


def _render_heatmap(content: bytes, region_map: list) -> bytes:
    image = read_image(io.BytesIO(content))  # 256, 256, 3 uint8
    weights = np.asarray(region_map or [1.0], np.float64)  # K
    return heatmap_png(image, weights)


async def _stored_image(request: Request, holder: ApiKey, die_id: str):
    """(record, image bytes) of a die's latest inspection, or the error page to answer."""
    state = request.app.state.service
    try:
        record = await asyncio.to_thread(state.log.get, die_id)
    except LogUnavailableError as err:
        return error_page(request, holder, 503, "Inspection log unavailable", str(err))
    if record is None:
        return _unknown_die(request, holder, die_id)
    try:
        content = await asyncio.to_thread(state.images.get, record["image_ref"])
    except (ValueError, FileNotFoundError):
        return error_page(request, holder, 404, "No image", f"No image is stored for {die_id}.")
    except OSError as err:
        log.error("the image of %s cannot be read: %s", die_id, err)
        return error_page(request, holder, 503, "Image store unavailable", "Try again shortly.")
    return record, content


async def _die_response(
    request: Request,
    holder: ApiKey,
    die_id: str,
    notice: str = "",
    error: str = "",
    form=None,
    status: int = 200,
):
    state = request.app.state.service
    try:
        record = await asyncio.to_thread(state.log.get, die_id)
        if record is None:
            return _unknown_die(request, holder, die_id)
        given = await asyncio.to_thread(_feedback_for, state.log, record)
    except LogUnavailableError as err:
        return error_page(request, holder, 503, "Inspection log unavailable", str(err))
    similar, similar_note = await asyncio.to_thread(_similar, state.similar, record)
    form = form or {}
    context = {
        "die": record,
        "probabilities": sorted(_probabilities(record).items(), key=lambda kv: -kv[1]),
        "similar": similar,
        "similar_note": similar_note,
        "feedback": given,
        "notice": notice,
        "error": error,
        "classes": CLASS_CHOICES,
        "chosen_class": str(form.get("true_class", "")),
        "comment": str(form.get("comment", "")),
    }
    return page(request, holder, "die.html", context, status)


def _probabilities(record: dict) -> dict[str, float]:
    """The deciding model's class probabilities, from its decision row."""
    for decision in record.get("decisions", []):
        if decision.get("role") == record["served_by"]:
            return {k: float(v) for k, v in (decision.get("probabilities") or {}).items()}
    return {}


def _similar(similar, record: dict) -> tuple[list[dict], str]:
    """The nearest past defects to the die, or no rows and the reason why there are none."""
    version = str(record["model_version"])
    try:
        return similar.search(version, record["die_id"], k=SIMILAR_K), ""
    except NoIndexError:
        return [], f"No similar-defect index exists for model v{version}."
    except UnknownEmbeddingError:
        return [], f"This die is not in the similar-defect index of model v{version} yet."
    except Exception as err:  # the index is a convenience; the page must still render
        log.error("similar-defect search for %s failed: %s", record["die_id"], err)
        return [], "Similar defects cannot be searched right now."


def _feedback_for(inspection_log, record: dict) -> list[dict]:
    """Feedback given on this inspection of the die, oldest first."""
    rows = inspection_log.feedback(
        latest_only=False, since=record["received_at"], die_id=record["die_id"]
    )
    return [r for r in rows if r["inspection_id"] == record["inspection_id"]]


def _feedback_by_inspection(inspection_log, rows: list[dict]) -> dict[str, dict]:
    """The latest feedback on each listed inspection, by inspection id."""
    if not rows:
        return {}
    since = min(r["received_at"] for r in rows)
    return {f["inspection_id"]: f for f in inspection_log.feedback(latest_only=False, since=since)}


def _read_form(form) -> tuple[str, int | None, str]:
    """(verdict, true class, comment) from the feedback form, or a _FormError saying why."""
    verdict = str(form.get("verdict", ""))
    comment = str(form.get("comment", "")).strip()
    if verdict == "confirm":
        return verdict, None, comment
    if verdict != "override":
        raise _FormError("Choose Confirm or Override.")
    chosen = str(form.get("true_class", "")).strip()
    if not chosen:
        raise _FormError("An override needs the true class: choose one from the list.")
    if chosen not in {str(i) for i, _ in CLASS_CHOICES}:
        raise _FormError(f"Unknown class {chosen[:20]!r}.")
    return verdict, int(chosen), comment


def _same_origin(request: Request) -> bool:
    """False when the Origin (or, without one, the Referer) names another host:port."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True
    host = request.headers.get("host", "").lower()
    return bool(host) and urlsplit(source).netloc.lower() == host


def _unknown_die(request: Request, holder: ApiKey, die_id: str):
    message = f"No inspection of die {die_id} is logged."
    return error_page(request, holder, 404, "Unknown die", message)
