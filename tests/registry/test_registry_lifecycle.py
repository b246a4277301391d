"""Registration, aliases (challenger, champion, previous-champion), approvals and events."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    RollbackError,
    champion,
    promote,
    record_approval,
    record_event,
    register,
    rollback,
)
from registry.events import events
from tests.registry.approvals import make_servable
from tests.registry.fake_run import KIND


def aliases(client, name) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def three_versions(client, name, logged) -> list[str]:
    """Versions 1, 2, 3 from the run's three logged models (INT8 bundle first)."""
    uris = [logged.models[f"{KIND}-{r}"] for r in ("int8", "fp32", "pytorch")]
    versions = [register(client, name, uri, {"rank": i}) for i, uri in enumerate(uris)]
    for version in versions:
        make_servable(client, name, version)
    return versions


def test_register_tags_lineage_and_sets_challenger(store, logged, model_name):
    client = store.client
    lineage = {"data_digest": "abc", "gate": {"passed": True}, "threshold": 0.3125}
    number = register(client, model_name, logged.serving[KIND], lineage)
    version = client.get_model_version(model_name, number)
    assert number == "1" and version.run_id == logged.run_id
    assert version.tags["lineage.data_digest"] == "abc"
    assert version.tags["lineage.gate"] == '{"passed":true}'
    assert version.tags["lineage.threshold"] == "0.3125"
    assert version.tags["lineage.training_run_id"] == logged.run_id
    assert aliases(client, model_name) == {CHALLENGER: "1"}
    assert champion(client, model_name) is None


def test_registering_the_same_run_again_reuses_the_version(store, logged, model_name):
    client = store.client
    first = register(client, model_name, logged.serving[KIND], {"attempt": 1})
    second = register(client, model_name, logged.serving[KIND], {"attempt": 2})
    assert second == first
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1
    assert client.get_model_version(model_name, second).tags["lineage.attempt"] == "2"


def test_champion_of_an_unknown_model_is_none(store):
    assert champion(store.client, "no-such-model") is None


def test_first_promotion_makes_the_champion(store, logged, model_name):
    client = store.client
    v1 = register(client, model_name, logged.serving[KIND], {})
    make_servable(client, model_name, v1)
    change = promote(client, model_name, v1, "first model", None)
    assert (change.champion, change.replaced, change.changed) == (v1, None, True)
    assert aliases(client, model_name) == {CHAMPION: v1}  # challenger moved off
    assert str(champion(client, model_name).version) == v1
    tags = client.get_model_version(model_name, v1).tags
    assert tags["promotion_reason"] == "first model"
    assert tags["promoted_over"] == ""
    assert [e["kind"] for e in events(tags)] == ["approval", "promotion"]


def test_second_promotion_keeps_the_previous_champion(store, logged, model_name):
    client = store.client
    v1, v2, v3 = three_versions(client, model_name, logged)
    promote(client, model_name, v1, "first", None)
    change = promote(client, model_name, v2, "better escape rate", v1)
    assert (change.champion, change.replaced) == (v2, v1)
    assert aliases(client, model_name) == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: v3}
    old, new = (client.get_model_version(model_name, v).tags for v in (v1, v2))
    assert old["superseded_by"] == v2
    assert new["promoted_over"] == v1
    assert [e["kind"] for e in events(old)] == ["approval", "promotion", "superseded"]


def test_promoting_the_champion_again_changes_nothing(store, logged, model_name):
    client = store.client
    v1 = register(client, model_name, logged.serving[KIND], {})
    make_servable(client, model_name, v1)
    promote(client, model_name, v1, "first", None)
    again = promote(client, model_name, v1, "retried task", None)
    assert not again.changed
    tags = client.get_model_version(model_name, v1).tags
    assert tags["promotion_reason"] == "first"
    assert len(events(tags)) == 2  # the approval and one promotion


def test_rollback_restores_the_previous_champion(store, logged, model_name):
    client = store.client
    v1, v2, _ = three_versions(client, model_name, logged)
    promote(client, model_name, v1, "first", None)
    promote(client, model_name, v2, "second", v1)
    change = rollback(client, model_name, "escape rate rose in production")
    assert (change.champion, change.replaced, change.changed) == (v1, v2, True)
    assert str(champion(client, model_name).version) == v1
    assert PREVIOUS not in aliases(client, model_name)
    bad, good = (client.get_model_version(model_name, v).tags for v in (v2, v1))
    assert bad["rollback_reason"] == "escape rate rose in production"
    assert bad["rolled_back_to"] == v1
    assert good["restore_reason"] == "escape rate rose in production"
    assert events(bad)[-1]["kind"] == "rollback" and events(good)[-1]["kind"] == "restored"
    assert bad["withdrawn_reason"].startswith("rollback: escape rate rose")  # never again
    with pytest.raises(RollbackError):
        rollback(client, model_name, "nothing left to roll back to")


def test_approval_is_recorded_as_tags_with_utc_time(store, logged, model_name):
    client = store.client
    v1 = register(client, model_name, logged.serving[KIND], {})
    checklist = {"gate_passed": True, "escape_upper95_below_1pct": True}
    record_approval(client, model_name, v1, True, "alice", "all checks green", False, checklist)
    tags = client.get_model_version(model_name, v1).tags
    assert tags["approval.decision"] == "approved"
    assert tags["approval.approver"] == "alice"
    assert tags["approval.reason"] == "all checks green"
    assert tags["approval.automatic"] == "false"
    assert tags["approval.checklist"] == ('{"escape_upper95_below_1pct":true,"gate_passed":true}')
    assert datetime.fromisoformat(tags["approval.time"]).utcoffset() == timedelta(0)
    record_approval(client, model_name, v1, False, "policy", "drift", True, {})
    tags = client.get_model_version(model_name, v1).tags
    assert tags["approval.decision"] == "rejected" and tags["approval.automatic"] == "true"
    assert [e["detail"]["decision"] for e in events(tags)] == ["approved", "rejected"]
    assert CHALLENGER not in aliases(client, model_name)  # a rejected version is no challenger


def test_events_are_numbered_in_order(store, logged, model_name):
    client = store.client
    v1 = register(client, model_name, logged.serving[KIND], {})
    steps = [5, 25, 50, 100]
    keys = [record_event(client, model_name, v1, "rollout", {"percent": p}) for p in steps]
    assert keys == ["event.0001", "event.0002", "event.0003", "event.0004"]
    log = events(client.get_model_version(model_name, v1).tags)
    assert [e["detail"]["percent"] for e in log] == steps
    assert [e["time"] for e in log] == sorted(e["time"] for e in log)
    repeat = record_event(client, model_name, v1, "rollout", {"percent": 100}, dedupe=True)
    assert repeat == "event.0004"
