"""Wafer maps: the latest inspection of each die, in its class colour, at its position."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from service.wafer_map import PALETTE, counts, wafer_maps, wafer_svg

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def row(die_id: str, x, y, class_name: str, flagged: bool, feedback: str = "none", at=0) -> dict:
    return {"die_id": die_id, "wafer_id": "W1", "die_x": x, "die_y": y, "flagged": flagged,
            "class_name": class_name, "feedback": feedback, "metadata": {"lot_id": "L1"},
            "received_at": T0 + timedelta(minutes=at)}  # fmt: skip


def test_each_die_is_drawn_once_from_its_latest_inspection():
    rows = [
        row("D1", 0, 0, "good", False),
        row("D2", 1, -1, "particle", True, "confirmed"),
        row("D1", 0, 0, "scratch", True, "overridden", at=5),
        row("D3", None, None, "good", False),
        row("D4", 0, 61, "good", False),  # off any wafer: a bad position is not drawn
    ]
    (wafer,) = wafer_maps(rows)
    assert [d["die_id"] for d in wafer.dies] == ["D1", "D2"] and wafer.radius == 2
    assert [d["die_id"] for d in wafer.unplaced] == ["D3", "D4"]
    svg = str(wafer_svg(wafer, cell=10))
    cells = re.findall(r'<rect class="die" data-die="(\w+)" data-class="(\w+)" x="([\d.]+)" '
                       r'y="([\d.]+)"[^>]*fill="(#\w+)"', svg)  # fmt: skip
    assert {c[0]: (c[1], c[4]) for c in cells} == {
        "D1": ("scratch", PALETTE["scratch"]),
        "D2": ("particle", PALETTE["particle"]),
    }
    at = {c[0]: (float(c[2]), float(c[3])) for c in cells}
    assert at["D2"][0] - at["D1"][0] == 10 and at["D2"][1] - at["D1"][1] == 10  # y points up
    assert svg.count('stroke="#000000"') == 2  # both flagged
    assert svg.count("<circle") == 2 and svg.count("<path") == 1  # edge, dot; cross
    total = counts([wafer])
    assert (total["dies"], total["flagged"], total["feedback"]["overridden"]) == (4, 2, 1)


def test_a_die_id_is_escaped_in_the_svg_and_quoted_in_its_link():
    (wafer,) = wafer_maps([row('<b>"x"&', 0, 0, "good", False)])
    svg = str(wafer_svg(wafer))
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert 'href="/dashboard/dies/%3Cb%3E%22x%22%26"' in svg


def test_the_palette_holds_five_distinct_okabe_ito_colours():
    okabe_ito = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}
    assert len(set(PALETTE.values())) == 5 and set(PALETTE.values()) <= okabe_ito
