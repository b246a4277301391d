"""Moving the champion alias: promotion and rollback, with their history as version tags.

Promotion is a compare-and-swap: it goes ahead only while ``champion`` is still the version
the candidate was judged against, and only for a version the serving rule allows
(registry.servable). Its writes are ordered so that a crash after any of them leaves
``champion`` and ``previous-champion`` on versions that served, and a rerun completes it:
the new version's tags (naming the champion it replaces) first, then ``champion``, then
``previous-champion`` (taken from those tags), then the old champion's tags.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient

from registry.aliases import CHALLENGER, CHAMPION, PREVIOUS, alias_version, drop_alias
from registry.events import record_event
from registry.servable import require_servable, withdraw
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


class ChampionMovedError(RuntimeError):
    """The champion is no longer the version a promotion was judged against."""


@dataclass(frozen=True)
class ChampionChange:
    """The champion after a promotion or rollback, and the one it replaced (None: none)."""

    champion: str
    replaced: str | None
    changed: bool  # False when the call found the change already made


def promote(
    client: MlflowClient, model_name: str, version: str | int, reason: str, over: str | None
) -> ChampionChange:
    """Make `version` the champion in place of `over`.

    The version gets ``promoted_at``, ``promotion_reason``, ``promoted_over`` and a
    ``promotion`` event, and loses ``challenger``; the former champion becomes
    ``previous-champion`` with ``superseded_by``/``superseded_at`` and a ``superseded`` event.
    A rerun after a crash (``champion`` already on `version`) finishes what is left.

    Args:
        over: the champion the version was judged against (None: there must be none).
    Raises:
        NotServable: the serving rule refuses the version (nothing is written).
        ChampionMovedError: ``champion`` is neither `over` nor `version` (nothing is written).
        MlflowException: no such version, or the store failed.
    """
    version, over = str(version), None if over is None else str(over)
    note = require_servable(client, model_name, version)
    current = alias_version(client, model_name, CHAMPION)
    if current == version:
        replaced = client.get_model_version(model_name, version).tags.get(PROMOTED_OVER) or None
        _retire(client, model_name, replaced, version, reason)
        drop_alias(client, model_name, CHALLENGER, version)
        return ChampionChange(version, replaced, False)
    if current != over:
        raise ChampionMovedError(
            f"{model_name}: champion is version {current}, not version {over} that version "
            f"{version} was judged against: judge it again beside the current champion"
        )
    tags = {PROMOTED_AT: utc_now(), PROMOTION_REASON: reason, PROMOTED_OVER: current or ""}
    _tag(client, model_name, version, tags)
    detail = {"reason": reason, "previous_champion": current, "approval": note}
    record_event(client, model_name, version, "promotion", detail, dedupe=True)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    _retire(client, model_name, current, version, reason)
    drop_alias(client, model_name, CHALLENGER, version)
    return ChampionChange(version, current, True)


def install_first(client: MlflowClient, model_name: str, version: str | int, reason: str) -> str:
    """Make `version` the first champion: the model already in production before any
    candidate was gated. Only while there is no champion; a rerun changes nothing.

    Raises:
        ChampionMovedError: another version is champion already.
    """
    version, current = str(version), alias_version(client, model_name, CHAMPION)
    if current not in (None, version):
        raise ChampionMovedError(f"{model_name} has champion version {current} already")
    if current is None:
        _tag(client, model_name, version, {PROMOTED_AT: utc_now(), PROMOTION_REASON: reason})
        record_event(client, model_name, version, "promotion", {"reason": reason}, dedupe=True)
        client.set_registered_model_alias(model_name, CHAMPION, version)
    drop_alias(client, model_name, CHALLENGER, version)
    return version


def _retire(client: MlflowClient, model_name: str, old: str | None, new: str, reason: str) -> None:
    """The replaced champion becomes previous-champion, then gets its superseded record."""
    if old is None:
        return
    if alias_version(client, model_name, PREVIOUS) != old:
        client.set_registered_model_alias(model_name, PREVIOUS, old)
    if client.get_model_version(model_name, old).tags.get(SUPERSEDED_BY) != new:
        _tag(client, model_name, old, {SUPERSEDED_BY: new, SUPERSEDED_AT: utc_now()})
    detail = {"by": new, "reason": reason}
    record_event(client, model_name, old, "superseded", detail, dedupe=True)


def rollback(client: MlflowClient, model_name: str, reason: str) -> ChampionChange:
    """Give ``champion`` back to ``previous-champion`` (which alias is then removed).

    The demoted version gets ``rolled_back_at``, ``rollback_reason``, ``rolled_back_to`` and
    is withdrawn (registry.servable: it may not serve again); the restored one gets
    ``restored_at`` and ``restore_reason``; both get an event.

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
        withdraw(client, model_name, current, "rollback", f"{reason} (back to {target})")
    _tag(client, model_name, target, {RESTORED_AT: now, RESTORE_REASON: reason})
    detail = {"from": current, "reason": reason}
    record_event(client, model_name, target, "restored", detail, dedupe=True)
    client.set_registered_model_alias(model_name, CHAMPION, target)
    client.delete_registered_model_alias(model_name, PREVIOUS)
    return ChampionChange(target, current, True)


def _tag(client: MlflowClient, model_name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
