"""Moving the champion alias: promotion and rollback, with their history as version tags.

Every step may be retried: tags and events are written first (events deduplicated), the
``champion`` alias moves last, and a repeated call after it moved changes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient

from registry.aliases import CHALLENGER, CHAMPION, PREVIOUS, alias_version
from registry.events import record_event
from registry.values import utc_now

PROMOTED_AT = "promoted_at"
PROMOTION_REASON = "promotion_reason"
PROMOTED_OVER = "promoted_over"  # the champion it replaced ("" for the first)
SUPERSEDED_BY = "superseded_by"
SUPERSEDED_AT = "superseded_at"
ROLLED_BACK_AT = "rolled_back_at"
ROLLBACK_REASON = "rollback_reason"
ROLLED_BACK_TO = "rolled_back_to"
RESTORED_AT = "restored_at"
RESTORE_REASON = "restore_reason"
HISTORY_TAGS = (
    PROMOTED_AT,
    PROMOTION_REASON,
    PROMOTED_OVER,
    SUPERSEDED_BY,
    SUPERSEDED_AT,
    ROLLED_BACK_AT,
    ROLLBACK_REASON,
    ROLLED_BACK_TO,
    RESTORED_AT,
    RESTORE_REASON,
)


class RollbackError(RuntimeError):
    """There is no previous champion to roll back to."""


@dataclass(frozen=True)
class ChampionChange:
    """The champion after a promotion or rollback, and the one it replaced (None: none)."""

    champion: str
    replaced: str | None
    changed: bool  # False when the call found the change already made


def promote(
    client: MlflowClient, model_name: str, version: str | int, reason: str
) -> ChampionChange:
    """Make `version` the champion.

    The former champion (if any and different) becomes ``previous-champion`` and gets
    ``superseded_by``/``superseded_at``; the version gets ``promoted_at``,
    ``promotion_reason``, ``promoted_over`` and loses ``challenger``; both get an event.

    Raises:
        MlflowException: no such version, or the store failed.
    """
    version = str(version)
    client.get_model_version(model_name, version)  # fail before touching anything
    current = alias_version(client, model_name, CHAMPION)
    if current == version:
        _drop_alias(client, model_name, CHALLENGER, version)
        return ChampionChange(version, alias_version(client, model_name, PREVIOUS), False)
    now = utc_now()
    if current is not None:
        _tag(client, model_name, current, {SUPERSEDED_BY: version, SUPERSEDED_AT: now})
        detail = {"by": version, "reason": reason}
        record_event(client, model_name, current, "superseded", detail, dedupe=True)
        client.set_registered_model_alias(model_name, PREVIOUS, current)
    tags = {PROMOTED_AT: now, PROMOTION_REASON: reason, PROMOTED_OVER: current or ""}
    _tag(client, model_name, version, tags)
    detail = {"reason": reason, "previous_champion": current}
    record_event(client, model_name, version, "promotion", detail, dedupe=True)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    _drop_alias(client, model_name, CHALLENGER, version)
    return ChampionChange(version, current, True)


def rollback(client: MlflowClient, model_name: str, reason: str) -> ChampionChange:
    """Give ``champion`` back to ``previous-champion`` (which alias is then removed).

    The demoted version gets ``rolled_back_at``, ``rollback_reason``, ``rolled_back_to``;
    the restored one ``restored_at`` and ``restore_reason``; both get an event.

    Raises:
        RollbackError: no previous champion.
    """
    target = alias_version(client, model_name, PREVIOUS)
    if target is None:
        raise RollbackError(f"{model_name} has no {PREVIOUS} to roll back to")
    current = alias_version(client, model_name, CHAMPION)
    if current == target:  # a retry after the champion already moved
        client.delete_registered_model_alias(model_name, PREVIOUS)
        return ChampionChange(target, None, False)
    now = utc_now()
    if current is not None:
        tags = {ROLLED_BACK_AT: now, ROLLBACK_REASON: reason, ROLLED_BACK_TO: target}
        _tag(client, model_name, current, tags)
        detail = {"to": target, "reason": reason}
        record_event(client, model_name, current, "rollback", detail, dedupe=True)
    _tag(client, model_name, target, {RESTORED_AT: now, RESTORE_REASON: reason})
    detail = {"from": current, "reason": reason}
    record_event(client, model_name, target, "restored", detail, dedupe=True)
    client.set_registered_model_alias(model_name, CHAMPION, target)
    client.delete_registered_model_alias(model_name, PREVIOUS)
    return ChampionChange(target, current, True)


def _tag(client: MlflowClient, model_name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)


def _drop_alias(client: MlflowClient, model_name: str, alias: str, version: str) -> None:
    if alias_version(client, model_name, alias) == version:
        client.delete_registered_model_alias(model_name, alias)
