"""The dashboard's views over many dies: find a die, wafer and lot maps, trends, CSV export.

Every filter lives in the URL, so a view can be bookmarked or sent to a colleague. A filter
that cannot be used answers 400 with the reason; an unreachable log answers 503.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from model.schema import CLASS_NAMES
from service.die_search import (
    FEEDBACK_STATES,
    FLAGGED_CHOICES,
    DieFilter,
    FilterError,
    all_dies,
    csv_text,
    find_dies,
    parse_filter,
)
from service.inspection_log import LogUnavailableError
from service.pages import SECURITY_HEADERS, Operator, error_page, page
from service.trend_chart import trend_svg
from service.trends import collect_trends, parse_range
from service.wafer_map import PALETTE, counts, lot_summaries, wafer_maps, wafer_svg

router = APIRouter()
LOT_CELL, WAFER_CELL = 9, 18


async def _answer(request: Request, holder, build):
    """Run `build()` off the event loop; a bad filter or an unreachable log becomes its page."""
    try:
        return await asyncio.to_thread(build)
    except FilterError as err:
        return error_page(request, holder, 400, "Filter not understood", str(err))
    except LogUnavailableError as err:
        return error_page(request, holder, 503, "Inspection log unavailable", str(err))


@router.get("/find", response_class=HTMLResponse)
async def find_page(request: Request, holder: Operator):
    """Dies by wafer, lot, fab, chamber, class, flagged, feedback, time range or die id."""

    def build():
        found = parse_filter(request.query_params)
        result = find_dies(request.app.state.service.log, found)
        context = {"filter": found, "result": result, "classes": CLASS_NAMES}
        context |= {"feedback_states": FEEDBACK_STATES, "flagged_choices": FLAGGED_CHOICES}
        return page(request, holder, "find.html", context)

    return await _answer(request, holder, build)


@router.get("/find.csv")
async def find_csv(request: Request, holder: Operator):
    """Every die the filter finds (no paging) as CSV, newest first."""

    def build():
        found = parse_filter(request.query_params)
        text = csv_text(all_dies(request.app.state.service.log, found))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        headers = SECURITY_HEADERS | {
            "Content-Disposition": f'attachment; filename="dieguard-dies-{stamp}.csv"'
        }
        return Response(text, media_type="text/csv; charset=utf-8", headers=headers)

    return await _answer(request, holder, build)


@router.get("/lots", response_class=HTMLResponse)
async def lots_page(request: Request, holder: Operator):
    """The latest lots with their wafers, dies and flagged dies."""

    def build():
        lots = lot_summaries(request.app.state.service.log)
        return page(request, holder, "lots.html", {"lots": lots})

    return await _answer(request, holder, build)


@router.get("/lots/{lot_id}", response_class=HTMLResponse)
async def lot_page(request: Request, lot_id: str, holder: Operator):
    """A lot's wafer maps side by side, on one scale, with the lot's counts."""

    def build():
        rows = all_dies(request.app.state.service.log, DieFilter(lot=lot_id), oldest_first=True)
        if not rows:
            return error_page(request, holder, 404, "Unknown lot", f"No die of lot {lot_id}.")
        maps = wafer_maps(rows)
        radius = max(m.radius for m in maps)
        drawn = [(m, wafer_svg(m, LOT_CELL, radius), counts([m])) for m in maps]
        context = {"lot_id": lot_id, "wafers": drawn, "totals": counts(maps)}
        return page(request, holder, "lot.html", context | _legend(maps))

    return await _answer(request, holder, build)


@router.get("/wafers/{wafer_id}", response_class=HTMLResponse)
async def wafer_page(request: Request, wafer_id: str, holder: Operator):
    """One wafer's map: its dies by decided class, flagged ones outlined, feedback marked."""

    def build():
        found = DieFilter(wafer=wafer_id)
        rows = all_dies(request.app.state.service.log, found, oldest_first=True)
        if not rows:
            message = f"No inspection of wafer {wafer_id} is logged."
            return error_page(request, holder, 404, "Unknown wafer", message)
        (wafer,) = wafer_maps(rows)
        context = {"wafer": wafer, "svg": wafer_svg(wafer, WAFER_CELL), "totals": counts([wafer])}
        context["find_query"] = found.query_string()
        return page(request, holder, "wafer.html", context | _legend([wafer]))

    return await _answer(request, holder, build)


def _legend(maps) -> dict:
    return {"palette": PALETTE, "unplaced": sum(len(m.unplaced) for m in maps)}


@router.get("/trends", response_class=HTMLResponse)
async def trends_page(request: Request, holder: Operator):
    """Flag rate, escape rate, FPR, latency and drift per hour or day, with model events."""

    def build():
        trends = _trends(request)
        rows = [i for i, f in enumerate(trends.flag) if f["n"]]
        context = {"trends": trends, "rows": rows, "drift_families": sorted(trends.drift)}
        context["chart"] = trend_svg(trends)
        return page(request, holder, "trends.html", context)

    return await _answer(request, holder, build)


def _trends(request: Request):
    state = request.app.state.service
    span = parse_range(request.query_params)
    registry = (state.config.tracking_uri, state.config.model_name)
    return collect_trends(state.log, request.app.state.monitor_history, registry, span)
