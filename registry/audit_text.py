"""An audit record (registry.audit.audit) as a plain-text report for a terminal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

KEY_PARAMS = (
    "name",
    "data_dir",
    "train.seed",
    "train.lr",
    "train.batch_size",
    "train.escape_target",
    "train.fpr_budget",
    "model.img_size",
)
WIDTH = 100
LABEL = 18


def format_audit(record: Mapping[str, Any]) -> str:
    """The audit record as readable lines (sections: data, validation, training, deployment,
    approval, history, events)."""
    lines = _header(record)
    lines += _data(record["data"])
    lines += _section("Validation", record["validation"])
    lines += _training(record["training"], record.get("git_commit"))
    lines += _deployment(record)
    lines += _approval(record.get("approval"))
    lines += _section("History", record.get("history") or {})
    lines += _events(record.get("events") or [])
    return "\n".join(lines) + "\n"


def _header(r: Mapping) -> list[str]:
    aliases = ", ".join(r["aliases"]) or "none"
    kind = f" ({r['kind']})" if r.get("kind") else ""
    return [
        f"{r['model']} version {r['version']}{kind}    aliases: {aliases}",
        _row("status", f"{r['status']}, registered {r['registered_at']}"),
        _row("source", r["source"]),
    ]


def _data(data: Mapping) -> list[str]:
    lines = ["Data", _row("digest", data.get("digest") or "unknown")]
    if data.get("snapshot"):  # fetched from S3: where, and the listing's digest
        snap = data["snapshot"]
        lines.append(_row("snapshot", f"{snap['uri']}  (snapshot {snap['digest']})"))
    for s in data.get("splits", []):
        rows = f", {s['rows']} rows" if s.get("rows") else ""
        lines.append(_row(s["name"], f"{s['digest']}  {s['source']}  ({s['context']}{rows})"))
    return lines


def _training(t: Mapping | None, git_commit: str | None) -> list[str]:
    if t is None:
        return ["Training run", _row("run", "unknown")]
    params, metrics = t["params"], t["metrics"]
    shown = [k for k in KEY_PARAMS if k in params] or list(params)[:6]
    kept = (".test", ".operating_threshold")
    figures = {k: v for k, v in metrics.items() if any(part in k for part in kept)}
    return [
        "Training run",
        _row("run", f"{t['run_id']}  {t['name']}  {t['status']}"),
        _row("time", f"{t['started']} -> {t['ended']}"),
        _row("git commit", git_commit or "unknown"),
        _row("params", f"{len(params)} logged, among them:"),
        *[_row("", f"{k} = {params[k]}") for k in shown],
        *[_row("" if i else "test metrics", f"{k} = {v:.4g}") for i, (k, v) in _items(figures)],
    ]


def _deployment(r: Mapping) -> list[str]:
    gate = r.get("gate")
    if isinstance(gate, Mapping) and "passed" in gate:
        gate = _verdict(gate)
    return [
        "Deployment",
        _row("threshold", r.get("threshold")),
        *_rows("gates", gate),
        *_rows("vs baseline", r.get("baseline_comparison")),
    ]


def _verdict(gate: Mapping) -> str:
    """'passed', 'FAILED: <checks>', or 'not gated: <reason>' for a registered baseline."""
    if gate["passed"] is None:
        return f"not gated: {gate.get('reason', '')}"
    checks = gate.get("checks") or {}
    failed = [name for name, c in checks.items() if not c.get("passed")]
    text = "passed" if gate["passed"] in (True, "true") else "FAILED " + ", ".join(failed)
    return f"{text.strip()} ({gate['chosen']})" if gate.get("chosen") else text.strip()


def _approval(a: Mapping | None) -> list[str]:
    if not a:
        return ["Approval", _row("decision", "none recorded")]
    how = "automatic" if a.get("automatic") else "manual"
    checklist = a.get("checklist") or {}
    items = checklist.items() if isinstance(checklist, Mapping) else []
    return [
        "Approval",
        _row("decision", f"{a.get('decision')} by {a.get('approver')} ({how}) at {a.get('time')}"),
        _row("reason", a.get("reason")),
        *_rows("checklist", dict(items)),
    ]


def _events(events: list[Mapping]) -> list[str]:
    lines = ["Events"] + ([_row("", "none")] if not events else [])
    for e in events:
        detail = " ".join(f"{k}={_text(v)}" for k, v in (e.get("detail") or {}).items())
        lines.append(f"  {e['seq']:04d}  {e['time']}  {e['kind']:<12} {detail}")
    return lines


def _section(title: str, fields: Mapping) -> list[str]:
    body = [_row(k, v) for k, v in fields.items()] or [_row("", "none")]
    return [title, *body]


def _items(pairs) -> list[tuple[int, tuple]]:
    return list(enumerate(dict(pairs).items()))


def _rows(label: str, value: Any) -> list[str]:
    """One row, or one per key of a mapping (the label on the first)."""
    if not isinstance(value, Mapping) or not value:
        return [_row(label, value)]
    return [_row("" if i else label, f"{k}: {_text(v)}") for i, (k, v) in _items(value)]


def _row(label: str, value: Any) -> str:
    return f"  {label:<{LABEL}}{_text(value, WIDTH - LABEL - 2)}"


def _text(value: Any, limit: int = WIDTH) -> str:
    """Text as it is; other values as compact JSON, cut to `limit` characters."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
