"""The staged rollout as short steps over the registry's rollout state.

`start_rollout` records the first stage (shadow), the champion it is judged against and the
rollout's settings. `take_step` reads the state, takes at most one decision
(monitoring.rollout.judge_check), puts it on record keyed by the stage and the state's
revision, applies it and renews the lease (registry.rollout_decisions). A step that died
half-way left its decision on record: the next step finishes that one instead of judging
again, so no decision is lost or taken twice. Nothing here needs a running process between
steps; the caller gives the time and a reader of the challenger's labelled outcomes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime

from mlflow import MlflowClient

from monitoring.rollout import Outcome, RolloutConfig, Stage, judge_check, stage_plan
from registry.aliases import CHAMPION, alias_version
from registry.rollout_decisions import (
    RolloutDecision,
    apply_decision,
    drop_decision,
    record_decision,
    recorded_decision,
)
from registry.rollout_state import renew_lease, rollout_state, set_rollout

OutcomeReader = Callable[[str, datetime], list[Outcome]]  # (version, since) -> outcomes


class RolloutInProgressError(RuntimeError):
    """A rollout is in progress already: stop it first (`dieguard rollout stop`)."""


@dataclass(frozen=True)
class Step:
    """One step's result: the stage judged ("" when none), the action ("idle": no rollout
    in progress, "hold", "advance" or "promoted", "rolled-back", "stopped"), why, the
    figures, the stage now in force, the champion after it, whether it finished an earlier
    step's decision, and the rollout's start and settings."""

    action: str
    reason: str
    stage: str = ""
    version: str | None = None
    figures: dict = field(default_factory=dict)
    now_in: str | None = None
    champion: str | None = None
    resumed: bool = False
    started_at: str = ""
    config: RolloutConfig | None = None

    @property
    def ended(self) -> bool:
        """The rollout is over (or there was none)."""
        return self.action not in ("hold", "advance")

    def as_dict(self) -> dict:
        return asdict(self)


def start_rollout(
    client: MlflowClient, model_name: str, version: str, config: RolloutConfig, now: datetime
) -> dict:
    """Record the rollout's first stage (shadow) beside the current champion, with a lease.

    Returns:
        The rollout state.
    Raises:
        RolloutInProgressError: a rollout is in progress already.
        ValueError: no champion to roll out beside, or `version` is the champion.
        NotServable: the serving rule refuses the version (registry.servable).
    """
    state = rollout_state(client, model_name)
    if state is not None:
        raise RolloutInProgressError(
            f"{model_name}: version {state['version']} is being rolled out ({state['stage']}):"
            " stop it first"
        )
    champion = alias_version(client, model_name, CHAMPION)
    if champion is None or champion == str(version):
        raise ValueError(f"{model_name}: no champion to roll version {version} out beside")
    drop_decision(client, model_name)  # one left by a rollout stopped half-way is stale
    shadow = stage_plan(config)[0]
    context = {"champion": champion, "started_at": now.isoformat()}
    context["config"] = json.dumps(config.to_dict())
    why = f"shadow beside champion {champion}"
    return set_rollout(
        client, model_name, version, shadow.mode, shadow.share, shadow.name, why, now,
        lease_s=config.lease_s, context=context, revision=1,
    )  # fmt: skip


def rollout_config(state: dict) -> RolloutConfig:
    """The settings a rollout was started with, from its state.

    Raises:
        ValueError: the state holds none (not written by start_rollout) or bad ones.
    """
    try:
        return RolloutConfig(**json.loads(state["config"]))
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"the rollout of version {state['version']} has no readable settings "
            f"({err}): stop it and start it again with `dieguard rollout start`"
        ) from err


def take_step(
    client: MlflowClient,
    model_name: str,
    outcomes: OutcomeReader,
    now: datetime,
    only: tuple[str, str] | None = None,
) -> Step:
    """Read the rollout state, take at most one decision, apply it, renew the lease.

    Args:
        outcomes: the challenger's labelled outcomes since the rollout began.
        now: the step's time.
        only: (version, started_at) of the rollout to step; another one in progress is
            left alone (None: whichever is in progress).
    Raises:
        ValueError: the state holds no settings or names a stage outside them.
        StateMovedError: another step changed the state between this one's reads.
    """
    state = rollout_state(client, model_name)
    recorded = recorded_decision(client, model_name)
    if state is None:
        if recorded is not None:  # applied in full, or the rollout was stopped by hand
            drop_decision(client, model_name)
        return Step("idle", "no rollout in progress")
    if only is not None and only != (state["version"], state["started_at"]):
        return Step("idle", f"another rollout is in progress: version {state['version']}")
    config = rollout_config(state)
    if recorded is not None and recorded.fits(state):
        return _apply(client, model_name, recorded, state, config, now, resumed=True)
    if recorded is not None:  # applied, its record not yet deleted
        drop_decision(client, model_name)
    stage, next_stage = _stages(state, config)
    since = datetime.fromisoformat(state["started_at"])
    entered = datetime.fromisoformat(state["updated_at"])
    verdict = judge_check(stage, outcomes(state["version"], since), entered, now, config)
    figures = verdict.as_dict()["figures"]
    if verdict.action == "hold":
        try:
            renew_lease(client, model_name, state["version"], config.lease_s, now)
        except LookupError as err:  # stopped by hand since the state was read
            return Step("idle", str(err), stage.name, state["version"])
        return Step("hold", verdict.reason, stage.name, state["version"], figures, stage.name,
                    state["champion"], started_at=state["started_at"], config=config)  # fmt: skip
    action = _action(verdict.action, next_stage)
    nxt = asdict(next_stage) if action == "advance" else None
    key = {k: state[k] for k in ("version", "started_at", "revision")}
    taken = RolloutDecision(**key, stage=stage.name, action=action, reason=verdict.reason,
                            at=now.isoformat(), figures=figures, next=nxt)  # fmt: skip
    decision = record_decision(client, model_name, taken)
    return _apply(client, model_name, decision, state, config, now, resumed=decision != taken)


def _apply(client, model_name, decision, state, config, now, resumed) -> Step:
    """Apply a recorded decision; renew the lease when the rollout goes on."""
    action = apply_decision(client, model_name, decision, config.lease_s) or "idle"
    now_in = decision.next["name"] if action == "advance" else None
    if action == "advance":
        renew_lease(client, model_name, decision.version, config.lease_s, now)
    after = decision.version if action == "promoted" else state["champion"]
    return Step(action, decision.reason, decision.stage, decision.version, decision.figures,
                now_in, after, resumed, state["started_at"], config)  # fmt: skip


def _stages(state: dict, config: RolloutConfig) -> tuple[Stage, Stage | None]:
    """The stage in force and the one after it (None after the last)."""
    plan = stage_plan(config)
    names = [s.name for s in plan]
    if state["stage"] not in names:
        raise ValueError(f"rollout stage {state['stage']!r} is not one of {names}")
    index = names.index(state["stage"])
    return plan[index], plan[index + 1] if index + 1 < len(plan) else None


def _action(verdict: str, next_stage: Stage | None) -> str:
    """A verdict as the rollout's action: advance, or end it."""
    if verdict == "promote":
        return "advance" if next_stage is not None else "promoted"
    return {"rollback": "rolled-back"}.get(verdict, "stopped")
