"""Tasks that show a run's figures, verdicts and reports as Prefect artifacts.

A report is linked first where the flow wrote it, then, once the training run is logged,
at its copy in the run's MLflow artifact store (S3 in production), which outlives the
worker's disk.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from registry import open_store


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


@task
def publish_logged_reports(
    tracking_uri: str | None, run_id: str, reports: dict[str, str], keys: dict[str, str]
) -> dict[str, str]:
    """Links to the reports as logged with the MLflow run: `<artifact root>/<name>/<file>`.

    Args:
        tracking_uri, run_id: the MLflow store and the run the reports were logged with.
        reports: name -> the report file, logged with its folder under `name/`.
        keys: name -> the Prefect artifact key (the local link's, so that the logged copy
            becomes its latest version).
    Returns:
        name -> the linked URI.
    """
    root = open_store(tracking_uri).client.get_run(run_id).info.artifact_uri.rstrip("/")
    if "://" not in root and not root.startswith("file:"):  # a local folder
        root = Path(root).resolve().as_uri()
    links = {name: f"{root}/{name}/{Path(path).name}" for name, path in reports.items()}
    for name, uri in links.items():
        create_link_artifact(uri, key=keys[name], description=f"{name}, logged with run {run_id}")
    return links


def _pct(rate: dict) -> str:
    return f"{rate['rate']:.2%} ({rate['k']}/{rate['n']})"
