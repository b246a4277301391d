"""The model card: a version's description, readable in the MLflow UI alone (checked in a
real `mlflow server` with Chromium)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from registry import open_store, record_approval, register, reject
from registry.model_card import write_model_card
from tests.conftest import free_port
from tests.registry.fake_run import KIND, build_run, log_fake_run

MODEL = "dieguard-card"
FIGURES = {
    "escape": {"k": 1, "n": 350, "rate": 1 / 350, "lo": 0.0001, "hi": 0.0158},
    "fpr": {"k": 210, "n": 3650, "rate": 0.0575, "lo": 0.0502, "hi": 0.0656},
    "macro_f1": 0.912,
}
GATE = {
    "passed": True,
    "checks": {"escape_upper": {"passed": True, "value": 0.0158, "rule": "<", "limit": 0.02}},
}


@pytest.fixture(scope="module")
def card_store(tmp_path_factory):
    """A SQLite store with one approved version (v1) and one rejected version (v2)."""
    root = tmp_path_factory.mktemp("card")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    store = open_store(uri, root / "artifacts")
    logged = log_fake_run(store, build_run(root))
    run = logged.run_id
    lineage = {
        "gate": GATE,
        "test_figures": FIGURES,
        "threshold": 0.31,
        "validation_report": f"runs:/{run}/data_docs/index.html",
        "evaluation_report": f"runs:/{run}/evaluation/report.html",
    }
    client = store.client
    good = register(client, MODEL, logged.serving[KIND], lineage)
    record_approval(client, MODEL, good, True, "qe.lin", "all green", False, {"gates": True})
    bad = register(client, MODEL, logged.models[f"{KIND}-fp32"], lineage)
    reject(client, MODEL, bad, "qe.lin", "fab C escapes")
    for version in (good, bad):
        write_model_card(client, MODEL, version)
    return uri, root


def test_the_card_holds_figures_gates_approval_and_artifact_uris(card_store):
    uri, root = card_store
    card = open_store(uri).client.get_model_version(MODEL, "1").description
    assert "**May serve:** yes" in card
    assert "| escape rate | 0.29% (1/350) | 0.01% - 1.58% |" in card
    assert "**Release gates:** passed" in card and "| escape_upper | pass |" in card
    assert "**Approval:** approved by qe.lin" in card
    assert "- Data Docs: `runs:/" in card and "- evaluation report: `runs:/" in card
    assert str(root) not in card  # no path on a worker's disk
    rejected = open_store(uri).client.get_model_version(MODEL, "2").description
    assert "**May serve:** no, rejected by qe.lin: fab C escapes" in rejected


@pytest.fixture(scope="module")
def mlflow_ui(card_store):
    """`mlflow server` (UI and API) over the card store on a free loopback port."""
    uri, root = card_store
    port = free_port()
    log = (root / "mlflow-server.log").open("w")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(  # its own group: the server's workers stop with it
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, server)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _wait_up(url: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow server exited"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} did not answer in {timeout_s} s")


def test_the_mlflow_ui_renders_the_card(mlflow_ui, browser):
    page = browser.new_page()
    try:
        page.goto(f"{mlflow_ui}/#/models/{MODEL}/versions/1", timeout=60_000)
        table = page.locator("table", has_text="escape rate").first
        table.wait_for(timeout=60_000)
        assert "0.29% (1/350)" in table.inner_text()
        approval = page.locator("strong", has_text="Approval:").first
        assert approval.is_visible()
        assert "**" not in page.locator("body").inner_text()  # rendered, not raw markdown
    finally:
        page.close()
