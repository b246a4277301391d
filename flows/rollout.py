"""The staged rollout: shadow, canary stages, then promotion, or an automatic rollback.

The challenger (default: the `challenger` alias) first runs in shadow beside the champion;
the comparison is published as a markdown artifact and ``shadow.*`` version tags. It then
decides 10%, 25%, 50% and 100% of the dies in turn (a 5% canary first when configured).
Each stage is judged every `check_interval_s` (monitoring.rollout.decide_stage): a rollback
ends the rollout at once; a promotion waits for the stage's window to pass; a stage still
undecided after its window is re-checked `max_holds` times, then the rollout stops (the
champion alone serves again: an unproven challenger does not keep deciding dies). After
100% the challenger becomes champion. Clearing the rollout state by hand (an operator's stop)
interrupts the flow at its next check. The service follows each step through the registry's
rollout state; each step is a registry event and a Prefect event ``dieguard.rollout.<step>``.

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
    decide_stage,
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
    resolve_versions,
    shadow_report,
)


@dataclass(frozen=True)
class _Rollout:
    """What every step needs: where things are, the versions, the rules and the clock."""

    model_name: str
    tracking_uri: str | None
    log_url: str
    version: str
    champion: str
    config: RolloutConfig
    clock: Callable[[], datetime]
    sleep: Callable[[float], None]

    def announce(self, step: str, payload: dict) -> None:
        announce(step, self.model_name, self.version, payload | {"champion": self.champion})


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
    """
    cfg = load_rollout_config(config, overrides)
    versions = resolve_versions(model_name, tracking_uri, version)
    challenger, champion = versions["challenger"], versions["champion"]
    if champion is None or champion == challenger:
        raise ValueError(f"{model_name}: no champion to roll version {challenger} out beside")
    log_url = log_url or ServiceConfig().log_url
    clock, sleep = clock or _utc_now, sleep or time.sleep
    r = _Rollout(model_name, tracking_uri, log_url, challenger, champion, cfg, clock, sleep)
    plan = stage_plan(cfg)
    summary, decision = _shadow(r, plan[0])
    history = [{"stage": plan[0].name} | decision.as_dict()]
    outcome = "rolled-back" if decision.action == "rollback" else "promoted"
    for stage in plan[1:] if outcome == "promoted" else []:
        outcome, decision = _run_stage(r, stage)
        history.append({"stage": stage.name} | decision.as_dict())
        if outcome != "promoted":
            break
    after = _finish(r, outcome, history[-1]["stage"], decision)
    result = {"version": challenger, "outcome": outcome, "reason": decision.reason}
    return result | {"champion": after, "shadow": summary, "stages": history}


def _shadow(r: _Rollout, stage: Stage) -> tuple[dict, StageDecision]:
    """Shadow beside the champion, publish the comparison, and judge the challenger's own
    figures: a challenger already failing a gate in shadow never decides a die."""
    started = r.clock()
    reason = f"shadow beside champion {r.champion}"
    enter_stage(r.model_name, r.tracking_uri, r.version, stage, reason, started)
    r.announce("shadow", {"stage": stage.name, "window_s": stage.window_s})
    r.sleep(stage.window_s)
    report = shadow_report(r.log_url, r.champion, r.version, started, r.config.confidence)
    publish_shadow(report, r.model_name, r.tracking_uri)
    summary = {k: v for k, v in report.as_dict().items() if k != "disagreements"}
    r.announce("shadow-report", summary)
    outcomes = read_outcomes(r.log_url, r.version, started, decided_only=False)
    decision = decide_stage(outcomes, r.config, r.clock())
    get_run_logger().info("shadow: %s, %s", decision.action, decision.reason)
    if decision.action != "rollback":  # too few labels in shadow does not stop the rollout
        decision = StageDecision("promote", f"shadow: {decision.reason}", decision.figures)
    return summary, decision


def _run_stage(r: _Rollout, stage: Stage) -> tuple[str, StageDecision]:
    """Hand the challenger the stage's share and judge it until it earns a verdict.

    Returns:
        ("promoted" | "rolled-back" | "stopped" | "interrupted", the last decision).
    """
    log = get_run_logger()
    started = r.clock()
    reason = f"stage {stage.name}: the challenger decides {stage.share:.0%} of the dies"
    enter_stage(r.model_name, r.tracking_uri, r.version, stage, reason, started)
    r.announce("stage", {"stage": stage.name, "share": stage.share, "window_s": stage.window_s})
    holds = 0
    while True:
        now = r.clock()
        state = current_rollout(r.model_name, r.tracking_uri)
        if state is None or state["version"] != r.version or state["stage"] != stage.name:
            return "interrupted", StageDecision("hold", f"the rollout state changed: {state}")
        outcomes = read_outcomes(r.log_url, r.version, started, decided_only=True)
        decision = decide_stage(outcomes, r.config, now)
        log.info("stage %s: %s, %s", stage.name, decision.action, decision.reason)
        left = stage.window_s - (now - started).total_seconds()
        if decision.action == "rollback":
            return "rolled-back", decision
        if left <= 0 and decision.action == "promote":
            return "promoted", decision
        if left <= 0:
            holds += 1
            r.announce("hold", {"stage": stage.name, "holds": holds} | decision.as_dict())
            if holds > r.config.max_holds:
                why = f"undecided {holds - 1} checks past the window: {decision.reason}"
                return "stopped", StageDecision("hold", why, decision.figures)
        r.sleep(_pause(r.config.check_interval_s, left))


def _pause(interval: float, left: float) -> float:
    """Seconds to the next check: the interval, cut at the window's end while it runs."""
    if left <= 0:
        return interval
    return min(interval, left) if interval > 0 else left


def _finish(r: _Rollout, outcome: str, stage: str, decision: StageDecision) -> str:
    """Promote, or end the rollout with the champion unchanged; returns the champion."""
    now = r.clock()
    detail = {"action": outcome, "figures": decision.as_dict()["figures"]}
    r.announce(outcome, {"stage": stage} | decision.as_dict())
    if outcome == "promoted":
        why = f"rollout passed every stage: {decision.reason}"
        promote_version(r.model_name, r.tracking_uri, r.version, why)
        end_rollout(r.model_name, r.tracking_uri, "promoted to champion", now, "rollout", detail)
        return r.version
    if outcome != "interrupted":  # the state is no longer this rollout's to clear
        kind = "rollback" if outcome == "rolled-back" else "rollout"
        end_rollout(r.model_name, r.tracking_uri, decision.reason, now, kind, detail)
    return r.champion


def _utc_now() -> datetime:
    return datetime.now(UTC)


if __name__ == "__main__":
    rollout()
