"""The staged rollout: shadow, canary stages, then promotion, or an automatic rollback.

The challenger (default: the `challenger` alias; only a version the registry's serving rule
allows) first runs in shadow beside the champion for the shadow window; the comparison is
published as a markdown artifact and ``shadow.*`` version tags. It then decides 10%, 25%,
50% and 100% of the dies in turn (a 5% canary first when configured). After 100% it is
promoted, provided the champion is still the one it was judged against.

The rollout is a series of steps (`rollout_step`): read the rollout state, take at most one
decision (monitoring.rollout.judge_check: advance, hold, roll back or stop), renew the
lease, return. This flow drives the steps every `check_interval_s`; each step is safe to
run from a fresh process, since everything it needs is in the registry's rollout state. A
rollback withdraws the challenger (no alias, never served again). Clearing the rollout
state by hand (an operator's stop) ends the flow at its next step. When the flow dies, its
lease lapses and the service routes every die to the champion again.

Run it with `python -m flows.rollout`, or as the `rollout` deployment in prefect.yaml.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import flow, get_run_logger

from monitoring.rollout import (
    RolloutConfig,
    Stage,
    StageDecision,
    judge_check,
    load_rollout_config,
    stage_plan,
)
from service.config import ServiceConfig
from tasks.registry import promote_version
from tasks.rollout import (
    announce,
    current_rollout,
    end_rollout,
    enter_stage,
    publish_shadow,
    read_outcomes,
    renew,
    resolve_versions,
    shadow_report,
    withdraw_version,
)


@dataclass(frozen=True)
class _Rollout:
    """What every step needs: where things are, the version, the rules and the clock."""

    model_name: str
    tracking_uri: str | None
    log_url: str
    version: str
    config: RolloutConfig
    clock: Callable[[], datetime]

    def announce(self, step: str, payload: dict) -> None:
        announce(step, self.model_name, self.version, payload)


@dataclass(frozen=True)
class Step:
    """One step's result: the stage checked, its decision, and the outcome when it ended
    the rollout ("promoted", "rolled-back", "stopped", "interrupted"; None: it goes on)."""

    stage: str
    decision: StageDecision
    outcome: str | None = None
    champion: str | None = None


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
    """Roll a challenger out in stages; promote it, or roll it back when it fails.

    Args:
        model_name: the registered model in MLflow.
        tracking_uri: the MLflow store (default: a SQLite file under mlruns/).
        log_url: the inspection log's database (default: the service's SQLite file).
        version: the version to roll out (default: the `challenger` alias).
        config: a YAML file of RolloutConfig fields (default: the seed's values).
        overrides: `key=value` changes to the config, e.g. `stage_window_s=60`.
        clock: the current UTC time (default: the wall clock); for simulations.
        sleep: waits that many seconds (default: time.sleep); for simulations.
    Returns:
        version, outcome ("promoted", "rolled-back", "stopped", or "interrupted" when the
        rollout state was changed or cleared outside the flow), reason, champion (after),
        shadow (the comparison's summary) and stages (each stage's last decision).
    Raises:
        NotServable: the serving rule refuses the version (registry.servable).
    """
    cfg = load_rollout_config(config, overrides)
    versions = resolve_versions(model_name, tracking_uri, version)
    challenger, champion = versions["challenger"], versions["champion"]
    if champion is None or champion == challenger:
        raise ValueError(f"{model_name}: no champion to roll version {challenger} out beside")
    clock, sleep = clock or _utc_now, sleep or time.sleep
    r = _Rollout(
        model_name, tracking_uri, log_url or ServiceConfig().log_url, challenger, cfg, clock
    )
    context = {"champion": champion, "started_at": clock().isoformat()}
    _enter(r, stage_plan(cfg)[0], f"shadow beside champion {champion}", context)
    history, shadow = [], None
    while True:
        sleep(cfg.check_interval_s)
        step = rollout_step(r)
        if step.decision.action != "hold":
            history.append({"stage": step.stage} | step.decision.as_dict())
        if step.stage == "shadow" and step.decision.action != "hold":
            shadow = _publish_shadow(r, champion, context["started_at"])
        if step.outcome is not None:
            break
    result = {"version": challenger, "outcome": step.outcome, "reason": step.decision.reason}
    after = step.champion or champion
    return result | {"champion": after, "shadow": shadow, "stages": history}


def rollout_step(r: _Rollout) -> Step:
    """Read the rollout state, take at most one decision, renew the lease: one check."""
    state = current_rollout(r.model_name, r.tracking_uri)
    if state is None or state["version"] != r.version:
        why = f"the rollout state changed: {state}"
        return Step("", StageDecision("hold", why), "interrupted", _champion_of(state))
    now, plan = r.clock(), stage_plan(r.config)
    names = [s.name for s in plan]
    index = names.index(state["stage"]) if state["stage"] in names else 0
    stage, entered = plan[index], datetime.fromisoformat(state["updated_at"])
    since = datetime.fromisoformat(state["started_at"])
    outcomes = read_outcomes(r.log_url, r.version, since, decided_only=False)
    decision = judge_check(stage, outcomes, entered, now, r.config)
    get_run_logger().info("%s: %s, %s", stage.name, decision.action, decision.reason)
    if decision.action == "hold":
        try:
            renew(r.model_name, r.tracking_uri, r.version, r.config.lease_s, now)
        except LookupError as err:  # stopped by hand since the state was read
            return Step(stage.name, StageDecision("hold", str(err)), "interrupted")
        return Step(stage.name, decision)
    if decision.action == "promote" and index + 1 < len(plan):
        nxt = plan[index + 1]
        why = f"stage {nxt.name}: the challenger decides {nxt.share:.0%} of the dies"
        _enter(r, nxt, why, state)
        return Step(stage.name, decision)
    outcome = {"promote": "promoted", "rollback": "rolled-back"}.get(decision.action, "stopped")
    return Step(stage.name, decision, outcome, _finish(r, outcome, state, decision))


def _enter(r: _Rollout, stage: Stage, reason: str, context: dict) -> None:
    """Set the rollout state to `stage` (with a fresh lease) and announce it."""
    context = {k: context[k] for k in ("champion", "started_at")}
    lease = r.config.lease_s
    enter_stage(r.model_name, r.tracking_uri, r.version, stage, reason, r.clock(), lease, context)
    payload = {"stage": stage.name, "share": stage.share, "window_s": stage.window_s}
    r.announce("shadow" if stage.mode == "shadow" else "stage", payload | context)


def _publish_shadow(r: _Rollout, champion: str, started_at: str) -> dict:
    """The shadow comparison as an artifact and version tags; returns its summary."""
    since = datetime.fromisoformat(started_at)
    report = shadow_report(r.log_url, champion, r.version, since, r.config.confidence)
    publish_shadow(report, r.model_name, r.tracking_uri)
    summary = {k: v for k, v in report.as_dict().items() if k != "disagreements"}
    r.announce("shadow-report", summary)
    return summary


def _finish(r: _Rollout, outcome: str, state: dict, decision: StageDecision) -> str:
    """Promote (a compare-and-swap against the champion the rollout judged against), or end
    the rollout with the champion unchanged; returns the champion."""
    now, champion = r.clock(), state["champion"]
    detail = {"action": outcome, "figures": decision.as_dict()["figures"]}
    r.announce(outcome, {"stage": state["stage"], "champion": champion} | decision.as_dict())
    if outcome == "promoted":
        why = f"rollout passed every stage: {decision.reason}"
        promote_version(r.model_name, r.tracking_uri, r.version, why, champion)
        end_rollout(r.model_name, r.tracking_uri, "promoted to champion", now, "rollout", detail)
        return r.version
    kind = "rollback" if outcome == "rolled-back" else "rollout"
    end_rollout(r.model_name, r.tracking_uri, decision.reason, now, kind, detail)
    if outcome == "rolled-back":
        withdraw_version(r.model_name, r.tracking_uri, r.version, decision.reason)
    return champion


def _champion_of(state: dict | None) -> str | None:
    return state["champion"] if state else None


def _utc_now() -> datetime:
    return datetime.now(UTC)


if __name__ == "__main__":
    rollout()
