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

from registry import CHALLENGER, CHAMPION, audit, open_store
from registry.aliases import alias_version
from tests.flows.conftest import serving, wait_for
from tests.flows.test_approval_run import RETRAIN, approval_runs, new_approval_run
from tests.flows.test_retrain import MODEL, OPEN_GATES, RUN_WAIT_S, overrides
from tests.flows.test_suspension import (
    approve_in_the_ui,
    finished,
    processes_once_settled,
    result,
    start,
    suspended,
)

# A whole smoke retrain (and the tiny data set, when this module runs first) before the
# approval: minutes on two busy cores, far more than the suite's default timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * RUN_WAIT_S)]


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
