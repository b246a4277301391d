"""The running service follows the registry's rollout state: version, mode and share."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry import CHALLENGER, CHAMPION, audit, open_store, reject
from registry.rollout_state import clear_rollout, set_rollout
from tests.service.conftest import (
    MODEL_NAME,
    live_config,
    register_bundle,
    start_service,
    variant,
    wait_for,
)
from tests.service.conftest import (
    inspect_ok as inspect,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def rollout_service(service_bundle, tmp_path):
    """A service over its own registry: champion v1, v2 (flags every die), v3 the challenger
    alias (another operating point): the rollout names v2, not the alias."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_bundle(uri, service_bundle)
    register_bundle(uri, variant(service_bundle, tmp_path / "v2", 0.0), promote_it=False)
    register_bundle(uri, variant(service_bundle, tmp_path / "v3", 0.5), promote_it=False)
    service, stop = start_service(live_config(uri, tmp_path / "state"), uri)
    yield service
    stop()


def decided_by(service, die, role: str) -> dict | None:
    body = inspect(service, die)
    return body if body["decided_by"] == role else None


def routing(admin, mode: str, candidate: bool) -> dict | None:
    status = admin.get("/api/v1/admin/routing").json()
    ok = status["routing"]["mode"] == mode and ("candidate" in status["models"]) == candidate
    return status if ok else None


def test_the_service_follows_the_rollout_state(rollout_service, dies):
    client = open_store(rollout_service.tracking_uri).client
    admin = rollout_service.client("admin")
    assert inspect(rollout_service, dies[0])["decided_by"] == "champion"

    set_rollout(client, MODEL_NAME, "2", "canary", 1.0, "100%", "service test")
    body = wait_for(lambda: decided_by(rollout_service, dies[1], "candidate"))
    assert body["model_version"] == "2" and body["route"] == "canary" and body["flagged"]
    assert admin.get("/api/v1/admin/routing").json()["routing"] == {"mode": "canary", "share": 1.0}

    # An admin change holds until the rollout state next changes.
    admin.put("/api/v1/admin/routing", json={"mode": "off"})
    time.sleep(1.5)  # three syncs
    assert inspect(rollout_service, dies[2])["decided_by"] == "champion"
    set_rollout(client, MODEL_NAME, "2", "shadow", 0.0, "shadow", "service test")
    status = wait_for(lambda: routing(admin, "shadow", candidate=True))
    assert status["models"]["candidate"]["version"] == "2"
    body = inspect(rollout_service, dies[3])
    assert body["route"] == "shadow" and body["decided_by"] == "champion"

    # A cleared rollout (promotion, rollback) leaves the champion alone.
    clear_rollout(client, MODEL_NAME, "service test over")
    wait_for(lambda: routing(admin, "off", candidate=False))
    assert inspect(rollout_service, dies[4])["route"] == "off"


def test_no_route_leads_to_a_version_that_may_not_serve(rollout_service, service_bundle, dies):
    client = open_store(rollout_service.tracking_uri).client
    admin = rollout_service.client("admin")
    reject(client, MODEL_NAME, "3", "qe.lin", "escapes on fab C")
    assert client.get_registered_model(MODEL_NAME).aliases == {CHAMPION: 1}
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, "3")  # a hand edit
    refused = admin.put("/api/v1/admin/routing", json={"mode": "canary", "share": 1.0})
    assert refused.status_code == 409 and "rejected by qe.lin" in refused.json()["detail"]
    folder = variant(service_bundle, rollout_service.config.state_dir.parent / "v4", 0.25)
    register_bundle(rollout_service.tracking_uri, folder, promote_it=False, approve=False)
    refused = admin.put("/api/v1/admin/routing", json={"mode": "shadow"})
    assert refused.status_code == 409 and "no approval on record" in refused.json()["detail"]
    status = admin.get("/api/v1/admin/routing").json()
    assert status["routing"]["mode"] == "off" and "candidate" not in status["models"]
    assert decided_by(rollout_service, dies[0], "champion")


@pytest.mark.slow  # the rollout's own Prefect server starts in the killed process
def test_a_lapsed_lease_sends_every_die_back_to_the_champion(rollout_service, tmp_path, dies):
    """The worker running the rollout's steps is killed mid-stage: once the lease the last
    step renewed lapses, the champion decides again."""
    lease_s = 20.0  # longer than a step takes on a busy machine
    settings = ["shadow_window_s=0", "stages=[1.0]", "check_interval_s=0.5", f"lease_s={lease_s}"]
    cli = [sys.executable, "-m", "dieguard.cli", "rollout"]
    where = ["--tracking-uri", rollout_service.tracking_uri, "--model-name", MODEL_NAME]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    start = subprocess.run(
        [*cli, "start", "--version", "2", *where, *settings], cwd=ROOT, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert start.returncode == 0, start.stdout + start.stderr
    step = shlex.join([*cli, "step", *where, "--log-url", rollout_service.config.log_url])
    out = (tmp_path / "steps.log").open("w")
    worker = subprocess.Popen(
        ["bash", "-c", f"while true; do {step}; sleep 0.5; done"], stdout=out,
        stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: decided_by(rollout_service, dies[0], "candidate"), timeout_s=300)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    killed = time.monotonic()
    wait_for(lambda: decided_by(rollout_service, dies[1], "champion"), timeout_s=lease_s + 10)
    assert time.monotonic() - killed < lease_s + 2  # the lease and a few watcher syncs
    client = open_store(rollout_service.tracking_uri).client
    last = audit(client, MODEL_NAME, "2")["events"][-1]
    assert last["kind"] == "stalled" and last["detail"]["stage"] == "100%"
    assert rollout_service.client("admin").get("/api/v1/admin/routing").json()["routing"] == {
        "mode": "off",
        "share": 0.0,
    }
