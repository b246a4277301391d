"""The approval form in the real Prefect UI: a quality engineer opens the paused run in a
browser, fills in the form and submits it, and the flow resumes with that decision.

The flow runs here, in a thread: a run started by hand pauses in its process (a run from a
deployment is suspended instead: test_suspension).
"""

from __future__ import annotations

import threading
import time

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

from flows.approval import TIMEOUT_APPROVER, request_approval
from tests.flows.served import SUMMARY


@flow(name="approval-in-the-ui")
def approval_in_the_ui(timeout_s: int = 600):
    return request_approval(SUMMARY, timeout_s=timeout_s)


def run_in_background(api_url: str, timeout_s: int = 600) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target():
        # Logs stay local: a log shipper left behind would retry the stopped server at exit.
        settings = {PREFECT_API_URL: api_url, PREFECT_LOGGING_TO_API_ENABLED: False}
        with temporary_settings(settings):
            try:
                outcome["decision"] = approval_in_the_ui(timeout_s)
            except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
                outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def paused_run_id(api_url: str, timeout_s: float = 120) -> str:
    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    deadline = time.monotonic() + timeout_s
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=paused)
            if runs:
                return str(runs[0].id)
            time.sleep(0.5)
    raise TimeoutError("no flow run paused for approval")


def test_an_engineer_approves_in_the_prefect_ui(prefect_ui, browser):
    api_url = f"{prefect_ui}/api"
    thread, outcome = run_in_background(api_url)
    run_id = paused_run_id(api_url)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{prefect_ui}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").first.click(timeout=60_000)
        form = page.get_by_role("dialog")
        form.get_by_text("Approve dieguard-test version 7").wait_for(timeout=30_000)
        for label in (
            "Approve",
            "Approver",
            "Reason",
            "Reviewed Evaluation Report",
            "Reviewed Fairness Audit",
            "Reviewed Gate Verdicts",
        ):
            assert form.get_by_text(label, exact=False).count() >= 1, label
        switches = form.get_by_role("switch")
        assert switches.count() == 4  # approve and the three checklist items
        for i in range(4):
            switches.nth(i).click()
        approver, reason = form.locator("textarea").all()
        approver.fill("q.engineer")
        reason.fill("figures hold on every fab")
        form.get_by_role("button", name="Submit").click()
        thread.join(timeout=120)
    finally:
        page.close()
    assert not thread.is_alive(), "the flow did not resume after the form was submitted"
    if "error" in outcome:
        raise outcome["error"]
    decision = outcome["decision"]
    assert decision.approved and not decision.automatic
    assert decision.approver == "q.engineer"
    assert decision.reason == "figures hold on every fab"
    assert all(decision.checklist.values())


def test_a_paused_run_left_unanswered_is_rejected_at_its_deadline(prefect_ui):
    thread, outcome = run_in_background(f"{prefect_ui}/api", timeout_s=1)
    thread.join(timeout=120)  # Prefect checks a paused run every 10 s
    assert not thread.is_alive(), "the paused run did not give up at its deadline"
    if "error" in outcome:
        raise outcome["error"]
    decision = outcome["decision"]
    assert not decision.approved and decision.approver == TIMEOUT_APPROVER
    assert decision.reason == f"no decision within {1 / 3600:g} h"
