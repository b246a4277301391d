"""A version's model card: a short markdown description, readable in the MLflow UI alone.

Written from the version's audit record (registry.audit): whether it may serve and why, its
test figures with their 95% bounds, each release gate's verdict, the approval, and where its
Data Docs, evaluation report and training run are, as MLflow artifact URIs.
"""

from __future__ import annotations

from mlflow import MlflowClient

from registry.audit import audit
from registry.servable import refusal

FIGURES = (("escape", "escape rate"), ("fpr", "false positive rate"))


def model_card(record: dict, tags: dict[str, str]) -> str:
    """The markdown card of an audit record (`tags`: the version's tags, for the rule)."""
    lines = [f"## {record['model']} version {record['version']} ({record['kind'] or 'model'})"]
    simulation = record["lineage"].get("simulation")
    if simulation:
        lines.append(f"**Simulation artifact, not a production model:** {simulation}")
    why_not = refusal(tags)
    lines.append(f"**May serve:** {'no, ' + why_not if why_not else 'yes'}")
    lines += _figures(record["lineage"].get("test_figures") or {}, record.get("threshold"))
    lines += _gates(record.get("gate"))
    lines += _approval(record.get("approval"))
    lines += _links(record)
    history = [f"- {k}: {v}" for k, v in record["history"].items()]
    return "\n\n".join(lines) + ("\n\n**History**\n\n" + "\n".join(history) if history else "")


def write_model_card(client: MlflowClient, model_name: str, version: str | int) -> str:
    """Set the version's description to its current model card; returns the card."""
    tags = dict(client.get_model_version(model_name, str(version)).tags)
    card = model_card(audit(client, model_name, version), tags)
    client.update_model_version(model_name, str(version), description=card)
    return card


def _figures(figures: dict, threshold) -> list[str]:
    rows = [
        f"| {label} | {r['rate']:.2%} ({r.get('k', '?')}/{r.get('n', '?')}) | "
        f"{r['lo']:.2%} - {r['hi']:.2%} |"
        for key, label in FIGURES
        if isinstance(r := figures.get(key), dict) and r.get("rate") is not None
    ]
    if not rows:
        return ["**Test figures:** none recorded"]
    head = "| test split | rate | 95% interval |\n|---|---|---|\n"
    extra = f"macro F1 {figures['macro_f1']:.3f}, " if "macro_f1" in figures else ""
    return [head + "\n".join(rows), f"{extra}operating threshold {threshold}"]


def _gates(gate) -> list[str]:
    if not isinstance(gate, dict):
        return ["**Release gates:** no verdict recorded"]
    verdict = {True: "passed", False: "FAILED"}.get(gate.get("passed"), "not applied")
    lines = [f"**Release gates:** {verdict}" + (f" ({gate['reason']})" if "reason" in gate else "")]
    checks = gate.get("checks") or {}
    rows = [
        f"| {name} | {'pass' if c['passed'] else 'FAIL'} | {c['value']:.4g} {c['rule']} "
        f"{c['limit']:.4g} |"
        for name, c in checks.items()
    ]
    if rows:
        lines.append("| gate | verdict | value vs limit |\n|---|---|---|\n" + "\n".join(rows))
    return lines


def _approval(approval: dict | None) -> list[str]:
    if not approval:
        return ["**Approval:** none recorded"]
    how = "automatic" if approval.get("automatic") else f"by {approval.get('approver')}"
    text = f"**Approval:** {approval.get('decision')} {how} at {approval.get('time')}"
    return [text + (f": {approval['reason']}" if approval.get("reason") else "")]


def _links(record: dict) -> list[str]:
    run = record.get("run_id")
    links = {
        "training run": f"runs:/{run}" if run else None,
        "Data Docs": record["validation"].get("report"),
        "evaluation report": record["lineage"].get("evaluation_report"),
        "model": record["lineage"].get("model_uri"),
    }
    rows = [f"- {name}: `{uri}`" for name, uri in links.items() if uri]
    facts = f"data digest `{record['data']['digest']}`, git commit `{record['git_commit']}`"
    return ["**Lineage**\n\n" + "\n".join(rows + [f"- {facts}"])]
