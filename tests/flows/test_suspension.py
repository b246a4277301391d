"""Approval by suspension against a real Prefect server (API and UI): a run waiting for its
form holds no process, the form submitted in the UI reschedules it and it finishes without
repeating the step before the approval; a missed deadline rejects it.

The flow is served by `flow.serve` in a child process (a deployment, as suspension needs),
so its runs start in processes of their own that the test can look for.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect
from prefect.deployments import run_deployment
from prefect.settings import (
    temporary_settings,
)

from flows.approval import TIMEOUT_APPROVER
from flows.approval_deadlines import approval_deadlines
from tests.flows.conftest import RUNNER_START_S, in_thread, serving, wait_for

DEPLOYMENT = "suspendable-approval/suspendable"
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


def approve_in_the_ui(
    browser, ui: str, settings: dict, run_id: str, heading: str, approver: str, reason: str
):
    """Open the suspended run in the Prefect UI, tick approve and every checklist item, sign
    the form and submit it; the run's final state."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{ui}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").first.click(timeout=60_000)
        form = page.get_by_role("dialog")
        form.get_by_text(heading).wait_for(timeout=30_000)
        switches = form.get_by_role("switch")
        for i in range(switches.count()):  # approve and the three checklist items
            switches.nth(i).click()
            expect(switches.nth(i)).to_be_checked()  # the form took the click
        approver_box, reason_box = form.locator("textarea").all()
        approver_box.fill(approver)
        reason_box.fill(reason)
        form.get_by_role("button", name="Submit").click()
        # the page stays open meanwhile; first the server takes the form, then the runner
        # starts the resumed run in a new process (it imports the flows, torch and MLflow)
        wait_for(settings, run_id, lambda state: not suspended(state), timeout_s=300)
        return wait_for(settings, run_id, finished)
    finally:
        page.close()


def suspended(state) -> bool:
    return state.name == "Suspended"


def finished(state) -> bool:
    return state.is_final()


def test_a_suspended_run_holds_no_process_and_resumes_from_the_ui(served, browser, tmp_path):
    ui, settings = served
    marker = tmp_path / "runs.txt"
    run_id = start(settings, marker=str(marker))
    wait_for(settings, run_id, suspended)
    assert processes_once_settled(run_id) == []
    heading = "Approve dieguard-test version 7"
    state = approve_in_the_ui(
        browser, ui, settings, run_id, heading, "q.engineer", "figures hold on every fab"
    )
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
