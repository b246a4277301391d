"""Wafer maps: each wafer's inspected dies on its grid, coloured by decided class, as SVG.

A die sits at (`die_x`, `die_y`) of its station metadata, x to the right and y up from the
wafer's centre. Its fill is the decided class in the Okabe-Ito palette (safe for the common
colour-vision deficiencies); a flagged die has a black outline; a white dot marks a die an
operator confirmed, a white cross one an operator overrode. Each die links to its page.
When a die was inspected more than once, its latest inspection is drawn.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote

import sqlalchemy as sa
from markupsafe import Markup, escape

from service.log_tables import INSPECTIONS, as_utc

PALETTE = {  # Okabe-Ito
    "good": "#009E73",  # bluish green
    "particle": "#E69F00",  # orange
    "scratch": "#D55E00",  # vermillion
    "pattern": "#CC79A7",  # reddish purple
    "process_deviation": "#0072B2",  # blue
}
FLAG_STROKE = "#000000"
WAFER_EDGE = "#5f6b77"
LOT_LIMIT = 200
MAX_RADIUS = 60  # dies from the centre; a position farther out is taken as unusable


@dataclass
class WaferMap:
    """One wafer's latest inspection of each die, and what they add up to."""

    wafer_id: str
    dies: list[dict] = field(default_factory=list)  # placed: die_x and die_y known
    unplaced: list[dict] = field(default_factory=list)  # no usable position in the metadata

    @property
    def all_dies(self) -> list[dict]:
        return self.dies + self.unplaced

    @property
    def facts(self) -> dict[str, str]:
        """Lot, fab and chamber of the wafer (from its latest die that names them)."""
        out: dict[str, str] = {}
        for die in self.all_dies:
            for key in ("lot_id", "fab", "chamber"):
                if die["metadata"].get(key) is not None:
                    out[key] = str(die["metadata"][key])
        return out

    @property
    def radius(self) -> int:
        """Dies from the centre to the farthest placed die (at least 1)."""
        return max([1, *(math.ceil(math.hypot(d["die_x"], d["die_y"])) for d in self.dies)])


def wafer_maps(rows: list[dict]) -> list[WaferMap]:
    """The wafers of inspection rows (as `die_search` returns them, oldest first), by id."""
    latest: dict[str, dict[str, dict]] = {}
    for row in rows:
        latest.setdefault(row["wafer_id"], {})[row["die_id"]] = row
    maps = []
    for wafer_id in sorted(latest):
        wafer = WaferMap(wafer_id)
        for die in latest[wafer_id].values():
            placed = _usable(die["die_x"]) and _usable(die["die_y"])
            (wafer.dies if placed else wafer.unplaced).append(die)
        maps.append(wafer)
    return maps


def _usable(coordinate: int | None) -> bool:
    return coordinate is not None and abs(coordinate) <= MAX_RADIUS


def counts(maps: list[WaferMap]) -> dict:
    """Dies, flagged dies, dies per decided class and per feedback state of the wafers."""
    dies = [d for m in maps for d in m.all_dies]
    return {
        "dies": len(dies),
        "flagged": sum(bool(d["flagged"]) for d in dies),
        "classes": dict(Counter(d["class_name"] for d in dies)),
        "feedback": Counter(d["feedback"] for d in dies),
    }


def wafer_svg(wafer: WaferMap, cell: int = 16, radius: int | None = None) -> Markup:
    """The wafer's map as an inline SVG element.

    Args:
        cell: pixels per die.
        radius: dies from the centre to the edge drawn (default: the wafer's own), so the
            maps of a lot can share one scale.
    """
    r = wafer.radius if radius is None else radius
    size = (2 * r + 1) * cell + 2 * cell
    centre = size / 2
    parts = [
        f'<svg class="wafer-map" xmlns="http://www.w3.org/2000/svg" width="{size}" '
        f'height="{size}" viewBox="0 0 {size} {size}" role="img" '
        f'aria-label="wafer {escape(wafer.wafer_id)}: {len(wafer.dies)} dies">',
        f'<circle cx="{centre}" cy="{centre}" r="{(r + 0.75) * cell:.1f}" fill="#ffffff" '
        f'stroke="{WAFER_EDGE}" stroke-width="1"/>',
    ]
    for die in sorted(wafer.dies, key=lambda d: (d["die_y"], d["die_x"])):
        x = cell + (die["die_x"] + r) * cell
        y = cell + (r - die["die_y"]) * cell
        parts.append(_die(die, x, y, cell))
    parts.append("</svg>")
    return Markup("".join(parts))


def _die(die: dict, x: float, y: float, cell: int) -> str:
    fill = PALETTE.get(die["class_name"], "#999999")
    outline = f' stroke="{FLAG_STROKE}" stroke-width="2"' if die["flagged"] else ""
    name = escape(die["die_id"])
    title = f"{name}: {die['class_name'].replace('_', ' ')}"
    title += ", flagged" if die["flagged"] else ""
    title += "" if die["feedback"] == "none" else f", {die['feedback']}"
    return (
        f'<a href="/dashboard/dies/{quote(die["die_id"], safe="")}">'
        f'<rect class="die" data-die="{name}" data-class="{die["class_name"]}" '
        f'x="{x + 1}" y="{y + 1}" width="{cell - 2}" height="{cell - 2}" fill="{fill}"{outline}/>'
        f"{_feedback_mark(die['feedback'], x + cell / 2, y + cell / 2, cell)}"
        f"<title>{title}</title></a>"
    )


def _feedback_mark(state: str, cx: float, cy: float, cell: int) -> str:
    """A white dot (confirmed) or a white cross (overridden) at the die's centre."""
    arm = cell * 0.2
    if state == "confirmed":
        return f'<circle cx="{cx}" cy="{cy}" r="{arm:.1f}" fill="#ffffff"/>'
    if state == "overridden":
        return (
            f'<path d="M{cx - arm:.1f},{cy - arm:.1f} L{cx + arm:.1f},{cy + arm:.1f} '
            f'M{cx - arm:.1f},{cy + arm:.1f} L{cx + arm:.1f},{cy - arm:.1f}" '
            'stroke="#ffffff" stroke-width="2"/>'
        )
    return ""


def lot_summaries(log, limit: int = LOT_LIMIT) -> list[dict]:
    """The latest lots (by their latest inspection): lot, fab, wafers, dies, flagged dies and
    the time of the latest inspection; dies without a lot in their metadata are left out.

    Raises:
        LogUnavailableError: the database cannot be reached.
    """
    table = INSPECTIONS.c
    lot = table["metadata"]["lot_id"].as_string().label("lot_id")
    fab = sa.func.max(table["metadata"]["fab"].as_string()).label("fab")
    latest = sa.func.max(table.received_at).label("latest")
    query = (
        sa.select(
            lot,
            fab,
            sa.func.count(sa.distinct(table.wafer_id)).label("wafers"),
            sa.func.count().label("dies"),
            sa.func.sum(sa.cast(table.flagged, sa.Integer)).label("flagged"),
            latest,
        )
        .where(lot.is_not(None))
        .group_by(lot)
        .order_by(latest.desc())
        .limit(limit)
    )
    rows = log.read_stored(lambda conn: [dict(r._mapping) for r in conn.execute(query)])
    return [r | {"latest": as_utc(r["latest"]), "flagged": int(r["flagged"] or 0)} for r in rows]
