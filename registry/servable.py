"""The one rule on what may serve: a version is shadowed, given traffic or made champion only
when its tags show the release gates passed and an approval, and no rejection or rollback.

Every path that puts a version in front of dies goes through `require_servable`: promotion,
the rollout flow, `dieguard rollout start`, the service's admin routing and its model
resolution. An automatic approval counts (the run was started with ``auto_approve``, as its
approval record says) and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Mapping

from mlflow import MlflowClient

from registry.aliases import CHALLENGER, drop_alias
from registry.events import record_event
from registry.values import from_text, utc_now

GATE_TAG = "lineage.gate"
DECISION, APPROVER = "approval.decision", "approval.approver"
AUTOMATIC, APPROVAL_REASON = "approval.automatic", "approval.reason"
WITHDRAWN_AT, WITHDRAWN_REASON = "withdrawn_at", "withdrawn_reason"


class NotServable(Exception):  # noqa: N818 - the name reads as the verdict it carries
    """A version may not serve; `reason` says why (no approval, a rejection, failed gates)."""

    def __init__(self, model_name: str, version: str, reason: str) -> None:
        super().__init__(f"{model_name} version {version} may not serve: {reason}")
        self.model_name, self.version, self.reason = model_name, version, reason


def refusal(tags: Mapping[str, str]) -> str | None:
    """Why a version with these tags may not serve, or None when it may."""
    if tags.get(WITHDRAWN_AT):
        return f"withdrawn at {tags[WITHDRAWN_AT]}: {tags.get(WITHDRAWN_REASON, '')}".strip()
    decision = tags.get(DECISION)
    if decision == "rejected":
        who, why = tags.get(APPROVER, "unknown"), tags.get(APPROVAL_REASON, "")
        return f"rejected by {who}: {why or 'no reason given'}"
    if decision != "approved":
        return "no approval on record"
    gate = from_text(tags.get(GATE_TAG, ""))
    if not isinstance(gate, dict) or gate.get("passed") is not True:
        return "the release gates did not pass" if isinstance(gate, dict) else "no gate verdict"
    return None


def approval_note(tags: Mapping[str, str]) -> str:
    """How a servable version was approved, in words (an automatic approval says so)."""
    if tags.get(AUTOMATIC) == "true":
        return f"gates passed; approved automatically ({tags.get(APPROVAL_REASON, '')})"
    return f"gates passed; approved by {tags.get(APPROVER, 'unknown')}"


def require_servable(client: MlflowClient, model_name: str, version: str | int) -> str:
    """Check the rule for one version.

    Returns:
        How it was approved (approval_note).
    Raises:
        NotServable: it may not serve, with the reason.
        MlflowException: no such version, or the store failed.
    """
    tags = client.get_model_version(model_name, str(version)).tags
    reason = refusal(tags)
    if reason is not None:
        raise NotServable(model_name, str(version), reason)
    return approval_note(tags)


def withdraw(
    client: MlflowClient, model_name: str, version: str | int, kind: str, reason: str
) -> None:
    """Take a version out of service for good: tags that fail the rule, an event of `kind`
    ("rejection", "rollback") with the reason, and the ``challenger`` alias removed (last:
    a rerun after a crash finds the tags and event and finishes)."""
    version = str(version)
    tags = client.get_model_version(model_name, version).tags
    if not tags.get(WITHDRAWN_AT):
        client.set_model_version_tag(model_name, version, WITHDRAWN_REASON, f"{kind}: {reason}")
        client.set_model_version_tag(model_name, version, WITHDRAWN_AT, utc_now())
    record_event(client, model_name, version, kind, {"reason": reason}, once=True)
    drop_alias(client, model_name, CHALLENGER, version)
