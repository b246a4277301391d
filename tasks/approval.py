"""Approval tasks: start the approval run of a candidate, read what its form shows, and
refuse a decision on a version that is no longer the challenger.

The registry reads and writes retry (the store is a network service in production).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment

from registry import approval_refusal, audit, open_store, refuse_approval

RETRY = {"retries": 2, "retry_delay_seconds": 5, "cache_policy": NO_CACHE}


@task(cache_policy=NO_CACHE)
def start_approval(
    deployment: str,
    model_name: str,
    tracking_uri: str | None,
    version: str,
    approval_timeout_s: int,
    rollout_deployment: str,
) -> str:
    """Start the approval deployment for a registered candidate; returns the run's id.

    Args:
        deployment: `<flow>/<deployment>`, e.g. "approve-candidate/approve-candidate".
        approval_timeout_s, rollout_deployment: handed to the approval run as they are.
    """
    run = run_deployment(
        name=deployment,
        parameters={
            "model_name": model_name,
            "tracking_uri": tracking_uri,
            "version": version,
            "approval_timeout_s": approval_timeout_s,
            "rollout_deployment": rollout_deployment,
        },
        timeout=0,
        as_subflow=False,  # its own run: it outlives the retrain that started it
        tags=["dieguard", "approval", f"version-{version}"],
    )
    return str(run.id)


@task(**RETRY)
def candidate_to_approve(model_name: str, tracking_uri: str | None, version: str) -> dict:
    """The candidate as the approval form presents it, from its registry record.

    Returns:
        refusal (why it may no longer be decided, or None), test (its test figures),
        gates_passed, report (its evaluation report's URI).
    """
    client = open_store(tracking_uri).client
    lineage = audit(client, model_name, version)["lineage"]
    gate = lineage.get("gate")
    return {
        "refusal": approval_refusal(client, model_name, version),
        "test": lineage.get("test_figures") or None,
        "gates_passed": isinstance(gate, dict) and gate.get("passed") is True,
        "report": lineage.get("evaluation_report"),
    }


@task(**RETRY)
def still_to_decide(model_name: str, tracking_uri: str | None, version: str) -> str | None:
    """None while the version is the challenger; otherwise why it may no longer be decided."""
    return approval_refusal(open_store(tracking_uri).client, model_name, version)


@task(**RETRY)
def refuse(
    model_name: str, tracking_uri: str | None, version: str, reason: str, decision: dict | None
) -> None:
    """Record on the version that its approval was not taken (registry.refuse_approval)."""
    refuse_approval(open_store(tracking_uri).client, model_name, version, reason, decision)
