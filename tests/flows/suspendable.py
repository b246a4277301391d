"""A flow with the retrain's approval step and one step before it, served by the suspension
tests: the step counts its runs in a file, so a resumed run that repeated it would show."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows.approval import request_approval
from tasks.resume import once_per_run

SUMMARY = "### Approve dieguard-test version 7\n\nescape rate 0.42 %, FPR 11.3 %"


@task
def count_run(marker: str) -> int:
    """Append a line to `marker`; the number of lines so far."""
    path = Path(marker)
    with path.open("a") as f:
        f.write("ran\n")
    return len(path.read_text().splitlines())


@flow(name="suspendable-approval", persist_result=True)
def suspendable_approval(marker: str, approval_timeout_s: int = 600) -> dict:
    runs_before = once_per_run(count_run)(marker)
    decision = request_approval(SUMMARY, approval_timeout_s)
    return decision.to_dict() | {"runs_before": runs_before}
