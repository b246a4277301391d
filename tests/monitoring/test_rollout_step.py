"""A rollout step survives a crash at any point: a child process takes the step and is
SIGKILLed right after its k-th registry write, for every k; a fresh step then finishes the
decision on record. No stage or decision is lost, none is taken twice, and a fresh step
that would judge otherwise (the evidence changed since) does not overrule it."""

from __future__ import annotations

import shutil
import signal
from datetime import UTC, datetime, timedelta

import pytest

from model.schema import GOOD
from monitoring.rollout import Outcome, load_rollout_config
from monitoring.rollout_step import start_rollout, take_step
from registry import CHAMPION, PREVIOUS, open_store
from registry.events import events
from registry.rollout_decisions import DECISION
from registry.rollout_state import CONTEXT, rollout_state, set_rollout
from tests.registry.approvals import champion_and_challenger
from tests.registry.crash import die_after_writes

MODEL = "dieguard-step-crash"
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
T1, T2 = T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=10)  # the step, the next
CONFIG = load_rollout_config(None, [
    "stages=[0.5, 1.0]", "shadow_window_s=0", "stage_window_s=0", "min_decided=20",
    "min_labels=40", "min_defective=20", "max_escape=0.05", "max_fpr=0.3",
])  # fmt: skip


def outcomes(escape_every: int | None):
    """A reader of 200 labelled dies the challenger decided between T0 and T1, half
    defective; every `escape_every`-th defective one passed (None: none)."""

    def read(version: str, since: datetime) -> list[Outcome]:
        found = []
        for i in range(200):
            label = GOOD if i % 2 else 1
            missed = label != GOOD and escape_every and (i // 2) % escape_every == 0
            at = T0 + timedelta(seconds=15 * (i + 1))
            found.append(
                Outcome(f"D{i:05d}", f"i{i}", at, label, label != GOOD and not missed, True)
            )
        return found

    return read


SOUND, LEAKY = outcomes(None), outcomes(3)


@pytest.fixture(scope="module")
def registries(tmp_path_factory) -> dict:
    """Three registries, version 1 champion and version 2 rolled out since T0: in shadow,
    at 50% and at 100% (each entered at T0)."""
    root, made = tmp_path_factory.mktemp("step_crash"), {}
    for stage, share in (("shadow", 0.0), ("50%", 0.5), ("100%", 1.0)):
        db = root / f"{stage.rstrip('%')}.db"
        client = open_store(f"sqlite:///{db}").client
        champion_and_challenger(client, MODEL, str(root / "bundle"))
        state = start_rollout(client, MODEL, "2", CONFIG, T0)
        if stage != "shadow":
            context = {name: state[name] for name in CONTEXT}
            set_rollout(client, MODEL, "2", "canary", share, stage, "entered", T0,
                        lease_s=CONFIG.lease_s, context=context, revision=2)  # fmt: skip
        made[stage] = db
    return made


def advanced(client) -> None:
    """Shadow ended: 50% in force, once."""
    state = rollout_state(client, MODEL)
    assert (state["stage"], state["share"], state["revision"]) == ("50%", 0.5, 2)
    assert state["lease_until"] == (T2 + timedelta(seconds=CONFIG.lease_s)).isoformat(
        timespec="milliseconds"
    )  # renewed by the fresh step's hold
    assert stages_entered(client) == ["shadow", "50%"]


def promoted(client) -> None:
    """Version 2 is champion, promoted once; the rollout ended once."""
    assert aliases(client) == {CHAMPION: "2", PREVIOUS: "1"}
    assert kinds(client, "2").count("promotion") == 1 and "rollback" not in kinds(client, "2")
    ends = [e for e in log(client, "2") if e["detail"].get("action")]
    assert [e["detail"]["action"] for e in ends] == ["promoted"]
    assert rollout_state(client, MODEL) is None


def rolled_back(client) -> None:
    """Version 2 withdrawn once and the rollout ended once; version 1 stays champion."""
    assert aliases(client) == {CHAMPION: "1"}
    assert kinds(client, "2").count("rollback") == 2  # the withdrawal, the rollout's end
    assert "withdrawn_at" in client.get_model_version(MODEL, "2").tags
    assert stages_entered(client) == ["shadow", "50%"] and rollout_state(client, MODEL) is None


CASES = {  # the state, what the step sees, what the fresh step sees, and the outcome
    "advance": ("shadow", SOUND, SOUND, advanced),
    "promote": ("100%", SOUND, LEAKY, promoted),
    "rollback": ("50%", LEAKY, SOUND, rolled_back),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_step_killed_after_any_registry_write_is_finished_by_the_next(case, registries, tmp_path):
    stage, seen, seen_later, check = CASES[case]
    k, killed = 0, 0
    while True:
        k += 1
        db = tmp_path / f"crash-{k}.db"
        shutil.copy(registries[stage], db)
        uri = f"sqlite:///{db}"
        ended_by = die_after_writes(
            k, lambda u=uri: take_step(open_store(u).client, MODEL, seen, T1)
        )
        client = open_store(uri).client
        take_step(client, MODEL, seen_later, T2)  # the fresh step
        check(client)
        assert DECISION not in client.get_registered_model(MODEL).tags, k
        assert take_step(client, MODEL, seen_later, T2).action in ("idle", "hold")
        if ended_by == 0:
            break
        assert ended_by == signal.SIGKILL
        killed += 1
    assert killed >= 3, killed  # the decision on record, its writes, the record deleted


def test_a_fresh_step_on_other_evidence_decides_otherwise_without_a_crash(registries, tmp_path):
    """What the crash test rules out: with no decision on record, the step judges anew."""
    db = tmp_path / "fresh.db"
    shutil.copy(registries["100%"], db)
    client = open_store(f"sqlite:///{db}").client
    step = take_step(client, MODEL, LEAKY, T2)
    assert (step.action, step.stage, step.resumed) == ("rolled-back", "100%", False)
    assert aliases(client) == {CHAMPION: "1"}


def aliases(client) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()}


def log(client, version: str) -> list[dict]:
    return events(client.get_model_version(MODEL, version).tags)


def kinds(client, version: str) -> list[str]:
    return [e["kind"] for e in log(client, version)]


def stages_entered(client) -> list[str]:
    """The stages the rollout entered, in order (rollout events that set a mode)."""
    entered = [e["detail"] for e in log(client, "2") if e["kind"] == "rollout"]
    return [d["stage"] for d in entered if d["mode"] != "off"]


def test_a_step_for_one_rollout_leaves_another_alone(registries, tmp_path):
    db = tmp_path / "other.db"
    shutil.copy(registries["shadow"], db)
    client = open_store(f"sqlite:///{db}").client
    before = dict(client.get_registered_model(MODEL).tags)
    step = take_step(client, MODEL, SOUND, T1, only=("2", "an earlier start"))
    assert (step.action, step.reason) == ("idle", "another rollout is in progress: version 2")
    assert dict(client.get_registered_model(MODEL).tags) == before
    assert take_step(client, MODEL, SOUND, T1, only=("2", T0.isoformat())).action == "advance"
