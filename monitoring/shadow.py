"""Shadow comparison: the champion's and the challenger's decisions on the same dies.

`compare_shadow` pairs the two decisions the log holds per inspection in shadow mode, measures
how often the models agree, ranks the disagreements by how much they could cost, and gives
each model's escape rate and false-positive rate on the dies operators labelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from model.schema import CLASS_NAMES, GOOD
from monitoring.rollout import CANDIDATE_ROLE, CHAMPION_ROLE, rate

# Disagreements in order of cost: a possible escape the champion lets through first.
CHALLENGER_FLAGS = "challenger flags, champion passes"
CHAMPION_FLAGS = "champion flags, challenger passes"
OTHER_CLASS = "both flag, different classes"
GROUPS = (CHALLENGER_FLAGS, CHAMPION_FLAGS, OTHER_CLASS)
SHOWN = 10  # disagreements listed in the markdown report


@dataclass
class ShadowReport:
    """The comparison of two versions over the dies both judged."""

    champion_version: str
    challenger_version: str
    dies: int
    flag_agreement: dict
    class_agreement: dict
    disagreements: list[dict] = field(default_factory=list)
    labelled: int = 0
    models: dict = field(default_factory=dict)  # {"champion"|"challenger": {escape, fpr}}

    def counts(self) -> dict[str, int]:
        """Disagreements per group."""
        return {g: sum(d["group"] == g for d in self.disagreements) for g in GROUPS}

    def as_dict(self) -> dict:
        """JSON-ready (ISO times, nan as None)."""
        return _plain(self.__dict__ | {"counts": self.counts()})

    def tags(self) -> dict[str, str]:
        """Flat ``shadow.*`` version tags: agreement, disagreement counts, per-model rates."""
        tags = {
            "shadow.champion_version": self.champion_version,
            "shadow.dies": self.dies,
            "shadow.labelled": self.labelled,
            "shadow.flag_agreement": self.flag_agreement["rate"],
            "shadow.class_agreement": self.class_agreement["rate"],
            "shadow.disagreements": len(self.disagreements),
            "shadow.possible_escapes": self.counts()[CHALLENGER_FLAGS],
        }
        for model, rates in self.models.items():
            for name, r in rates.items():
                tags |= {f"shadow.{model}.{name}": r["rate"], f"shadow.{model}.{name}_hi": r["hi"]}
                tags[f"shadow.{model}.{name}_n"] = r["n"]
        return {k: _tag_text(v) for k, v in tags.items()}

    def markdown(self) -> str:
        """A short report for a Prefect artifact."""
        a, c = self.flag_agreement, self.class_agreement
        lines = [
            f"## Shadow: version {self.challenger_version} beside champion {self.champion_version}",
            f"{self.dies} dies judged by both; {self.labelled} labelled by operators.",
            f"- same verdict (flagged or not): {_pct(a)}; same class: {_pct(c)}",
            *[f"- {group}: {n}" for group, n in self.counts().items()],
            "",
            "| model | escape rate (95% upper) | FPR (95% upper) |",
            "| --- | --- | --- |",
        ]
        for model, r in self.models.items():
            esc, fpr = r["escape"], r["fpr"]
            lines.append(
                f"| {model} | {_pct(esc)} ({esc['hi']:.2%}) | {_pct(fpr)} ({fpr['hi']:.2%}) |"
            )
        if self.disagreements:
            shown = min(SHOWN, len(self.disagreements))
            lines += ["", f"Disagreements that matter most ({shown} of {len(self.disagreements)}):"]
            lines += [""]
            lines += ["| die | group | champion | challenger (P defect) | label |"]
            lines += ["| --- | --- | --- | --- | --- |"]
            lines += [_disagreement_row(d) for d in self.disagreements[:SHOWN]]
        return "\n".join(lines)


def compare_shadow(
    decisions: list[dict],
    labels: list[dict],
    champion_version: str,
    challenger_version: str,
    confidence: float = 0.95,
) -> ShadowReport:
    """Compare two versions on the dies both judged (the latest inspection of each die).

    Args:
        decisions: the log's per-model decisions (InspectionLog.decisions): role,
            model_version, defect_class, flagged, defect_probability, confidence, die_id,
            inspection_id, received_at.
        labels: operator feedback (InspectionLog.feedback): inspection_id and label.
        champion_version, challenger_version: the versions compared (roles champion and
            candidate).
        confidence: of the Clopper-Pearson intervals.
    Returns:
        The ShadowReport; escape rate and FPR are over the labelled dies only.
    """
    pairs = _pairs(decisions, str(champion_version), str(challenger_version))
    label_of = {f["inspection_id"]: int(f["label"]) for f in labels}
    n = len(pairs)
    same_flag = sum(a["flagged"] == b["flagged"] for a, b in pairs)
    same_class = sum(a["defect_class"] == b["defect_class"] for a, b in pairs)
    labelled = [
        (a, b, label_of[a["inspection_id"]]) for a, b in pairs if a["inspection_id"] in label_of
    ]
    models = {
        "champion": _rates([(a, y) for a, _, y in labelled], confidence),
        "challenger": _rates([(b, y) for _, b, y in labelled], confidence),
    }
    return ShadowReport(
        str(champion_version),
        str(challenger_version),
        n,
        rate(same_flag, n, confidence),
        rate(same_class, n, confidence),
        _ranked(pairs, label_of),
        len(labelled),
        models,
    )


def _pairs(decisions: list[dict], champion: str, challenger: str) -> list[tuple[dict, dict]]:
    """(champion decision, challenger decision) per die, from its latest inspection both judged."""
    sides = {(CHAMPION_ROLE, champion): "a", (CANDIDATE_ROLE, challenger): "b"}
    by_inspection: dict[str, dict[str, dict]] = {}
    for d in decisions:
        key = sides.get((d["role"], str(d["model_version"])))
        if key is not None:
            by_inspection.setdefault(d["inspection_id"], {})[key] = d
    latest: dict[str, tuple[dict, dict]] = {}
    for both in by_inspection.values():
        if len(both) == 2:
            a, b = both["a"], both["b"]
            kept = latest.get(a["die_id"])
            if kept is None or a["received_at"] >= kept[0]["received_at"]:
                latest[a["die_id"]] = (a, b)
    return sorted(latest.values(), key=lambda pair: pair[0]["received_at"])


def _ranked(pairs: list[tuple[dict, dict]], label_of: dict[str, int]) -> list[dict]:
    """The disagreements, by group, then within a group by the challenger's conviction:
    its defect probability, highest first when it flags and lowest first when it passes
    (the surest pass of a die the champion flags is the likeliest challenger escape)."""
    rows = []
    for a, b in pairs:
        group = _group(a, b)
        if group is None:
            continue
        p = _defect_probability(b)
        order = (GROUPS.index(group), p if group == CHAMPION_FLAGS else -p)
        rows.append((order, _row(a, b, group, label_of.get(a["inspection_id"]))))
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def _group(a: dict, b: dict) -> str | None:
    if b["flagged"] and not a["flagged"]:
        return CHALLENGER_FLAGS
    if a["flagged"] and not b["flagged"]:
        return CHAMPION_FLAGS
    if a["flagged"] and a["defect_class"] != b["defect_class"]:
        return OTHER_CLASS
    return None


def _row(a: dict, b: dict, group: str, label: int | None) -> dict:
    def side(d: dict) -> dict:
        keys = ("flagged", "defect_class", "class_name", "confidence", "defect_probability")
        return {k: d.get(k) for k in keys}

    return {
        "die_id": a["die_id"],
        "inspection_id": a["inspection_id"],
        "received_at": a["received_at"],
        "group": group,
        "champion": side(a),
        "challenger": side(b),
        "label": label,
    }


def _defect_probability(d: dict) -> float:
    """The decision's defect probability; from its confidence when it was not logged."""
    if d.get("defect_probability") is not None:
        return float(d["defect_probability"])
    if d.get("confidence") is not None:
        return float(d["confidence"]) if d["flagged"] else 1.0 - float(d["confidence"])
    return 1.0 if d["flagged"] else 0.0


def _rates(judged: list[tuple[dict, int]], confidence: float) -> dict:
    defective = [d for d, y in judged if y != GOOD]
    good = [d for d, y in judged if y == GOOD]
    return {
        "escape": rate(sum(not d["flagged"] for d in defective), len(defective), confidence),
        "fpr": rate(sum(d["flagged"] for d in good), len(good), confidence),
    }


def _disagreement_row(d: dict) -> str:
    a, b = d["champion"], d["challenger"]
    p = _defect_probability(b)
    label = "-" if d["label"] is None else CLASS_NAMES[d["label"]]
    return f"| {d['die_id']} | {d['group']} | {_verdict(a)} | {_verdict(b)} ({p:.2f}) | {label} |"


def _verdict(d: dict) -> str:
    return f"{d.get('class_name') or d['defect_class']}" if d["flagged"] else "pass"


def _pct(r: dict) -> str:
    return f"{r['rate']:.2%} ({r['k']}/{r['n']})"


def _tag_text(value) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
