"""Model lifecycle in the running service: hot reload, shadow and canary routing, outages."""

from __future__ import annotations

import shutil
import threading

import pytest

from registry import open_store, promote
from service.embedded import ServiceNotReadyError
from service.inspection_log import InspectionLog
from service.spool import Spool
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
def own_service(service_bundle, tmp_path):
    """A service over its own registry (champion v1), for tests that move aliases."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_bundle(uri, service_bundle)
    service, stop = start_service(live_config(uri, tmp_path / "state"), uri)
    yield service
    stop()


def test_a_moved_champion_alias_is_served_without_restart(own_service, service_bundle, dies):
    assert inspect(own_service, dies[0])["model_version"] == "1"
    flag_all = variant(service_bundle, own_service.config.state_dir.parent / "v2", 0.0)
    version = register_bundle(own_service.tracking_uri, flag_all)
    assert version == "2"
    body = wait_for(lambda: (b := inspect(own_service, dies[3]))["model_version"] == "2" and b)
    assert body["flagged"]  # the new version's threshold flags every die
    ready = own_service.client("operator").get("/readyz").json()
    assert ready["models"]["champion"]["version"] == "2"


def test_dies_in_flight_while_the_champion_is_replaced_are_all_answered(
    own_service, service_bundle, dies
):
    answers, stop = [], threading.Event()

    def station(offset: int) -> None:
        data = dies[offset:] + dies[:offset]
        while not stop.is_set():
            for die in data[:8]:
                form, files = die.form()
                with own_service.client("station") as client:
                    response = client.post("/api/v1/inspect", data=form, files=files)
                answers.append((response.status_code, response.json().get("model_version")))

    stations = [threading.Thread(target=station, args=(i,)) for i in range(3)]
    for thread in stations:
        thread.start()
    try:
        for version, threshold in (("2", 0.0), ("3", 1.0)):
            dest = own_service.config.state_dir.parent / version
            folder = variant(service_bundle, dest, threshold)
            assert register_bundle(own_service.tracking_uri, folder) == version
            wait_for(lambda v=version: answers and answers[-1][1] == v, timeout_s=60)
    finally:
        stop.set()
        for thread in stations:
            thread.join()
    assert {code for code, _ in answers} == {200}, [a for a in answers if a[0] != 200][:3]
    assert {"1", "2", "3"} <= {version for _, version in answers}


def test_shadow_mode_logs_both_decisions_and_the_champion_decides(
    own_service, service_bundle, dies
):
    flag_all = variant(service_bundle, own_service.config.state_dir.parent / "cand", 0.0)
    assert register_bundle(own_service.tracking_uri, flag_all, promote_it=False) == "2"
    admin = own_service.client("admin")
    status = admin.put("/api/v1/admin/routing", json={"mode": "shadow"}).json()
    assert status["models"]["candidate"]["version"] == "2"
    die = dies[5]
    body = inspect(own_service, die)
    assert body["decided_by"] == "champion" and body["route"] == "shadow"
    assert body["model_version"] == "1"
    record = wait_for(lambda: _decisions(own_service, die.die_id, 2))
    by_role = {d["role"]: d for d in record["decisions"]}
    assert by_role["candidate"]["model_version"] == "2" and by_role["candidate"]["flagged"]
    assert by_role["champion"]["model_version"] == "1"

    admin.put("/api/v1/admin/routing", json={"mode": "canary", "share": 1.0})
    body = inspect(own_service, dies[6])
    assert body["decided_by"] == "candidate" and body["model_version"] == "2"
    assert body["route"] == "canary" and body["flagged"]

    status = admin.put("/api/v1/admin/routing", json={"mode": "off"}).json()
    assert "candidate" not in status["models"]
    assert inspect(own_service, dies[7])["decided_by"] == "champion"


def _decisions(service, die_id: str, n: int):
    with service.client("operator") as client:
        response = client.get(f"/api/v1/inspections/{die_id}")
    record = response.json() if response.status_code == 200 else None
    return record if record and len(record["decisions"]) == n else None


def test_the_answer_does_not_wait_for_the_shadow_model(service_bundle, tmp_path, dies):
    """The challenger is held inside its model call: the station still gets its 200, a crash
    at that moment leaves the inspection as answered, and the held decision is added later."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_bundle(uri, service_bundle)
    register_bundle(uri, variant(service_bundle, tmp_path / "cand", 0.0), promote_it=False)
    config = live_config(uri, tmp_path / "state", route_mode="shadow", request_timeout_s=120.0)
    service, stop = start_service(config, uri)
    entered, released = threading.Event(), threading.Event()
    try:
        candidate = wait_for(lambda: service.app.state.service.pool.get("candidate"))
        predict = candidate.engine.predict

        def held(batch, role):
            entered.set()
            released.wait(120)
            return predict(batch, role)

        candidate.engine.predict = held  # the challenger's model, slowed at will
        die = dies[5]
        data, files = die.form()
        with service.client("station") as client:  # 30 s: far less than the hold
            response = client.post("/api/v1/inspect", data=data, files=files)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["decided_by"] == "champion" and body["route"] == "shadow"
        assert entered.wait(20) and not released.is_set()  # scored after the answer
        crashed = tmp_path / "crashed"  # what a crash at this moment leaves on disk
        shutil.copytree(config.state_dir / "spool", crashed / "spool")
        released.set()
        record = wait_for(lambda: _decisions(service, die.die_id, 2))
    finally:
        released.set()
        stop()
    by_role = {d["role"]: d for d in record["decisions"]}
    assert by_role["candidate"]["model_version"] == "2" and by_role["candidate"]["flagged"]
    assert record["inspection_id"] == body["inspection_id"]

    log = InspectionLog(f"sqlite:///{crashed / 'log.db'}", spool=Spool(crashed / "spool"))
    assert log.replay() == 1
    with log:
        assert log.flush(10)
        replayed = log.get(die.die_id)
    assert replayed["inspection_id"] == body["inspection_id"]
    assert [d["role"] for d in replayed["decisions"]] == ["champion"]
    for name in ("defect_class", "confidence", "flagged", "model_version", "explanation"):
        assert replayed[name] == body[name]


