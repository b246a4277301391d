"""HTML tables of the evaluation report, built from its JSON payload (NaN already None)."""

from __future__ import annotations

import html


def table(rows: list[tuple], header: tuple) -> str:
    """An HTML table with escaped cells."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def pct(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def num(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def rate_text(r: dict) -> str:
    """'1.23% [0.40%, 3.10%] (3/244)': a rate with its 95% interval and counts."""
    if not r["n"]:
        return "n/a (0 dies)"
    return f"{pct(r['rate'])} [{pct(r['lo'])}, {pct(r['hi'])}] ({r['k']}/{r['n']})"


def paragraph(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{html.escape(text)}</p>"


def section_bodies(payload: dict) -> dict[str, str]:
    """HTML (without heading) of each report section, keyed as SECTIONS."""
    m, errors, fairness = payload["evaluation"], payload["error_analysis"], payload["fairness"]
    return {
        "summary": summary_body(m),
        "per_class": per_class_body(m),
        "confusion": confusion_body(m),
        "baseline": baseline_body(m),
        "notes": notes_body(m),
        "errors": errors_body(errors),
        "fairness": fairness_body(fairness),
        "recommendations": "<ul>"
        + "".join(f"<li>{html.escape(r)}</li>" for r in fairness["recommendations"])
        + "</ul>",
    }


def headline_rows(block: dict) -> list[tuple]:
    return [
        ("accuracy", pct(block["accuracy"])),
        ("macro F1", num(block["macro_f1"])),
        ("escape rate [95% CI]", rate_text(block["escape"])),
        ("false-positive rate [95% CI]", rate_text(block["fpr"])),
    ]


def summary_body(m: dict) -> str:
    rows = [
        ("split", m["split"]),
        ("dies", m["n"]),
        ("defective dies", m["n_defective"]),
        ("good dies", m["n_good"]),
        ("dies with a note", m["n_with_note"]),
        ("defect threshold", num(m["threshold"], 4)),
    ]
    warnings = "".join(paragraph("Warning: " + w, "warn") for w in m["warnings"])
    return warnings + table(rows + headline_rows(m["model"]), ("figure", "value"))


def per_class_body(m: dict) -> str:
    models = [("multimodal", m["model"])]
    if m["baseline"] is not None:
        models.append(("baseline", m["baseline"]))
    header = ["class", "support"]
    for name, _ in models:
        header += [f"{name} precision", f"{name} recall", f"{name} F1"]
    rows = []
    for cls, stats in m["model"]["per_class"].items():
        row = [cls, stats["support"]]
        for _, block in models:
            s = block["per_class"][cls]
            row += [num(s["precision"]), num(s["recall"]), num(s["f1"])]
        rows.append(tuple(row))
    return table(rows, tuple(header))


def confusion_body(m: dict) -> str:
    names = list(m["model"]["per_class"])
    rows = [(f"true {n}", *counts) for n, counts in zip(names, m["model"]["confusion"])]
    return paragraph("Counts of the multimodal model (rows true, columns predicted).") + table(
        rows, ("", *names)
    )


def baseline_body(m: dict) -> str:
    if m["baseline"] is None:
        return paragraph("No vision-only baseline was given.")
    ours, base = headline_rows(m["model"]), headline_rows(m["baseline"])
    rows = [(a[0], a[1], b[1]) for a, b in zip(ours, base)]
    rows.append(("defect threshold", num(m["threshold"], 4), num(m["baseline"]["threshold"], 4)))
    paired = [(k.replace("_", " "), v) for k, v in m["paired"].items()]
    seed = m["seed_point"]
    at_seed = [
        (name, rate_text(seed[key]["escape"]), rate_text(seed[key]["fpr"]),
         pct(seed[key]["false_flags"]))
        for key, name in (("model", "multimodal"), ("baseline", "vision-only baseline"))
    ]  # fmt: skip
    return (
        table(rows, ("figure", "multimodal", "vision-only baseline"))
        + paragraph("On the same dies, whose escapes and false alarms:")
        + table(paired, ("dies", "count"))
        + paragraph(
            f"Each model where it lets {seed['escape']:.1%} of this split's defective dies "
            "escape, as the image-only CNN does in production today (a point of each "
            "model's own ROC curve on these dies, not its operating point):"
        )
        + table(at_seed, ("model", "escape [95% CI]", "FPR [95% CI]", "flags that are good dies"))
    )


def note_rows(m: dict) -> list[tuple[str, dict]]:
    """(label, summary) pairs of the notes comparison, in a fixed order."""
    notes = m["notes"]
    rows = [("all dies, notes present", notes["all_dies"]["notes_present"])]
    if "notes_removed" in notes["all_dies"]:
        rows.append(("all dies, every note removed", notes["all_dies"]["notes_removed"]))
    rows.append(("dies with a note", notes["dies_with_note"]["notes_present"]))
    if "notes_removed" in notes["dies_with_note"]:
        rows.append(("dies with a note, note removed", notes["dies_with_note"]["notes_removed"]))
    rows.append(("dies without a note", notes["dies_without_note"]["notes_present"]))
    return rows


def notes_body(m: dict) -> str:
    rows = [
        (
            label,
            s["n"],
            pct(s["accuracy"]),
            num(s["macro_f1"]),
            rate_text(s["escape"]),
            rate_text(s["fpr"]),
        )
        for label, s in note_rows(m)
    ]
    return table(rows, ("dies", "n", "accuracy", "macro F1", "escape rate", "FPR"))


BIN_HEADER = (
    "parameter",
    "z bin",
    "dies",
    "error rate [95% CI]",
    "x overall",
    "lower bound above overall",
)
EXAMPLE_HEADER = (
    "die",
    "true",
    "predicted",
    "confidence",
    "escape",
    "most deviating parameters (z)",
    "note",
)


def errors_body(e: dict) -> str:
    pairs = [
        (p["true"], p["predicted"], p["count"], pct(p["share_of_true"], 1))
        for p in e["confused_pairs"]
    ]
    notes = [
        ("with a note", rate_text(e["notes"]["with_note"])),
        ("without a note", rate_text(e["notes"]["without_note"])),
    ]
    return (
        paragraph(f"Misclassified: {rate_text(e['error_rate'])}.")
        + "<h3>Most confused class pairs</h3>"
        + table(pairs, ("true", "predicted", "dies", "share of true class"))
        + "<h3>Errors with and without an operator note</h3>"
        + table(notes, ("dies", "error rate [95% CI]"))
        + "<h3>Process-parameter ranges where errors cluster (z-score bins)</h3>"
        + bins_table(e["parameter_bins"])
        + "<h3>Misclassified dies shown (escapes first)</h3>"
        + table([example_row(x) for x in e["examples"]], EXAMPLE_HEADER)
    )


def bins_table(bins: list[dict]) -> str:
    if not bins:
        return paragraph("No out-of-range bin of enough dies errs more often than all dies.")
    rows = [
        (
            b["parameter"],
            b["bin"],
            b["n"],
            rate_text(b),
            num(b["lift"], 2),
            "yes" if b["above_overall"] else "no",
        )
        for b in bins
    ]
    return table(rows, BIN_HEADER)


def example_row(x: dict) -> tuple:
    top = ", ".join(f"{t['name']} {t['z']:+.1f}" for t in x["top_parameters"])
    escape = "yes" if x["escape"] else ""
    return (x["die_id"], x["true"], x["predicted"], num(x["confidence"]), escape, top, x["note"])


def fairness_body(f: dict) -> str:
    parts = []
    for dim, audit in f["dimensions"].items():
        rows = [
            (g, s["n"], s["n_defective"], s["n_good"], rate_text(s["escape"]), rate_text(s["fpr"]))
            for g, s in audit["groups"].items()
        ]
        parts.append(f"<h3>{html.escape(dim)}</h3>")
        parts.append(table(rows, ("group", "dies", "defective", "good", "escape rate", "FPR")))
        parts += [
            paragraph(gap_text(name, audit[key]))
            for key, name in (("escape_gap", "escape rate"), ("fpr_gap", "FPR"))
        ]
    return "".join(parts)


def gap_text(name: str, gap: dict | None) -> str:
    if gap is None:
        return f"Largest {name} gap: fewer than two groups to compare."
    verdict = "significant (intervals do not overlap)" if gap["significant"] else "not significant"
    small = "; groups under the minimum size included" if gap["small_groups_included"] else ""
    return (
        f"Largest {name} gap: {gap['high']} {pct(gap['high_rate'])} vs {gap['low']} "
        f"{pct(gap['low_rate'])} ({pct(gap['gap'])}), {verdict}{small}."
    )
