"""The service under strain, over a real server: at twice the rate it sustains every die is
answered 200, 503 or 504 in time and the service recovers by itself; a hung model gets 504s
within the deadline and 503s past the queue, /readyz fails until the model answers again;
wrong keys are limited; a pod starting while the registry is down serves its last-good
bundle until it returns."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from registry import CHAMPION
from service.loadtest import make_dies, run_load
from service.server_process import missing_from_log
from tests.service.conftest import (
    KEYS,
    inspect_ok,
    live_config,
    register_bundle,
    start_service,
    variant,
    wait_for,
)

DEADLINE_S = 0.5
QUEUE = 4
MODEL_CALL_S = 0.1  # the throttled model: one call of at most THROTTLED_BATCH dies
THROTTLED_BATCH = 2
SUSTAINED = THROTTLED_BATCH / MODEL_CALL_S  # dies a second, at most (attribution takes more)
HANG_S = 10.0  # an answer later than this after its deadline is a hang


@pytest.fixture(scope="module")
def strained(registry_uri, tmp_path_factory):
    """A service with a short deadline, a short queue and three wrong keys a minute."""
    state = tmp_path_factory.mktemp("strained")
    config = live_config(
        registry_uri, state, request_timeout_s=DEADLINE_S, max_queue=QUEUE,
        auth_failures_per_minute=3,
    )  # fmt: skip
    service, stop = start_service(config, registry_uri)
    yield service
    stop()


@pytest.fixture(scope="module")
def throttled(registry_uri, tmp_path_factory):
    """A service whose model answers at most SUSTAINED dies a second."""
    config = live_config(
        registry_uri, tmp_path_factory.mktemp("throttled"), max_batch=THROTTLED_BATCH,
        max_queue=8, request_timeout_s=1.0,
    )  # fmt: skip
    service, stop = start_service(config, registry_uri)
    engine = service.app.state.service.pool.get(CHAMPION).engine
    answers = engine.predict

    def slowly(batch, role):
        time.sleep(MODEL_CALL_S)
        return answers(batch, role)

    engine.predict = slowly
    yield service
    stop()


def test_twice_the_sustainable_rate_is_answered_in_time_and_the_service_recovers(throttled):
    key, dies = KEYS["station"], make_dies(32, seed=7)
    burst = asyncio.run(
        run_load(throttled.url, key, 2 * SUSTAINED, 5.0, stations=4, dies=dies, timeout_s=60)
    )
    print(f"\n{burst.format()}")
    kinds = {o.kind for o in burst.outcomes}
    assert kinds <= {"ok", "503", "504"}, burst.errors  # none hung, none failed otherwise
    assert burst.ok > 0 and burst.errors  # the model was overloaded, and still served
    deadline_s = throttled.config.request_timeout_s
    assert max(o.latency_ms for o in burst.outcomes) < 1000 * (deadline_s + HANG_S)
    assert all(o.retry_after for o in burst.outcomes if o.kind == "503")
    assert throttled.app.state.service.log.flush(30)
    assert missing_from_log(throttled.config.log_url, burst.acknowledged) == []
    after = asyncio.run(
        run_load(throttled.url, key, SUSTAINED / 4, 2.0, stations=2, dies=dies,
                 first_request=burst.sent)
    )  # fmt: skip
    assert after.ok == after.sent > 0  # by itself: no restart, no reset
    assert throttled.client(None).get("/readyz").status_code == 200


def post(service, die) -> tuple[int, float, dict]:
    data, files = die.form()
    started = time.monotonic()
    with service.client("station") as client:
        response = client.post("/api/v1/inspect", data=data, files=files)
    return response.status_code, time.monotonic() - started, dict(response.headers)


def test_a_hung_model_is_answered_within_the_deadline_and_recovers(strained, dies):
    champion = strained.app.state.service.pool.get(CHAMPION)
    gate, answers = threading.Event(), champion.engine.predict
    champion.engine.predict = lambda batch, role: (gate.wait(30), answers(batch, role))[1]
    try:
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda d: post(strained, d), dies[40:52]))
        ready = strained.client(None).get("/readyz")
    finally:
        gate.set()
        del champion.engine.predict
    statuses = sorted(status for status, _, _ in results)
    assert set(statuses) == {503, 504}, statuses  # none hung, none lost in silence
    assert all(seconds < DEADLINE_S + 2.0 for _, seconds, _ in results)
    assert all(h.get("retry-after") for status, _, h in results if status == 503)
    assert ready.status_code == 503 and ready.json() == {"ready": False, "status": "not ready"}
    wait_for(lambda: strained.client(None).get("/readyz").status_code == 200)
    assert inspect_ok(strained, dies[52])["decided_by"] == "champion"


def test_wrong_keys_from_one_client_are_limited(strained, dies):
    """Last in this module: it locks this client out for a minute."""
    wrong = strained.client(None, headers={"X-API-Key": "guess"})
    assert [wrong.get("/api/v1/inspections/X").status_code for _ in range(3)] == [401] * 3
    locked = wrong.get("/api/v1/inspections/X")
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert strained.client("operator").get("/api/v1/inspections/X").status_code == 429
    assert strained.client(None).get("/readyz").status_code == 200  # probes go on


def test_a_pod_starting_while_the_registry_is_down_serves_its_last_good_bundle(
    service_bundle, dies, tmp_path
):
    registry, away = tmp_path / "registry", tmp_path / "registry-away"
    uri = f"sqlite:///{registry / 'mlflow.db'}"
    register_bundle(uri, service_bundle)
    config = live_config(uri, tmp_path / "state")
    service, stop = start_service(config, uri)
    stop()  # it downloaded and remembered v1
    register_bundle(uri, variant(service_bundle, tmp_path / "v2", 0.0))  # v2 is champion now
    registry.rename(away)
    registry.write_text("the registry's volume is gone")  # unreachable, cannot be created
    service, stop = start_service(config, uri)
    try:
        status = service.client("operator").get("/readyz").json()
        assert status["source"].startswith("last-good bundle v1") and status["ready"]
        assert inspect_ok(service, dies[0])["model_version"] == "1"
        registry.unlink()
        away.rename(registry)  # the registry is back
        wait_for(lambda: inspect_ok(service, dies[1])["model_version"] == "2", timeout_s=60)
        assert service.client("operator").get("/readyz").json()["source"] == "registry"
    finally:
        stop()
