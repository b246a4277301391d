"""The rollout state in a real MLflow store, its steps, and the rollout flow end to end
under Prefect.

The flows run on a fake clock with zero-length windows; the `sleep` runs a simulated line:
each wait inspects a batch of dies routed as the registry's rollout state says (as the
service does), logs both models' decisions in a real SQLite inspection log, and has an
operator label every die.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.testing.utilities import prefect_test_harness

from flows.rollout import rollout, rollout_start, rollout_step
from model.schema import CLASS_NAMES
from monitoring.rollout_step import RolloutInProgressError
from registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    NotServable,
    audit,
    format_audit,
    open_store,
    reject,
)
from registry.rollout_state import clear_rollout, rollout_state, set_rollout
from service.inspection_log import InspectionLog
from service.models import canary_bucket
from tests.registry.approvals import champion_and_challenger

MODEL = "dieguard-rollout-tests"
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
FAST = [  # zero-length windows; small label minimums; looser gates for a few hundred dies
    "stages=[0.5, 1.0]",
    "shadow_window_s=0",
    "stage_window_s=0",
    "check_interval_s=0",
    "max_holds=6",
    "min_decided=20",
    "min_labels=40",
    "min_defective=20",
    "max_escape=0.05",
    "max_fpr=0.3",
]


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def registry(tmp_path) -> str:
    """A SQLite MLflow registry: version 1 champion, version 2 challenger."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = open_store(uri).client
    champion_and_challenger(client, MODEL, str(tmp_path / "bundle"))
    return uri


def aliases(uri: str) -> dict[str, str]:
    model = open_store(uri).client.get_registered_model(MODEL)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_rollout_state_round_trip_and_its_audit_events(registry):
    client = open_store(registry).client
    assert rollout_state(client, MODEL) is None and rollout_state(client, "no-such") is None
    set_rollout(client, MODEL, "2", "shadow", 0.0, "shadow", "beside 1", now=T0)
    state = set_rollout(client, MODEL, 2, "canary", 0.25, "25%", "stage two", now=T0)
    assert rollout_state(client, MODEL) == state
    assert state == {
        "version": "2",
        "mode": "canary",
        "share": 0.25,
        "stage": "25%",
        "updated_at": "2026-03-02T06:00:00.000+00:00",
        "reason": "stage two",
        "lease_until": "",
        "champion": "",
        "started_at": "",
        "config": "",
        "revision": 2,  # the second change of the rollout state
    }
    with pytest.raises(ValueError, match="mode"):
        set_rollout(client, MODEL, "2", "everything", 1.0, "x", "no")
    with pytest.raises(ValueError, match="share"):
        set_rollout(client, MODEL, "2", "canary", 1.5, "x", "no")
    cleared = clear_rollout(client, MODEL, "escapes", now=T0, kind="rollback", detail={"k": 3})
    assert cleared == state and rollout_state(client, MODEL) is None
    assert clear_rollout(client, MODEL, "again") is None
    events = audit(client, MODEL, "2")["events"][1:]  # after the approval
    assert [e["kind"] for e in events] == ["rollout", "rollout", "rollback"]
    assert events[1]["detail"] == {
        "mode": "canary",
        "share": 0.25,
        "stage": "25%",
        "reason": "stage two",
        "time": "2026-03-02T06:00:00.000+00:00",
        "revision": 2,
    }
    assert events[2]["detail"]["stage"] == "25%" and events[2]["detail"]["k"] == 3
    assert "rollback" in format_audit(audit(client, MODEL, "2"))


