"""Tasks that show a run's figures, verdicts and reports as Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact


@task
def publish_figures(models: dict[str, dict], key: str = "test-figures") -> None:
    """A table of each model's test escape rate (with upper bound), FPR and macro F1."""
    rows = ["| model | escape (95% upper) | FPR | macro F1 | without notes: escape, FPR |"]
    rows.append("| --- | --- | --- | --- | --- |")
    for name, s in models.items():
        t, nn = s["test"], s.get("test_no_notes", s["test"])
        rows.append(
            f"| {name} | {_pct(t['escape'])} ({t['escape']['hi']:.2%}) | {_pct(t['fpr'])} "
            f"| {t.get('macro_f1', float('nan')):.3f} | {_pct(nn['escape'])}, {_pct(nn['fpr'])} |"
        )
    create_markdown_artifact("\n".join(rows), key=key, description="Figures on the test split")


@task
def publish_gates(verdict: dict, key: str = "release-gates") -> None:
    """The release gates as a table: check, value, limit, verdict."""
    rows = ["| gate | value | limit | verdict |", "| --- | --- | --- | --- |"]
    for name, c in verdict["checks"].items():
        mark = "pass" if c["passed"] else "**FAIL**"
        rows.append(f"| {name} | {c['value']:.4f} | {c['rule']} {c['limit']:.4f} | {mark} |")
    head = "Release gates passed." if verdict["passed"] else "Release gates FAILED."
    create_markdown_artifact(head + "\n\n" + "\n".join(rows), key=key, description=head)


@task
def publish_report(path: str | Path, key: str, description: str) -> None:
    """A link to a report file (HTML) on the machine that ran the flow."""
    create_link_artifact(Path(path).resolve().as_uri(), key=key, description=description)


def _pct(rate: dict) -> str:
    return f"{rate['rate']:.2%} ({rate['k']}/{rate['n']})"
