"""The real weekly retrain from its deployment, against a real Prefect server (API and UI)
and a real MLflow store: it trains on the smoke config, registers its candidate and ends;
the candidate's approve-candidate run waits suspended, holding no process, until a quality
engineer submits the form in the Prefect UI; the decision lands in the registry.

Both flows are the real ones, served from a child process as their deployments. The
registry starts empty, so the retrain first installs the CNN as the champion to beat. The
missed-deadline path of the same approval run is test_approval_run's (a stand-in retrain in
front of the real approve-candidate flow): its outcome does not depend on the training.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from prefect.client.orchestration import get_client
from prefect.settings import temporary_settings

from registry import CHALLENGER, CHAMPION, audit, open_store
from registry.aliases import alias_version
from tests.flows.conftest import in_thread, serving, wait_for
from tests.flows.test_approval_run import RETRAIN, approval_runs, new_approval_run
from tests.flows.test_retrain import MODEL, OPEN_GATES, RUN_WAIT_S, overrides
from tests.flows.test_suspension import (
    finished,
    processes_once_settled,
    result,
    start,
    suspended,
)

# A whole smoke retrain (and the tiny data set, when this module runs first) before the
# approval: minutes on two busy cores, far more than the suite's default timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * RUN_WAIT_S)]


def approve_in_the_ui(
    browser, ui: str, settings: dict, run_id: str, heading: str, approver: str, reason: str
):
    """Open the suspended run in the Prefect UI, tick approve and every checklist item, sign
    the form and submit it; the run's final state.

    The UI closes the form once the server has accepted it. A form still open a minute after
    its Submit (a busy page can draw it again under the clicks) is filled and submitted once
    more; a form that stays open then fails with what it shows and what the page logged."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    try:
        page.goto(f"{ui}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").first.click(timeout=60_000)
        form = page.get_by_role("dialog")
        form.get_by_text(heading).wait_for(timeout=30_000)
        for attempt in range(2):
            fill_and_submit(form, approver, reason)
            try:
                expect(form).to_be_hidden(timeout=60_000)
                break
            except AssertionError:
                if not still_suspended(settings, run_id):  # taken: the page is just slow
                    break
                if attempt:
                    shown = form.inner_text() if form.count() else ""
                    raise AssertionError(
                        f"the approval form stayed open: {shown!r}; page log: {console[-20:]}"
                    ) from None
        # the runner then starts the resumed run in a new process (it imports the flows,
        # torch and MLflow)
        return wait_for(settings, run_id, finished)
    finally:
        page.close()


def still_suspended(settings: dict, run_id: str) -> bool:
    def read():
        with temporary_settings(settings), get_client(sync_client=True) as client:
            return suspended(client.read_flow_run(run_id).state)

    return in_thread(read)


def fill_and_submit(form, approver: str, reason: str) -> None:
    """Switch on approve and the three checklist items, sign, give the reason, submit."""
    switches = form.get_by_role("switch")
    for i in range(switches.count()):
        if not switches.nth(i).is_checked():
            switches.nth(i).click()
        expect(switches.nth(i)).to_be_checked()  # the form took the click
    approver_box, reason_box = form.locator("textarea").all()
    approver_box.fill(approver)
    reason_box.fill(reason)
    expect(approver_box).to_have_value(approver)
    expect(reason_box).to_have_value(reason)
    form.get_by_role("button", name="Submit").click()


@pytest.fixture(scope="module")
def served(prefect_ui, tmp_path_factory):
    """The real retrain and approval flows, served from a child process; yields the UI's
    URL and the client settings."""
    code = "from tests.flows.served import serve_real_retrain_and_approval as s; s()"
    with serving(code, prefect_ui, tmp_path_factory.mktemp("results")) as settings:
        yield prefect_ui, settings


def test_a_real_retrain_waits_without_a_process_and_is_approved_in_the_ui(
    served, browser, tiny_data, tmp_path
):
    ui, settings = served
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"  # empty: the CNN is installed first
    known = approval_runs(settings)
    retrain = start(
        settings,
        RETRAIN,
        config="configs/smoke.yaml",
        overrides=overrides(tiny_data, tmp_path, "ui", *OPEN_GATES),
        model_name=MODEL,
        tracking_uri=uri,
    )
    state = wait_for(settings, retrain, finished, RUN_WAIT_S)  # it trains: minutes here
    assert state.is_completed() and state.name == "Completed", state.message
    approval = new_approval_run(settings, known)
    assert result(settings, state)["approval_run"] == approval
    wait_for(settings, approval, suspended)
    assert processes_once_settled(approval) == []  # the waiting approval holds no process
    assert processes_once_settled(retrain) == []
    client = open_store(uri).client
    assert alias_version(client, MODEL, CHAMPION) == "1"  # the CNN
    assert alias_version(client, MODEL, CHALLENGER) == "2"
    assert audit(client, MODEL, "2")["approval"] is None  # waiting, nothing decided

    heading = f"Approve {MODEL} version 2"
    state = approve_in_the_ui(
        browser, ui, settings, approval, heading, "q.engineer", "figures hold on every fab"
    )
    assert state.is_completed() and state.name == "Completed", state.message
    decision = audit(client, MODEL, "2")["approval"]
    assert decision["decision"] == "approved" and not decision["automatic"]
    assert decision["approver"] == "q.engineer"
    assert decision["reason"] == "figures hold on every fab"
    assert all(decision["checklist"].values()) and len(decision["checklist"]) == 3
    assert alias_version(client, MODEL, CHALLENGER) == "2"  # held for its rollout
    assert alias_version(client, MODEL, CHAMPION) == "1"