class Line:
    """An inspection station and its operators, on a fake clock.

    Each `sleep` inspects `batch` dies over one hour: every die is judged by both versions,
    decided by the one the rollout state routes it to, logged, and labelled. Every other
    die is defective; the champion is always right; from batch `bad_from` on, the
    challenger passes one defective die in three.
    """

    def __init__(self, log_url: str, tracking_uri: str, batch: int = 200, bad_from=None):
        self.log = InspectionLog(log_url, retry_initial=0.05).start()
        self.client = open_store(tracking_uri).client
        self.now, self.batch, self.bad_from, self.batches = T0, batch, bad_from, 0

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        state = rollout_state(self.client, MODEL)
        step = timedelta(hours=1) / self.batch
        dies = [self._inspect(i, self.now + i * step, state) for i in range(self.batch)]
        assert self.log.flush(30)
        for die_id, served, truth in dies:
            verdict = "confirm" if served == truth else "override"
            self.log.add_feedback(die_id, verdict, "op.kelly", None if served == truth else truth)
        self.batches += 1
        self.now += timedelta(hours=1, seconds=seconds)

    def _inspect(self, i: int, at: datetime, state: dict | None) -> tuple[str, int, int]:
        die_id = f"A-L{self.batches:04d}-W01-D{i:05d}"
        truth = 0 if i % 2 else 1 + (i // 2) % 4
        challenger = truth
        bad = self.bad_from is not None and self.batches >= self.bad_from
        if bad and truth and i % 3 == 0:
            challenger = 0
        mode, share = (state["mode"], state["share"]) if state else ("off", 0.0)
        served = "candidate" if mode == "canary" and canary_bucket(die_id) < share else "champion"
        decided = challenger if served == "candidate" else truth
        both = [decision("champion", "1", truth), decision("candidate", "2", challenger)]
        version = "2" if served == "candidate" else "1"
        self.log.record(record(die_id, at, mode, served, decided, version) | {"decisions": both})
        return die_id, decided, truth


def decision(role: str, version: str, cls: int) -> dict:
    p = 0.9 if cls else 0.1
    return {
        "role": role,
        "model_version": version,
        "model_kind": "multimodal",
        "defect_class": cls,
        "confidence": 0.9,
        "defect_probability": p,
        "flagged": cls != 0,
    }


def record(die_id: str, at: datetime, route: str, served: str, cls: int, version: str) -> dict:
    return {
        "inspection_id": uuid.uuid4().hex,
        "die_id": die_id,
        "wafer_id": die_id.rsplit("-", 1)[0],
        "received_at": at,
        "image_ref": "",
        "process_log": {"etch_rate": 101.5},
        "route": route,
        "served_by": served,
        "defect_class": cls,
        "class_name": CLASS_NAMES[cls],
        "confidence": 0.9,
        "flagged": cls != 0,
        "model_version": version,
        "model_kind": "multimodal",
    }


class StoppedLine(Line):
    """A line whose shift lead stops the rollout by hand (clears its state) after batch 2."""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.batches == 2:
            clear_rollout(self.client, MODEL, "stopped by the shift lead", now=self.now)


def run_rollout(
    registry: str, tmp_path, line_type=Line, overrides=(), **line_args
) -> tuple[dict, Line]:
    log_url = f"sqlite:///{tmp_path / 'inspections.db'}"
    line = line_type(log_url, registry, **line_args)
    try:
        result = rollout(
            model_name=MODEL,
            tracking_uri=registry,
            log_url=log_url,
            overrides=FAST + list(overrides),
            clock=line.clock,
            sleep=line.sleep,
        )
    finally:
        line.log.close()
    return result, line


def test_a_good_challenger_is_promoted_stage_by_stage(prefect_server, registry, tmp_path):
    result, line = run_rollout(registry, tmp_path)
    assert result["outcome"] == "promoted" and result["champion"] == "2", result["reason"]
    assert [(s["stage"], s["action"]) for s in result["stages"]] == [
        ("shadow", "advance"),
        ("50%", "advance"),
        ("100%", "promoted"),
    ]
    assert result["shadow"]["dies"] == 200 and result["shadow"]["flag_agreement"]["rate"] == 1.0
    assert aliases(registry) == {CHAMPION: "2", PREVIOUS: "1"}
    client = open_store(registry).client
    assert rollout_state(client, MODEL) is None
    record = audit(client, MODEL, "2")
    assert record["history"]["promotion_reason"].startswith("rollout passed every stage")
    stages = [e["detail"].get("stage") for e in record["events"] if e["kind"] == "rollout"]
    assert stages == ["shadow", "50%", "100%", "100%"]  # the last one ends the rollout
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["shadow.dies"] == "200" and tags["shadow.challenger.escape"] == "0"
    assert {"dieguard.rollout.shadow", "dieguard.rollout.stage"} <= rollout_events("promoted")


def test_a_challenger_that_lets_defects_through_is_rolled_back(prefect_server, registry, tmp_path):
    result, line = run_rollout(registry, tmp_path, bad_from=1)  # fine in shadow, then not
    assert result["outcome"] == "rolled-back" and result["champion"] == "1"
    assert [(s["stage"], s["action"]) for s in result["stages"]] == [
        ("shadow", "advance"),
        ("50%", "rolled-back"),
    ]
    assert aliases(registry) == {CHAMPION: "1"}  # withdrawn: no longer challenger
    client = open_store(registry).client
    assert rollout_state(client, MODEL) is None
    with pytest.raises(NotServable, match="withdrawn .* rollback: escape"):
        set_rollout(client, MODEL, "2", "shadow", 0.0, "shadow", "once more")
    events = audit(client, MODEL, "2")["events"]
    rollback = [e for e in events if e["kind"] == "rollback" and "stage" in e["detail"]]
    assert len(rollback) == 1 and rollback[0]["detail"]["stage"] == "50%"
    figures = rollback[0]["detail"]["figures"]
    assert figures["escape"]["k"] > 0 and figures["escape"]["lo"] > 0.05
    assert "escape" in rollback[0]["detail"]["reason"]
    assert audit(client, MODEL, "1")["history"].get("superseded_by") is None
    assert "dieguard.rollout.rolled-back" in rollout_events("rolled-back")


def rollout_events(last: str, timeout_s: float = 30.0) -> set[str]:
    """The names of the dieguard.rollout.* events the Prefect server received, once the
    flow's `last` one is among them (events arrive asynchronously)."""
    query = EventFilter(event=EventNameFilter(prefix=["dieguard.rollout."]))
    deadline, names = time.monotonic() + timeout_s, set()
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            names = {e.event for e in client.read_events(query, limit=50).events}
        if f"dieguard.rollout.{last}" in names:
            break
        time.sleep(0.5)
    return names


def test_a_rollout_stopped_by_hand_ends_the_flow(prefect_server, registry, tmp_path):
    result, _ = run_rollout(registry, tmp_path, line_type=StoppedLine)
    assert result["outcome"] == "interrupted" and result["champion"] == "1"
    assert aliases(registry) == {CHAMPION: "1", CHALLENGER: "2"}
    client = open_store(registry).client
    assert rollout_state(client, MODEL) is None
    last = audit(client, MODEL, "2")["events"][-1]
    assert last["kind"] == "rollout" and last["detail"]["reason"] == "stopped by the shift lead"


def test_a_stage_that_stays_undecided_stops_the_rollout(prefect_server, registry, tmp_path):
    result, _ = run_rollout(registry, tmp_path, overrides=["max_holds=1"], batch=20)
    assert result["outcome"] == "stopped" and result["champion"] == "1"
    assert result["stages"][-1]["stage"] == "50%"
    assert result["reason"].startswith("undecided 3600 s past the window")
    client = open_store(registry).client
    assert rollout_state(client, MODEL) is None
    assert audit(client, MODEL, "2")["events"][-1]["detail"]["action"] == "stopped"


def test_a_rejected_version_is_never_rolled_out(prefect_server, registry, tmp_path):
    client = open_store(registry).client
    reject(client, MODEL, "2", "qe.lin", "fairness audit: fab C escapes")
    assert aliases(registry) == {CHAMPION: "1"}
    with pytest.raises(NotServable, match="rejected by qe.lin: fairness audit"):
        rollout(model_name=MODEL, tracking_uri=registry, version="2", overrides=FAST)
    with pytest.raises(NotServable, match="rejected"):
        set_rollout(client, MODEL, "2", "canary", 0.1, "10%", "by hand")
    assert rollout_state(client, MODEL) is None


def registry_snapshot(uri: str) -> tuple[dict, dict]:
    """The registered model's tags and every version's tags: what a step could change."""
    client = open_store(uri).client
    versions = {v.version: dict(v.tags) for v in client.search_model_versions(f"name='{MODEL}'")}
    return dict(client.get_registered_model(MODEL).tags), versions


def test_a_step_with_no_rollout_in_progress_changes_nothing(prefect_server, registry, tmp_path):
    before = registry_snapshot(registry)
    step = rollout_step(MODEL, registry, f"sqlite:///{tmp_path / 'inspections.db'}")
    assert step["action"] == "idle" and step["reason"] == "no rollout in progress"
    assert registry_snapshot(registry) == before


def test_two_steps_back_to_back_take_one_decision(prefect_server, registry, tmp_path):
    log_url = f"sqlite:///{tmp_path / 'inspections.db'}"
    line = Line(log_url, registry)
    try:
        started = rollout_start(MODEL, registry, None, None, FAST, line.clock)
        assert (started["stage"], started["revision"], started["champion"]) == ("shadow", 1, "1")
        line.sleep(0)  # an hour of shadow: every die labelled
        first, second = (rollout_step(MODEL, registry, log_url, line.clock) for _ in range(2))
    finally:
        line.log.close()
    assert (first["action"], first["stage"], first["now_in"]) == ("advance", "shadow", "50%")
    assert first["shadow"]["dies"] == 200
    assert (second["action"], second["stage"]) == ("hold", "50%")  # nothing decided in it yet
    client = open_store(registry).client
    state = rollout_state(client, MODEL)
    assert (state["stage"], state["revision"]) == ("50%", 2)
    assert state["lease_until"] > line.now.isoformat()  # renewed by the hold
    stages = [e["detail"]["stage"] for e in audit(client, MODEL, "2")["events"][1:]]
    assert stages == ["shadow", "50%"]


def test_a_second_rollout_waits_for_the_first(prefect_server, registry):
    rollout_start(MODEL, registry, "2", None, FAST, lambda: T0)
    with pytest.raises(RolloutInProgressError, match="version 2 is being rolled out"):
        rollout_start(MODEL, registry, "2", None, FAST, lambda: T0)
    assert rollout_state(open_store(registry).client, MODEL)["revision"] == 1
