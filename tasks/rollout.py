"""Rollout tasks: start a rollout, take a step, report the shadow comparison, announce.

A step retries as a whole (it is safe to repeat); the log is read-only.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.events import emit_event

from monitoring import rollout_step as steps
from monitoring.rollout import Outcome, RolloutConfig, challenger_outcomes
from monitoring.rollout_step import Step
from monitoring.shadow import ShadowReport, compare_shadow
from registry import CHALLENGER, open_store, require_servable, resolve
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
def begin_rollout(
    model_name: str, tracking_uri: str | None, version: str | None, config: RolloutConfig, now
) -> dict:
    """Record the rollout's first stage (shadow) for `version` (default: the `challenger`
    alias); see monitoring.rollout_step.start_rollout.

    Raises:
        NotServable: the serving rule refuses the version (registry.servable).
        RolloutInProgressError: a rollout is in progress already.
    """
    client = open_store(tracking_uri).client
    challenger = str(resolve(client, model_name, version or CHALLENGER).version)
    require_servable(client, model_name, challenger)
    return steps.start_rollout(client, model_name, challenger, config, now)


@task(**RETRY)  # a step is safe to repeat: a decision on record is finished, not retaken
def take_step(
    model_name: str, tracking_uri: str | None, log_url: str, now: datetime, only=None
) -> Step:
    """One step of the rollout in progress (monitoring.rollout_step.take_step)."""
    client = open_store(tracking_uri).client
    return steps.take_step(client, model_name, log_outcomes(log_url), now, only)


def log_outcomes(log_url: str) -> steps.OutcomeReader:
    """A reader of the challenger's labelled judgements in the inspection log, shadow or
    deciding (see challenger_outcomes)."""

    def read(version: str, since: datetime) -> list[Outcome]:
        with _log(log_url) as log:
            inspections = log.recent(LOG_LIMIT, flagged_only=False, since=since)
            labels = log.feedback(latest_only=True)  # any label time: joined on the inspection
        return challenger_outcomes(inspections, labels, version, decided_only=False)

    return read


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
        deployment: `<flow>/<deployment>`, e.g. "rollout-start/rollout-start".
    """
    run = run_deployment(
        name=deployment,
        parameters={"model_name": model_name, "tracking_uri": tracking_uri, "version": version},
        timeout=0,
        tags=["dieguard", "approved", f"version-{version}"],
    )
    return str(run.id)
