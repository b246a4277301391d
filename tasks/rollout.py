"""Rollout tasks: read the inspection log, steer the registry's rollout state, report, announce.

Registry tasks retry (every registry call here is safe to repeat); the log is read-only.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.events import emit_event

from monitoring.rollout import Outcome, Stage, challenger_outcomes
from monitoring.shadow import ShadowReport, compare_shadow
from registry import CHALLENGER, CHAMPION, open_store, resolve
from registry.aliases import alias_version
from registry.model_card import write_model_card
from registry.rollout_state import clear_rollout, renew_lease, rollout_state, set_rollout
from registry.servable import require_servable, withdraw
from service.inspection_log import InspectionLog

RETRY = {"retries": 2, "retry_delay_seconds": 5, "cache_policy": NO_CACHE}
LOG_LIMIT = 5_000_000  # inspections read per judgement (a 4-week shadow at 2 dies/s)


@contextmanager
def _log(url: str):
    log = InspectionLog(url)
    try:
        yield log
    finally:
        log.close()


@task(cache_policy=NO_CACHE)
def resolve_versions(model_name: str, tracking_uri: str | None, version: str | None) -> dict:
    """The challenger's version number (default: the `challenger` alias), the champion's,
    and how the challenger was approved.

    Raises:
        NotServable: the serving rule refuses the challenger (registry.servable).
    """
    client = open_store(tracking_uri).client
    challenger = str(resolve(client, model_name, version or CHALLENGER).version)
    approval = require_servable(client, model_name, challenger)
    champion = alias_version(client, model_name, CHAMPION)
    return {"challenger": challenger, "champion": champion, "approval": approval}


@task(**RETRY)
def enter_stage(
    model_name: str,
    tracking_uri: str | None,
    version: str,
    stage: Stage,
    reason: str,
    now: datetime,
    lease_s: float,
    context: dict,
) -> dict:
    """Set the rollout state to a stage, with a fresh lease: the service follows it at its
    next sync (refused by the serving rule for a version that may not serve)."""
    client = open_store(tracking_uri).client
    return set_rollout(
        client, model_name, version, stage.mode, stage.share, stage.name, reason, now,
        lease_s=lease_s, context=context,
    )  # fmt: skip


@task(cache_policy=NO_CACHE)  # a lost state is an answer, not a failure to retry
def renew(model_name: str, tracking_uri: str | None, version: str, lease_s: float, now) -> str:
    """Renew the rollout's lease (LookupError: the rollout state is gone or someone else's)."""
    return renew_lease(open_store(tracking_uri).client, model_name, version, lease_s, now)


@task(**RETRY)
def withdraw_version(model_name: str, tracking_uri: str | None, version: str, reason: str):
    """A rolled-back challenger: withdrawn for good (no alias, may not serve), card updated."""
    client = open_store(tracking_uri).client
    withdraw(client, model_name, version, "rollback", reason)
    write_model_card(client, model_name, version)


@task(**RETRY)
def current_rollout(model_name: str, tracking_uri: str | None) -> dict | None:
    """The registry's rollout state now (None: none)."""
    return rollout_state(open_store(tracking_uri).client, model_name)


@task(**RETRY)
def end_rollout(
    model_name: str,
    tracking_uri: str | None,
    reason: str,
    now: datetime,
    kind: str = "rollout",
    detail: dict | None = None,
) -> dict | None:
    """Clear the rollout state (the champion alone serves) and record why on the version."""
    client = open_store(tracking_uri).client
    return clear_rollout(client, model_name, reason, now, kind, detail)


@task(cache_policy=NO_CACHE)
def read_outcomes(log_url: str, version: str, since: datetime, decided_only: bool) -> list[Outcome]:
    """The challenger's labelled judgements since `since` (see challenger_outcomes)."""
    with _log(log_url) as log:
        inspections = log.recent(LOG_LIMIT, flagged_only=False, since=since)
        labels = log.feedback(latest_only=True)  # any label time: joined on the inspection
    return challenger_outcomes(inspections, labels, version, decided_only)


@task(cache_policy=NO_CACHE)
def shadow_report(
    log_url: str, champion: str, challenger: str, since: datetime, confidence: float
) -> ShadowReport:
    """Compare the champion and the challenger on the dies both judged since `since`."""
    with _log(log_url) as log:
        decisions = log.decisions(since)
        labels = log.feedback(latest_only=True)
    return compare_shadow(decisions, labels, champion, challenger, confidence)


@task(**RETRY)
def publish_shadow(report: ShadowReport, model_name: str, tracking_uri: str | None) -> None:
    """The shadow report as a markdown artifact and as ``shadow.*`` tags on the challenger."""
    create_markdown_artifact(
        report.markdown(),
        key="shadow-report",
        description=f"Shadow: version {report.challenger_version} beside the champion",
    )
    client = open_store(tracking_uri).client
    for key, value in report.tags().items():
        client.set_model_version_tag(model_name, report.challenger_version, key, value)


def announce(step: str, model_name: str, version: str, payload: dict) -> None:
    """A Prefect event ``dieguard.rollout.<step>`` about the version (for automations)."""
    emit_event(
        event=f"dieguard.rollout.{step}",
        resource={
            "prefect.resource.id": f"dieguard.model.{model_name}.{version}",
            "prefect.resource.name": f"{model_name} version {version}",
        },
        payload=payload,
    )


@task(cache_policy=NO_CACHE)
def start_rollout(deployment: str, model_name: str, tracking_uri: str | None, version: str) -> str:
    """Start the rollout deployment for an approved version; returns the new flow run's id.

    Args:
        deployment: `<flow>/<deployment>`, e.g. "rollout/rollout".
    """
    run = run_deployment(
        name=deployment,
        parameters={"model_name": model_name, "tracking_uri": tracking_uri, "version": version},
        timeout=0,
        tags=["dieguard", "approved", f"version-{version}"],
    )
    return str(run.id)
