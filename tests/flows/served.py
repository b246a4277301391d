"""Flows that the Prefect server tests serve from a child process (`flow.serve`), so their
runs start in processes of their own, as from a deployment in production."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from prefect import flow, task
from prefect.cli.deploy._triggers import _initialize_deployment_triggers
from prefect.client.schemas.objects import ConcurrencyLimitConfig

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
    """The retrain's approval step after one step that counts its runs in a file, so a
    resumed run that repeated it would show."""
    runs_before = once_per_run(count_run)(marker)
    decision = request_approval(SUMMARY, approval_timeout_s)
    return decision.to_dict() | {"runs_before": runs_before}


@flow(name="weekly-retrain")
def held_retrain(release: str = "", timeout_s: float = 300) -> None:
    """A stand-in retrain that runs until the file `release` exists ("": ends at once)."""
    deadline = time.monotonic() + timeout_s
    while release and not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def serve_weekly_retrain() -> None:
    """Serve the stand-in with the triggers and concurrency limit prefect.yaml declares."""
    project = yaml.safe_load(Path("prefect.yaml").read_text())
    spec = next(d for d in project["deployments"] if d["name"] == "weekly-retrain")
    held_retrain.serve(
        "weekly-retrain",
        triggers=_initialize_deployment_triggers("weekly-retrain", spec["triggers"]),
        global_limit=ConcurrencyLimitConfig(**spec["concurrency_limit"]),
    )
