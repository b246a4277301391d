"""The staged rollout: shadow, canary stages, then promotion, or an automatic rollback.

The challenger (default: the `challenger` alias; only a version the registry's serving rule
allows) first runs in shadow beside the champion for the shadow window; the comparison is
published as a markdown artifact and ``shadow.*`` version tags. It then decides 10%, 25%,
50% and 100% of the dies in turn (a 5% canary first when configured). After 100% it is
promoted, provided the champion is still the one it was judged against.

`rollout_start` records the first stage and the settings in the registry's rollout state
and returns. `rollout_step`, the `rollout-step` deployment on an interval schedule, reads
that state, takes at most one decision (advance, hold, roll back or stop), renews the
lease and exits (monitoring.rollout_step): a worker restart loses nothing, and a run that
is missed, repeated or dies half-way decides nothing twice. A rollback withdraws the
challenger (no alias, never served again). Clearing the rollout state by hand (an
operator's stop) ends it; when no step runs, the lease lapses and the service routes every
die to the champion again. `rollout` is both in one process, a step every
`check_interval_s` (the demo's simulation, or a rollout by hand without a worker).

Run one step by hand with `python -m flows.rollout` (or `dieguard rollout step`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from prefect import flow, get_run_logger

from monitoring.rollout import load_rollout_config
from monitoring.rollout_step import Step
from service.config import ServiceConfig
from tasks.rollout import announce, begin_rollout, publish_shadow, shadow_report, take_step


@flow(name="rollout-start", log_prints=True)
def rollout_start(
    model_name: str = "dieguard",
    tracking_uri: str | None = None,
    version: str | None = None,
    config: str | None = None,
    overrides: list[str] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> dict:
    """Start a rollout: record its first stage (shadow) and settings; steps advance it.

    Args:
        model_name: the registered model in MLflow.
        tracking_uri: the MLflow store (default: a SQLite file under mlruns/).
        version: the version to roll out (default: the `challenger` alias).
        config: a YAML file of RolloutConfig fields (default: the seed's values).
        overrides: `key=value` changes to the config, e.g. `stage_window_s=60`.
        clock: the current UTC time (default: the wall clock); for simulations.
    Returns:
        The rollout state (version, stage, champion, started_at, lease_until, ...).
    Raises:
        NotServable: the serving rule refuses the version (registry.servable).
        RolloutInProgressError: a rollout is in progress already.
    """
    cfg = load_rollout_config(config, overrides)
    state = begin_rollout(model_name, tracking_uri, version, cfg, (clock or _utc_now)())
    stage = {"stage": state["stage"], "share": state["share"], "window_s": cfg.shadow_window_s}
    context = {k: state[k] for k in ("champion", "started_at")}
    announce("shadow", model_name, state["version"], stage | context)
    return state


@flow(name="rollout-step", log_prints=True)
def rollout_step(
    model_name: str = "dieguard",
    tracking_uri: str | None = None,
    log_url: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> dict:
    """One step of the rollout in progress: at most one decision, the lease renewed.

    Args:
        model_name, tracking_uri: as for rollout_start.
        log_url: the inspection log's database (default: the service's SQLite file).
        clock: as for rollout_start.
    Returns:
        The step (monitoring.rollout_step.Step): action ("idle" when no rollout is in
        progress), reason, stage judged, the stage now in force, champion, figures.
    """
    step, shadow = step_once(model_name, tracking_uri, log_url, clock)
    result = {k: v for k, v in step.as_dict().items() if k != "config"}
    return result | {"shadow": shadow}


def step_once(model_name, tracking_uri, log_url, clock, only=None) -> tuple[Step, dict | None]:
    """Take a step inside a flow run (of the rollout `only` names, when given): log it,
    announce it, and publish the shadow comparison when shadow ended; the step and that
    comparison's summary (None: none)."""
    now, log_url = (clock or _utc_now)(), log_url or ServiceConfig().log_url
    step = take_step(model_name, tracking_uri, log_url, now, only)
    log = get_run_logger()
    if step.action == "idle":
        log.info("nothing to do: %s", step.reason)
        return step, None
    again = " (finishing the decision an earlier step recorded)" if step.resumed else ""
    log.info("%s: %s%s, %s", step.stage, step.action, again, step.reason)
    if step.action == "hold":
        return step, None
    shadow = _publish_shadow(model_name, tracking_uri, log_url, step)
    if step.action == "advance":
        payload = {"stage": step.now_in, "from": step.stage, "reason": step.reason}
        announce("stage", model_name, step.version, payload)
    else:
        payload = {"stage": step.stage, "champion": step.champion, "reason": step.reason}
        announce(step.action, model_name, step.version, payload | {"figures": step.figures})
    return step, shadow


@flow(name="rollout", log_prints=True)
def rollout(
    model_name: str = "dieguard",
    tracking_uri: str | None = None,
    log_url: str | None = None,
    version: str | None = None,
    config: str | None = None,
    overrides: list[str] | None = None,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> dict:
    """Start a rollout and step it in this process until it ends.

    Args:
        sleep: waits that many seconds (default: time.sleep); for simulations.
        Others as for rollout_start and rollout_step.
    Returns:
        version, outcome ("promoted", "rolled-back", "stopped", or "interrupted" when the
        rollout state was cleared or replaced outside the flow), reason, champion (after),
        shadow (the comparison's summary) and stages (each decision: stage, action, reason,
        figures).
    Raises:
        NotServable: the serving rule refuses the version (registry.servable).
    """
    cfg = load_rollout_config(config, overrides)
    state = rollout_start(model_name, tracking_uri, version, config, overrides, clock)
    history, shadow, mine = [], None, (state["version"], state["started_at"])
    while True:
        (sleep or time.sleep)(cfg.check_interval_s)
        step, compared = step_once(model_name, tracking_uri, log_url, clock, mine)
        shadow = compared or shadow
        if step.action != "hold":
            history.append({k: getattr(step, k) for k in ("stage", "action", "reason", "figures")})
        if step.ended:
            break
    outcome = "interrupted" if step.action == "idle" else step.action
    result = {"version": state["version"], "outcome": outcome, "reason": step.reason}
    after = step.champion or state["champion"]
    return result | {"champion": after, "shadow": shadow, "stages": history}


def _publish_shadow(model_name, tracking_uri, log_url, step: Step) -> dict | None:
    """When shadow ended: the comparison as an artifact and version tags; its summary."""
    if step.stage != "shadow":
        return None
    since = datetime.fromisoformat(step.started_at)
    report = shadow_report(log_url, step.champion, step.version, since, step.config.confidence)
    publish_shadow(report, model_name, tracking_uri)
    summary = {k: v for k, v in report.as_dict().items() if k != "disagreements"}
    announce("shadow-report", model_name, step.version, summary)
    return summary


def _utc_now() -> datetime:
    return datetime.now(UTC)


if __name__ == "__main__":
    rollout_step()