def test_a_promoted_candidate_stops_being_shadowed(own_service, service_bundle, dies):
    other = variant(service_bundle, own_service.config.state_dir.parent / "cand", 0.5)
    version = register_bundle(own_service.tracking_uri, other, promote_it=False)
    admin = own_service.client("admin")
    admin.put("/api/v1/admin/routing", json={"mode": "shadow"})
    client = open_store(own_service.tracking_uri).client
    promote(client, MODEL_NAME, version, "rollout done", "1")
    wait_for(lambda: inspect(own_service, dies[0])["model_version"] == version)
    status = wait_for(lambda: (s := admin.get("/api/v1/admin/routing").json())["models"] and s)
    assert "candidate" not in status["models"]


def test_inspection_goes_on_while_the_log_database_is_down(registry_uri, tmp_path, dies):
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    config = live_config(registry_uri, tmp_path / "state", database_url=unreachable)
    service, stop = start_service(config, registry_uri)
    try:
        assert inspect(service, dies[0])["model_version"] == "1"
        log = wait_for(lambda: (s := service.client("operator").get("/readyz").json()["log"])
                       ["failures"] and s)  # fmt: skip
        assert log["database_ok"] is False and log["buffered"] >= 1
        with service.client("operator") as client:
            feedback = {"die_id": dies[0].die_id, "verdict": "confirm"}
            assert client.post("/api/v1/feedback", json=feedback).status_code == 503
    finally:
        stop()


def test_no_champion_means_not_ready(tmp_path, dies):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    open_store(uri)
    config = live_config(uri, tmp_path / "state")
    with pytest.raises(ServiceNotReadyError, match="did not become ready"):
        start_service(config, uri, ready_timeout_s=3)
