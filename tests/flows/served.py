"""Flows that the Prefect server tests serve from a child process (`flow.serve`), so their
runs start in processes of their own, as from a deployment in production."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from prefect import Flow, flow, serve, task
from prefect.cli.deploy._triggers import _initialize_deployment_triggers
from prefect.client.schemas.objects import ConcurrencyLimitConfig

from flows.approval import request_approval
from flows.approve_candidate import approve_candidate
from flows.retrain import APPROVAL_DEPLOYMENT, retrain
from registry import open_store
from tasks.approval import start_approval
from tasks.resume import once_per_run
from tests.registry.approvals import gated_candidate

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
def held_retrain(
    release: str = "",
    timeout_s: float = 300,
    tracking_uri: str = "",
    model_name: str = "dieguard-test",
    approval_timeout_s: int = 600,
) -> None:
    """A stand-in retrain that runs until the file `release` exists ("": ends at once).

    With `tracking_uri` it first registers a candidate there (no training: a version with
    the lineage the retrain leaves, alias challenger) and starts its approval run, as the
    retrain does from a deployment (the real task and the real approve-candidate flow)."""
    if tracking_uri:
        store = open_store(tracking_uri)
        version = gated_candidate(store.client, model_name, f"{store.artifact_root}/candidate")
        start_approval(
            APPROVAL_DEPLOYMENT, model_name, tracking_uri, version, approval_timeout_s, ""
        )
    deadline = time.monotonic() + timeout_s
    while release and not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def weekly_retrain_spec() -> dict:
    """The `weekly-retrain` deployment as prefect.yaml declares it."""
    project = yaml.safe_load(Path("prefect.yaml").read_text())
    return next(d for d in project["deployments"] if d["name"] == "weekly-retrain")


def serve_weekly_retrain() -> None:
    """Serve the stand-in with the triggers and concurrency limit prefect.yaml declares."""
    spec = weekly_retrain_spec()
    held_retrain.serve(
        "weekly-retrain",
        triggers=_initialize_deployment_triggers("weekly-retrain", spec["triggers"]),
        global_limit=ConcurrencyLimitConfig(**spec["concurrency_limit"]),
    )


def serve_retrain_and_approval(retrain_flow: Flow = held_retrain) -> None:
    """Serve a retrain (the stand-in by default) as `weekly-retrain` with prefect.yaml's
    concurrency limit, and the real approve-candidate flow as its deployment."""
    limit = ConcurrencyLimitConfig(**weekly_retrain_spec()["concurrency_limit"])
    serve(
        retrain_flow.to_deployment("weekly-retrain", concurrency_limit=limit),
        approve_candidate.to_deployment(APPROVAL_DEPLOYMENT.split("/")[1]),
    )


def serve_real_retrain_and_approval() -> None:
    """Serve the real retrain flow (it trains) and the real approve-candidate flow."""
    serve_retrain_and_approval(retrain)
