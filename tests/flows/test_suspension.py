"""Approval by suspension against a real Prefect server: a run waiting for its form holds no
process, the submitted form (the call the UI's Submit makes) reschedules it and it finishes
without repeating the step before the approval; a missed deadline rejects it. The form
filled in the Prefect UI itself is test_retrain_approval_ui's, on the real flows.

The flow is served by `flow.serve` in a child process (a deployment, as suspension needs),
so its runs start in processes of their own that the test can look for.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.deployments import run_deployment
from prefect.flow_runs import resume_flow_run
from prefect.settings import (
    temporary_settings,
)

from flows.approval import TIMEOUT_APPROVER
from flows.approval_deadlines import approval_deadlines
from tests.flows.conftest import RUNNER_START_S, in_thread, serving, wait_for

DEPLOYMENT = "suspendable-approval/suspendable"
# the approval form as a quality engineer submits it: approved, signed, every item checked
FORM = {
    "approve": True,
    "approver": "q.engineer",
    "reason": "figures hold on every fab",
    "reviewed_evaluation_report": True,
    "reviewed_fairness_audit": True,
    "reviewed_gate_verdicts": True,
}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(prefect_ui, tmp_path_factory):
    """The flow served from a child process; yields the UI's URL and the client settings."""
    code = "from tests.flows.served import suspendable_approval as f; f.serve('suspendable')"
    with serving(code, prefect_ui, tmp_path_factory.mktemp("results")) as settings:
        yield prefect_ui, settings


def start(settings: dict, deployment: str = DEPLOYMENT, **parameters) -> str:
    """Start a run of the served deployment (once the runner has registered it); its id."""

    def go():
        with temporary_settings(settings):
            deadline = time.monotonic() + RUNNER_START_S
            while True:
                try:
                    return str(run_deployment(deployment, parameters=parameters, timeout=0).id)
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)

    return in_thread(go)


def result(settings: dict, state) -> dict:
    def read():
        with temporary_settings(settings):
            return state.result()

    return in_thread(read)


def submit(settings: dict, run_id: str, form: dict) -> None:
    """Submit a suspended run's form through the API (what the UI's Submit button calls)."""

    def go():
        with temporary_settings(settings):
            resume_flow_run(run_id, run_input=form)

    in_thread(go)


def processes_of(run_id: str) -> list[int]:
    """The ids of the processes started for a flow run (from the process table)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours
            continue
    return found


def processes_once_settled(run_id: str, timeout_s: float = 30) -> list[int]:
    """The run's processes, once its process has had time to exit after a suspension."""
    deadline = time.monotonic() + timeout_s
    while processes_of(run_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    return processes_of(run_id)


def suspended(state) -> bool:
    return state.name == "Suspended"


def finished(state) -> bool:
    return state.is_final()


def test_a_suspended_run_holds_no_process_and_resumes_once_its_form_is_submitted(served, tmp_path):
    _, settings = served
    marker = tmp_path / "runs.txt"
    run_id = start(settings, marker=str(marker))
    wait_for(settings, run_id, suspended)
    assert processes_once_settled(run_id) == []
    submit(settings, run_id, FORM)
    state = wait_for(settings, run_id, finished)
    assert state.is_completed(), state.message
    outcome = result(settings, state)
    assert outcome["approved"] and outcome["approver"] == "q.engineer"
    assert outcome["runs_before"] == 1
    assert marker.read_text().splitlines() == ["ran"]  # the resumed run did not repeat it


def test_a_missed_deadline_rejects_the_suspended_run(served, tmp_path):
    _, settings = served
    marker = tmp_path / "runs.txt"
    run_id = start(settings, marker=str(marker), approval_timeout_s=1)
    wait_for(settings, run_id, suspended)

    def sweep():
        with temporary_settings(settings):
            # a sweep an hour on: past the 1 s deadline however soon the run was suspended
            later = datetime.now(UTC) + timedelta(hours=1)
            return approval_deadlines(flow_name="suspendable-approval", now=later)

    assert in_thread(sweep) == [run_id]
    state = wait_for(settings, run_id, finished)
    assert state.is_completed(), state.message
    outcome = result(settings, state)
    assert not outcome["approved"] and outcome["approver"] == TIMEOUT_APPROVER
    assert outcome["reason"] == f"no decision within {1 / 3600:g} h"
    assert marker.read_text().splitlines() == ["ran"]
