"""The shadow comparison on constructed decisions and labels."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from monitoring.shadow import CHALLENGER_FLAGS, CHAMPION_FLAGS, OTHER_CLASS, compare_shadow

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


def decision(die: str, inspection: str, at, role: str, version: str, cls: int, p: float) -> dict:
    return {
        "die_id": die,
        "inspection_id": inspection,
        "received_at": at,
        "role": role,
        "model_version": version,
        "defect_class": cls,
        "class_name": f"class-{cls}",
        "flagged": cls != 0,
        "defect_probability": p,
        "confidence": max(p, 1 - p),
    }


def both(i: int, champion: int, challenger: int, p: float = 0.5, minute: int = 0) -> list[dict]:
    """Champion (version 1) and challenger (version 2) decisions on die D<i>."""
    die, inspection, at = f"D{i}", f"I{i}-{minute}", T0 + timedelta(minutes=10 * i + minute)
    champion_p = 0.9 if champion else 0.1
    return [
        decision(die, inspection, at, "champion", "1", champion, champion_p),
        decision(die, inspection, at, "candidate", "2", challenger, p),
    ]


@pytest.fixture
def decisions() -> list[dict]:
    rows = [
        *both(0, 0, 0, 0.1),  # agree: pass
        *both(1, 2, 2, 0.9),  # agree: scratch
        *both(2, 0, 1, 0.9),  # challenger flags, champion passes (surest first)
        *both(3, 0, 3, 0.6),
        *both(4, 2, 0, 0.05),  # champion flags, challenger passes (surest pass first)
        *both(5, 2, 0, 0.4),
        *both(6, 2, 4, 0.95),  # both flag, different classes
        *both(7, 1, 3, 0.7),
        *both(8, 0, 2, 0.9),  # an older inspection of D8 ...
        *both(8, 0, 0, 0.1, minute=5),  # ... and its latest: agreement
        decision("D9", "I9-0", T0, "champion", "1", 0, 0.1),  # the challenger failed
        decision("D10", "I10-0", T0, "champion", "1", 0, 0.1),
        decision("D10", "I10-0", T0, "candidate", "7", 2, 0.9),  # another version
    ]
    return rows


LABELS = [
    {"inspection_id": "I0-0", "label": 0},
    {"inspection_id": "I1-0", "label": 2},
    {"inspection_id": "I2-0", "label": 1},  # the champion's escape
    {"inspection_id": "I4-0", "label": 0},  # the champion's false positive
    {"inspection_id": "I5-0", "label": 2},  # the challenger's escape
    {"inspection_id": "I8-0", "label": 2},  # on an inspection that is not D8's latest
]


def test_agreement_counts_the_latest_inspection_both_judged(decisions):
    report = compare_shadow(decisions, LABELS, "1", "2")
    assert report.dies == 9
    assert (report.flag_agreement["k"], report.flag_agreement["n"]) == (5, 9)
    assert (report.class_agreement["k"], report.class_agreement["n"]) == (3, 9)
    assert report.flag_agreement["lo"] < 5 / 9 < report.flag_agreement["hi"]


def test_disagreements_are_ranked_by_what_they_could_cost(decisions):
    report = compare_shadow(decisions, LABELS, "1", "2")
    order = [(d["die_id"], d["group"]) for d in report.disagreements]
    assert order == [
        ("D2", CHALLENGER_FLAGS),
        ("D3", CHALLENGER_FLAGS),
        ("D4", CHAMPION_FLAGS),
        ("D5", CHAMPION_FLAGS),
        ("D6", OTHER_CLASS),
        ("D7", OTHER_CLASS),
    ]
    assert report.disagreements[0]["label"] == 1 and report.disagreements[1]["label"] is None
    assert report.counts() == {CHALLENGER_FLAGS: 2, CHAMPION_FLAGS: 2, OTHER_CLASS: 2}


def test_each_models_rates_on_the_labelled_dies(decisions):
    report = compare_shadow(decisions, LABELS, "1", "2")
    assert report.labelled == 5
    champion, challenger = report.models["champion"], report.models["challenger"]
    assert (champion["escape"]["k"], champion["escape"]["n"]) == (1, 3)
    assert (champion["fpr"]["k"], champion["fpr"]["n"]) == (1, 2)
    assert (challenger["escape"]["k"], challenger["escape"]["n"]) == (1, 3)
    assert (challenger["fpr"]["k"], challenger["fpr"]["n"]) == (0, 2)
    assert challenger["fpr"]["lo"] == 0.0 and 0 < challenger["fpr"]["hi"] < 1


def test_tags_markdown_and_dict(decisions):
    report = compare_shadow(decisions, LABELS, "1", "2")
    tags = report.tags()
    assert all(k.startswith("shadow.") and isinstance(v, str) for k, v in tags.items())
    assert tags["shadow.dies"] == "9" and tags["shadow.possible_escapes"] == "2"
    assert float(tags["shadow.challenger.escape"]) == pytest.approx(1 / 3, rel=1e-5)
    assert tags["shadow.champion.fpr_n"] == "2"
    text = report.markdown()
    assert "version 2 beside champion 1" in text and "| challenger |" in text
    assert text.index("| D2 |") < text.index("| D4 |") < text.index("| D6 |")
    as_dict = json.loads(json.dumps(report.as_dict()))
    assert as_dict["disagreements"][0]["received_at"].startswith("2026-03-01")


def test_no_shared_dies_gives_an_empty_report():
    report = compare_shadow([], [], "1", "2")
    assert report.dies == 0 and report.disagreements == [] and report.labelled == 0
    assert report.tags()["shadow.flag_agreement"] == ""  # no rate: an empty tag
    json.dumps(report.as_dict())
    assert "0 dies judged by both" in report.markdown()
