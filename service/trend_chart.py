"""The trends page's chart: panels over one time axis, drawn as inline SVG on the server.

Flag rate; escape rate and FPR on labelled dies; latency p50 and p99 (ms); one row of
drift verdicts per family. Rates come with their confidence bands (shaded); a bucket
without a figure leaves a gap. The registry's promotions, rollout steps and rollbacks are
vertical lines through every panel, named at the top. Colours are Okabe-Ito.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from service.trends import Trends

WIDTH, LEFT, RIGHT, TOP = 1000, 64, 16, 90
PANEL, GAP, ROW = 150, 34, 18
COLOURS = {
    "flag rate": "#0072B2",
    "escape rate": "#D55E00",
    "FPR": "#E69F00",
    "p50": "#009E73",
    "p99": "#CC79A7",
    "drifted": "#D55E00",
    "clean": "#56B4E9",
}
EVENT_DASH = {"promotion": "", "rollout": "5,3", "rollback": "2,2"}
INK, GRID = "#1d232a", "#d7dde3"


class _Axis:
    """Time to x and value to y for one panel whose top edge is at `top`."""

    def __init__(self, trends: Trends, top: float, height: float, peak: float):
        self.start, self.span = trends.span.start, trends.span.end - trends.span.start
        self.top, self.height, self.peak = top, height, peak

    def x(self, at: datetime) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * ((at - self.start) / self.span)

    def y(self, value: float) -> float:
        return self.top + self.height * (1 - value / self.peak)


def trend_svg(trends: Trends) -> Markup:
    """The chart of `trends` as an inline SVG element."""
    centres = [t + trends.span.step / 2 for t in trends.times]
    families = sorted(trends.drift)
    panels = [
        ("flag rate", {"flag rate": trends.flag}, "%"),
        ("escape rate and FPR", {"escape rate": trends.escape, "FPR": trends.fpr}, "%"),
        ("latency (ms)", {"p50": trends.latency_p50, "p99": trends.latency_p99}, "ms"),
    ]  # fmt: skip
    drift_top = TOP + len(panels) * (PANEL + GAP)
    height = drift_top + max(len(families), 1) * ROW + 40
    parts = [
        f'<svg id="trend-chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" '
        'font-size="11" role="img" aria-label="trends">'
    ]
    for i, (title, series, unit) in enumerate(panels):
        top = TOP + i * (PANEL + GAP)
        axis = _Axis(trends, top, PANEL, _peak(series, unit))
        parts += _frame(axis, title, unit)
        for name, values in series.items():
            parts += _series(axis, centres, values, COLOURS[name], unit)
        parts += _legend(list(series), top - 6)
    drift_axis = _Axis(trends, drift_top, max(len(families), 1) * ROW, 1.0)
    parts += _drift(drift_axis, trends, families)
    parts += _time_ticks(drift_axis, trends, height - 22)
    parts += _events(_Axis(trends, TOP, height - TOP - 40, 1.0), trends.events)
    parts.append("</svg>")
    return Markup("".join(parts))


def _value(item, key: str = "rate") -> float:
    """A figure's value (a rate dict's `key`, or a number); nan when there is none."""
    if item is None:
        return math.nan
    if isinstance(item, dict):
        return item[key] if item["n"] else math.nan
    return float(item)


def _peak(series: dict, unit: str) -> float:
    """A round top for the panel's y axis (1, 2 or 5 times a power of ten), above every
    value and band."""
    key = "hi" if unit == "%" else "rate"
    values = [_value(v, key) for figures in series.values() for v in figures]
    top = max([v for v in values if math.isfinite(v)] + [0.01 if unit == "%" else 1.0])
    power = 10 ** math.floor(math.log10(top))
    nice = next(m * power for m in (1, 2, 5, 10) if m * power >= top)
    return min(nice, 1.0) if unit == "%" else nice


def _frame(axis: _Axis, title: str, unit: str) -> list[str]:
    parts = [f'<text x="{LEFT}" y="{axis.top - 8}" font-weight="bold" fill="{INK}">{title}</text>']
    for step in range(5):
        value = axis.peak * step / 4
        y = axis.y(value)
        label = f"{100 * value:.3g}%" if unit == "%" else f"{value:g}"
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{GRID}"/><text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" '
                     f'fill="{INK}">{label}</text>')  # fmt: skip
    return parts


def _series(axis: _Axis, centres, values: list, colour: str, unit: str) -> list[str]:
    """A line broken at buckets without a figure; a shaded band under rates."""
    points = [(axis.x(c), v) for c, v in zip(centres, values, strict=True)]
    runs: list[list] = [[]]
    for (x, item), value in zip(points, (_value(v) for v in values), strict=True):
        if math.isfinite(value):
            runs[-1].append((x, item, value))
        elif runs[-1]:
            runs.append([])
    parts = []
    for run in filter(None, runs):
        if unit == "%":
            upper = [f"{x:.1f},{axis.y(item['hi']):.1f}" for x, item, _ in run]
            lower = [f"{x:.1f},{axis.y(item['lo']):.1f}" for x, item, _ in reversed(run)]
            parts.append(f'<polygon class="band" points="{" ".join(upper + lower)}" '
                         f'fill="{colour}" fill-opacity="0.2"/>')  # fmt: skip
        line = " ".join(f"{x:.1f},{axis.y(v):.1f}" for x, _, v in run)
        style = f'fill="none" stroke="{colour}" stroke-width="1.5"'
        parts.append(f'<polyline points="{line}" {style}/>')
    return parts


def _legend(names: list[str], y: float) -> list[str]:
    parts, x = [], WIDTH - RIGHT - 110 * len(names)
    for name in names:
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{COLOURS[name]}"/>'
                     f'<text x="{x + 14}" y="{y}" fill="{INK}">{name}</text>')  # fmt: skip
        x += 110
    return parts


def _drift(axis: _Axis, trends: Trends, families: list[str]) -> list[str]:
    """One row per family: a filled cell where it drifted, a pale one where it was clean."""
    parts = [f'<text x="{LEFT}" y="{axis.top - 8}" font-weight="bold" fill="{INK}">drift</text>']
    parts += _legend(["drifted", "clean"], axis.top - 6)
    width = max(1.0, axis.x(trends.times[0] + trends.span.step) - axis.x(trends.times[0]))
    for row, family in enumerate(families):
        y = axis.top + row * ROW
        parts.append(f'<text x="{LEFT - 4}" y="{y + 13}" text-anchor="end">{family}</text>')
        for at, verdict in zip(trends.times, trends.drift[family], strict=True):
            if verdict is None:
                continue
            style = "drifted" if verdict else "clean"
            opacity = "1" if verdict else "0.35"
            parts.append(f'<rect class="{style}" x="{axis.x(at):.1f}" y="{y + 2}" '
                         f'width="{width:.1f}" height="{ROW - 4}" fill="{COLOURS[style]}" '
                         f'fill-opacity="{opacity}"/>')  # fmt: skip
    if not families:
        parts.append(f'<text x="{LEFT + 8}" y="{axis.top + 13}">no drift checks</text>')
    return parts


def _time_ticks(axis: _Axis, trends: Trends, y: float) -> list[str]:
    """Labels along the time axis: every 6 hours up to two days, else every day or few."""
    span = trends.span
    length = span.end - span.start
    hourly = length <= timedelta(days=2)
    step = timedelta(hours=6) if hourly else timedelta(days=max(1, length.days // 10))
    at = span.start if hourly else span.start.replace(hour=0)
    parts = []
    while at <= span.end:
        if at >= span.start:
            label = at.strftime("%m-%d %H:%M" if hourly else "%m-%d")
            parts.append(f'<text x="{axis.x(at):.1f}" y="{y}" text-anchor="middle">{label}</text>')
        at += step
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{y + 16}" text-anchor="end" fill="{INK}">'
                 f"UTC, one point per {span.bucket}</text>")  # fmt: skip
    return parts


def _events(axis: _Axis, events: list[dict]) -> list[str]:
    """A vertical line per event, its text slanting up and away from the chart's right edge."""
    parts = []
    for event in events:
        x = axis.x(event["time"])
        dash = EVENT_DASH.get(event["kind"], "4,2")
        near_edge = x > WIDTH - 160
        tx, anchor, angle = (x - 3, "end", 30) if near_edge else (x + 3, "start", -30)
        parts.append(f'<line class="event" x1="{x:.1f}" x2="{x:.1f}" y1="{axis.top - 4}" '
                     f'y2="{axis.top + axis.height}" stroke="{INK}" stroke-dasharray="{dash}"/>'
                     f'<text x="{tx:.1f}" y="{axis.top - 6}" font-size="10" fill="{INK}" '
                     f'text-anchor="{anchor}" '
                     f'transform="rotate({angle} {tx:.1f} {axis.top - 6})">'
                     f"{escape(event['text'])}</text>")  # fmt: skip
    return parts
