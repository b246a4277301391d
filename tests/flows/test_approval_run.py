"""The approval as a run of its own, against a real Prefect server and a real MLflow store:
a retrain from its deployment hands its candidate to an `approve-candidate` run and ends; the
approval waits suspended outside the retrain's concurrency slot, so a form submitted while
another retrain holds that slot resumes the approval run and records the decision.

The retrain is the stand-in of test_drift_trigger (no training), served with prefect.yaml's
concurrency limit; it registers a candidate and starts the approval with the retrain's own
task. The approval is the real flow, served as its deployment.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.settings import (
    temporary_settings,
)

from flows.approval import TIMEOUT_APPROVER
from flows.approval_deadlines import approval_deadlines
from flows.approve_candidate import REFUSED, approve_candidate
from registry import CHALLENGER, audit, install_first, open_store
from registry.aliases import alias_version
from tests.flows.conftest import in_thread, serving, wait_for
from tests.flows.test_suspension import FORM, start, submit, suspended
from tests.registry.approvals import gated_candidate

RETRAIN = "weekly-retrain/weekly-retrain"
MODEL = "dieguard-test"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(prefect_ui, tmp_path_factory):
    """The stand-in retrain and the real approval flow, served from a child process."""
    code = "from tests.flows.served import serve_retrain_and_approval as s; s()"
    with serving(code, prefect_ui, tmp_path_factory.mktemp("results")) as settings:
        yield settings


@pytest.fixture
def registry_uri(tmp_path) -> str:
    """A real MLflow store with a champion (version 1) for the candidates to face."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = open_store(uri).client
    client.create_registered_model(MODEL)
    client.create_model_version(MODEL, source=str(tmp_path / "cnn"))
    install_first(client, MODEL, "1", "the CNN in production")
    return uri


def approval_runs(settings: dict) -> list[str]:
    """The ids of the approve-candidate runs on the server."""

    def read():
        only = FlowFilter(name=FlowFilterName(any_=["approve-candidate"]))
        with temporary_settings(settings), get_client(sync_client=True) as client:
            return [str(run.id) for run in client.read_flow_runs(flow_filter=only)]

    return in_thread(read)


def new_approval_run(settings: dict, known: list[str], timeout_s: float = 120) -> str:
    """The id of the one approve-candidate run not in `known`, once it exists."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = [run for run in approval_runs(settings) if run not in known]
        if new:
            (run,) = new
            return run
        time.sleep(0.5)
    raise TimeoutError("the retrain started no approval run")


def candidate_waiting(settings: dict, uri: str, **parameters) -> tuple[str, str]:
    """A stand-in retrain that registers a candidate and ends; its approval run, suspended."""
    known = approval_runs(settings)
    retrain = start(settings, RETRAIN, tracking_uri=uri, **parameters)
    assert wait_for(settings, retrain, finished).is_completed()
    approval = new_approval_run(settings, known)
    wait_for(settings, approval, suspended)
    return retrain, approval


def finished(state) -> bool:
    return state.is_final()


def test_the_approval_resumes_while_another_retrain_holds_the_slot(served, registry_uri, tmp_path):
    settings = served
    _, approval = candidate_waiting(settings, registry_uri)
    client = open_store(registry_uri).client
    assert alias_version(client, MODEL, CHALLENGER) == "2"
    assert audit(client, MODEL, "2")["approval"] is None  # waiting, nothing decided

    release = tmp_path / "release"
    holder = start(settings, RETRAIN, release=str(release))  # the schedule's next retrain
    wait_for(settings, holder, lambda s: s.is_running())
    collided = start(settings, RETRAIN)  # the slot is taken: CANCEL_NEW turns this one away
    assert wait_for(settings, collided, finished).is_cancelled()

    submit(settings, approval, FORM)
    state = wait_for(settings, approval, finished)
    assert state.is_completed() and state.name == "Completed", state.message
    decision = audit(client, MODEL, "2")["approval"]
    assert decision["decision"] == "approved" and decision["approver"] == "q.engineer"
    assert alias_version(client, MODEL, CHALLENGER) == "2"  # held for its rollout
    assert wait_for(settings, holder, lambda s: True).is_running()  # the other retrain goes on
    release.touch()
    assert wait_for(settings, holder, finished).is_completed()


def test_a_version_superseded_while_it_waited_is_refused_on_record(served, registry_uri, tmp_path):
    settings = served
    _, first = candidate_waiting(settings, registry_uri)
    client = open_store(registry_uri).client
    newer = gated_candidate(client, MODEL, str(tmp_path / "newer"))  # the next retrain's
    submit(settings, first, FORM)
    state = wait_for(settings, first, finished)
    assert state.is_completed() and state.name == REFUSED
    assert "no longer the challenger" in state.message
    record = audit(client, MODEL, "2")
    assert record["approval"] is None  # the approval given too late is not applied
    (event,) = [e for e in record["events"] if e["kind"] == "approval-refused"]
    assert event["detail"]["decision"]["approver"] == "q.engineer"
    assert alias_version(client, MODEL, CHALLENGER) == newer


def test_a_missed_deadline_rejects_the_candidate(served, registry_uri):
    settings = served
    _, approval = candidate_waiting(settings, registry_uri, approval_timeout_s=1)

    def sweep():
        with temporary_settings(settings):
            return approval_deadlines(now=datetime.now(UTC) + timedelta(hours=1))

    assert in_thread(sweep) == [approval]
    state = wait_for(settings, approval, finished)
    assert state.is_completed(), state.message
    client = open_store(registry_uri).client
    decision = audit(client, MODEL, "2")["approval"]
    assert decision["decision"] == "rejected" and decision["approver"] == TIMEOUT_APPROVER
    assert alias_version(client, MODEL, CHALLENGER) is None  # a rejected version is no challenger


def test_a_superseded_version_is_refused_before_anyone_is_asked(served, registry_uri, tmp_path):
    client = open_store(registry_uri).client
    older = gated_candidate(client, MODEL, str(tmp_path / "older"))
    gated_candidate(client, MODEL, str(tmp_path / "newer"))

    def ask():
        with temporary_settings(served):
            return approve_candidate(older, MODEL, registry_uri, return_state=True)

    state = in_thread(ask)  # by hand it would pause for the form: it ends at once instead
    assert state.is_completed() and state.name == REFUSED
    assert state.message == "version 2 is no longer the challenger (version 3 is)"
    (event,) = [e for e in audit(client, MODEL, older)["events"] if e["kind"] == "approval-refused"]
    assert "decision" not in event["detail"] and audit(client, MODEL, older)["approval"] is None
