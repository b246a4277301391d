"""The drift trigger as Prefect declares it: prefect.yaml's trigger and concurrency limit on
a served stand-in `weekly-retrain` (a real server, its automations and a runner). Sustained
drift events while a retrain runs start no second one; one after it ends starts one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.events import emit_event
from prefect.events.worker import EventsWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.monitor import SUSTAINED_EVENT
from tests.flows.conftest import in_thread, serving, wait_for
from tests.flows.test_suspension import start

DEPLOYMENT = "weekly-retrain/weekly-retrain"
AUTOMATION = "weekly-retrain on sustained drift"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(prefect_ui, tmp_path_factory):
    code = "from tests.flows.served import serve_weekly_retrain; serve_weekly_retrain()"
    with serving(code, prefect_ui, tmp_path_factory.mktemp("runner")) as settings:
        yield prefect_ui, settings


def sustained_drift(settings: dict) -> None:
    def emit():
        with temporary_settings(settings):
            emit_event(SUSTAINED_EVENT, resource={"prefect.resource.id": "dieguard.drift.test"},
                       payload={"families": ["process"], "hours": 6})  # fmt: skip
            EventsWorker.drain_all()

    in_thread(emit)


def runs_of_the_deployment(settings: dict, known: set[str], count: int, timeout_s=90) -> list:
    """The deployment's runs not in `known`, once there are `count` of them, all final."""

    def poll():
        with temporary_settings(settings), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(DEPLOYMENT)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(not_any_=list(known)))
                )
                new = [r for r in runs if r.deployment_id == deployment.id]
                if len(new) >= count and all(r.state.is_final() for r in new):
                    return new
                time.sleep(1)
        raise TimeoutError(f"expected {count} new final runs of {DEPLOYMENT}")

    return in_thread(poll)


def test_drift_events_during_a_retrain_start_no_second_run(served, tmp_path):
    _, settings = served
    release = tmp_path / "release"
    held = start(settings, DEPLOYMENT, release=str(release))
    wait_for(settings, held, lambda state: state.is_running())
    for _ in range(3):
        sustained_drift(settings)
    during = runs_of_the_deployment(settings, {held}, 3)
    assert len(during) == 3 and all(r.state.is_cancelled() for r in during)
    assert wait_for(settings, held, lambda state: True).is_running()  # still the only one
    release.touch()
    assert wait_for(settings, held, lambda state: state.is_final()).is_completed()
    sustained_drift(settings)
    known = {held, *(str(r.id) for r in during)}
    after = runs_of_the_deployment(settings, known, 1)
    assert len(after) == 1 and after[0].state.is_completed()


def test_the_automation_is_listed_by_the_cli_and_in_the_ui(served, browser):
    ui, settings = served
    env = os.environ | {"PREFECT_API_URL": settings[PREFECT_API_URL], "COLUMNS": "400"}
    deadline = time.monotonic() + 120  # the runner registers the deployment as it starts
    while True:
        listed = subprocess.run(
            [sys.executable, "-m", "prefect", "automation", "ls"],
            env=env, capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        if AUTOMATION in listed or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert AUTOMATION in listed
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{ui}/automations")
        page.get_by_text(AUTOMATION).first.wait_for(timeout=60_000)
    finally:
        page.close()
