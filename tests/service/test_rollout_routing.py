"""The running service follows the registry's rollout state: version, mode and share."""

from __future__ import annotations

import time

import pytest

from registry import open_store
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
