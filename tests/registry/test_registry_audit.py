"""audit and format_audit: a version's whole story, read back from MLflow alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from registry import (
    audit,
    format_audit,
    install_first,
    promote,
    record_approval,
    record_event,
    register,
    training_split,
)
from tests.registry.fake_run import DATA_DIGEST, GIT_COMMIT, INT8_THRESHOLD, KIND, SPLIT_DIGESTS

LINEAGE = {
    "data_digest": DATA_DIGEST,
    "validation_verdict": "passed",
    "validation_report": "runs/smoke/validation/index.html",
    "git_commit": GIT_COMMIT,
    "threshold": INT8_THRESHOLD,
    "gate": {"chosen": "dynamic", "passed": True, "flip_rate": 0.001},
    "baseline_comparison": {"escape_delta": -0.002, "fpr_delta": -0.05},
}


@pytest.fixture
def story(store, logged, model_name):
    """A version registered, approved, promoted and rolled out in two steps; its audit."""
    client = store.client
    version = register(client, model_name, logged.serving[KIND], LINEAGE)
    checklist = {"gate_passed": True, "validation_passed": True}
    record_approval(client, model_name, version, True, "alice", "checks green", False, checklist)
    promote(client, model_name, version, "first champion", None)
    for percent in (10, 100):
        record_event(client, model_name, version, "rollout", {"percent": percent})
    return audit(client, model_name, version)


def test_audit_carries_the_lineage(story, logged):
    assert story["data"]["digest"] == DATA_DIGEST
    splits = {s["name"]: s["digest"] for s in story["data"]["splits"]}
    assert splits == SPLIT_DIGESTS
    assert story["validation"] == {
        "verdict": "passed",
        "report": "runs/smoke/validation/index.html",
    }
    assert story["run_id"] == logged.run_id
    assert story["git_commit"] == GIT_COMMIT
    assert story["threshold"] == str(INT8_THRESHOLD)
    assert story["gate"]["chosen"] == "dynamic" and story["gate"]["passed"] is True
    assert story["baseline_comparison"]["escape_delta"] == -0.002
    assert story["kind"] == KIND


def test_audit_carries_the_training_run(story):
    training = story["training"]
    assert training["status"] == "FINISHED" and training["name"] == "smoke"
    assert training["params"]["train.lr"] == "0.001"
    assert f"{KIND}.test.escape_upper95" in training["metrics"]


def test_audit_carries_decision_aliases_and_events(story):
    assert story["aliases"] == ["champion"]
    assert story["approval"]["decision"] == "approved"
    assert story["approval"]["approver"] == "alice"
    assert story["approval"]["automatic"] is False
    assert story["approval"]["checklist"] == {"gate_passed": True, "validation_passed": True}
    assert story["history"]["promotion_reason"] == "first champion"
    kinds = [(e["seq"], e["kind"]) for e in story["events"]]
    assert kinds == [(1, "approval"), (2, "promotion"), (3, "rollout"), (4, "rollout")]
    json.dumps(story)  # JSON-ready


def test_format_audit_has_the_key_lines(story, logged):
    text = format_audit(story)
    assert text.splitlines()[0].startswith(f"{story['model']} version 1 ({KIND})")
    assert "aliases: champion" in text
    for needle in (
        DATA_DIGEST,
        SPLIT_DIGESTS["train"],
        "verdict           passed",
        logged.run_id,
        GIT_COMMIT,
        "train.lr = 0.001",
        f"{KIND}.test.escape_upper95 = ",
        "gates             passed (dynamic)",
        "approved by alice (manual)",
        "promotion_reason  first champion",
        "rollout      percent=100",
    ):
        assert needle in text, needle


def test_training_split_follows_the_champion(store, logged, model_name, run_files):
    version = register(store.client, model_name, logged.serving[KIND], LINEAGE)
    with pytest.raises(MlflowException):
        training_split(store.client, model_name)  # no champion yet
    install_first(store.client, model_name, version, "first champion")
    split = training_split(store.client, model_name)
    assert split["digest"] == SPLIT_DIGESTS["train"]
    assert split["source"] == str(Path(run_files["splits"]["train"].source).resolve())
