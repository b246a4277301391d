"""A rollout decision on record before it is applied, so that a step that dies half-way
is finished by the next one and no stage is decided twice.

A decision is keyed by the rollout (version, started_at) and the revision of the state it
was taken on; it is held as one registered-model tag (``rollout.decision``), written in one
call. Applying it is ordered so that a rerun finishes what is left: a next stage is written
with the decision's time and the next revision (the revision last); a promotion goes
through the compare-and-swap (registry.lifecycle.promote) and a rollback withdraws the
version (registry.servable.withdraw) before the rollout state is cleared; the record is
deleted last. A state whose revision has moved on, or no state at all, makes a record stale.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

from mlflow import MlflowClient

from registry.lifecycle import ChampionMovedError, promote
from registry.model_card import write_model_card
from registry.rollout_state import CONTEXT, PREFIX, clear_rollout, rollout_state, set_rollout
from registry.servable import withdraw

DECISION = f"{PREFIX}decision"
ENDINGS = ("promoted", "rolled-back", "stopped")  # the actions that end the rollout


class StateMovedError(RuntimeError):
    """The rollout state is no longer the one a decision was taken on."""


@dataclass(frozen=True)
class RolloutDecision:
    """One step's decision: what it was taken on, what it does, why, and when.

    action: "advance" (to `next`, a {name, mode, share} stage) or one of ENDINGS.
    """

    version: str
    started_at: str
    revision: int
    stage: str
    action: str
    reason: str
    at: str
    figures: dict = field(default_factory=dict)
    next: dict | None = None

    def __post_init__(self) -> None:
        if self.action not in ("advance", *ENDINGS):
            raise ValueError(f"unknown rollout action {self.action!r}")
        if (self.action == "advance") != (self.next is not None):
            raise ValueError("an advance, and only an advance, names the next stage")

    def fits(self, state: dict | None) -> bool:
        """Whether this decision was taken on `state` (same rollout, same revision)."""
        if state is None:
            return False
        key = (self.version, self.started_at, self.revision)
        return (state["version"], state["started_at"], state["revision"]) == key


def record_decision(
    client: MlflowClient, model_name: str, decision: RolloutDecision
) -> RolloutDecision:
    """Put a decision on record, unless one for the same state is there already (that one
    stands: the first decision on a revision is the only one).

    Raises:
        StateMovedError: the state is not the one the decision was taken on (another step
            applied a decision, or the rollout was stopped).
    """
    state = rollout_state(client, model_name)
    if not decision.fits(state):
        raise StateMovedError(f"{model_name}: the rollout state moved on: {state}")
    recorded = recorded_decision(client, model_name)
    if recorded is not None and recorded.fits(state):
        return recorded
    client.set_registered_model_tag(model_name, DECISION, json.dumps(asdict(decision)))
    return decision


def recorded_decision(client: MlflowClient, model_name: str) -> RolloutDecision | None:
    """The decision on record (None: none, or an unreadable one, which no state fits)."""
    text = client.get_registered_model(model_name).tags.get(DECISION)
    try:
        return RolloutDecision(**json.loads(text)) if text else None
    except (ValueError, TypeError):
        return None


def drop_decision(client: MlflowClient, model_name: str) -> None:
    """Delete the decision on record, if any."""
    if DECISION in client.get_registered_model(model_name).tags:
        client.delete_registered_model_tag(model_name, DECISION)


def apply_decision(
    client: MlflowClient, model_name: str, decision: RolloutDecision, lease_s: float
) -> str | None:
    """Carry a recorded decision out; safe to repeat until its record is deleted.

    Args:
        lease_s: the next stage's lease, from the decision's time.
    Returns:
        The action taken: the decision's, or "stopped" when the champion moved under a
        promotion, or None when the state no longer fits it (nothing is written then).
    """
    state = rollout_state(client, model_name)
    if not decision.fits(state):
        return None
    at = datetime.fromisoformat(decision.at)
    if decision.action == "advance":
        nxt, context = decision.next, {name: state[name] for name in CONTEXT}
        set_rollout(
            client, model_name, decision.version, nxt["mode"], nxt["share"], nxt["name"],
            _why(decision), at, lease_s=lease_s, context=context, revision=decision.revision + 1,
        )  # fmt: skip
        drop_decision(client, model_name)
        return decision.action
    action, reason = _end(client, model_name, decision, state["champion"])
    detail = {"action": action, "figures": decision.figures}
    kind = "rollback" if action == "rolled-back" else "rollout"
    clear_rollout(client, model_name, reason, at, kind, detail)
    drop_decision(client, model_name)
    return action


def _end(
    client: MlflowClient, model_name: str, decision: RolloutDecision, champion: str
) -> tuple[str, str]:
    """Promote or withdraw the version as the decision says; the action taken and why."""
    version = decision.version
    if decision.action == "promoted":
        why = f"rollout passed every stage: {decision.reason}"
        try:
            change = promote(client, model_name, version, why, champion)
        except ChampionMovedError as err:
            return "stopped", f"not promoted: {err}"
        for number in filter(None, (change.champion, change.replaced)):
            write_model_card(client, model_name, number)
        return "promoted", "promoted to champion"
    if decision.action == "rolled-back":
        withdraw(client, model_name, version, "rollback", decision.reason)
        write_model_card(client, model_name, version)
    return decision.action, decision.reason


def _why(decision: RolloutDecision) -> str:
    nxt = decision.next
    if nxt["mode"] == "shadow":
        return f"shadow beside champion: {decision.reason}"
    return f"stage {nxt['name']}: the challenger decides {nxt['share']:.0%} of the dies"
