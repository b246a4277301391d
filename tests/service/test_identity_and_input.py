"""Identity comes from the key alone, wrong keys are limited, free text is capped, and a
process log that is mostly missing is refused, over the real server."""

from __future__ import annotations

import json

from service.auth import FailedAttempts
from tests.service.conftest import inspect_ok


def test_feedback_records_the_keys_holder_not_a_given_name(live_service, dies):
    die = dies[30]
    inspect_ok(live_service, die)
    feedback = {"die_id": die.die_id, "verdict": "confirm", "operator": "someone-else"}
    with live_service.client("operator") as client:
        response = client.post("/api/v1/feedback", json=feedback)
    assert response.status_code == 201, response.text
    assert response.json()["operator"] == "operator-1"


def test_free_text_is_capped(live_service, dies):
    die = dies[31]
    inspect_ok(live_service, die)
    feedback = {"die_id": die.die_id, "verdict": "confirm", "comment": "x" * 2001}
    with live_service.client("operator") as client:
        long_comment = client.post("/api/v1/feedback", json=feedback)
        long_id = client.post("/api/v1/feedback", json=feedback | {"die_id": "D" * 129})
    data, files = die.form(metadata=json.dumps({"lot_id": "L" * 129}))
    with live_service.client("station") as client:
        long_lot = client.post("/api/v1/inspect", data=data, files=files)
    assert long_comment.status_code == 422 and long_id.status_code == 422
    assert long_lot.status_code == 422 and "at most 128" in long_lot.text


def test_a_process_log_missing_most_parameters_is_refused_naming_them(live_service, dies):
    die = dies[32]
    names = sorted(die.process_log)
    half = {k: die.process_log[k] for k in names[: len(names) // 2 - 1]}
    with live_service.client("station") as client:
        for given in ({}, half):
            data, files = die.form(process_log=json.dumps(given))
            response = client.post("/api/v1/inspect", data=data, files=files)
            assert response.status_code == 422, response.text
            assert "parameters" in response.json()["detail"]
            assert names[-1] in response.json()["detail"]  # the missing ones are named


def test_readyz_without_a_key_says_only_the_status(live_service):
    public = live_service.client(None).get("/readyz")
    wrong = live_service.client(None, headers={"X-API-Key": "not-a-key"}).get("/readyz")
    assert public.json() == {"ready": True, "status": "ready"}
    assert wrong.json() == {"ready": True, "status": "ready"}
    detail = live_service.client("admin").get("/readyz").json()
    assert {"models", "log", "source", "model_answering"} <= set(detail)


def test_wrong_keys_are_limited_per_client(monkeypatch):
    attempts = FailedAttempts(limit=3, window_s=60.0)
    for _ in range(3):
        assert attempts.retry_after("10.0.0.1") == 0
        attempts.failed("10.0.0.1")
    assert 59 < attempts.retry_after("10.0.0.1") <= 60
    assert attempts.retry_after("10.0.0.2") == 0  # another client is not held back
    clock = [1000.0]
    monkeypatch.setattr("service.auth.time.monotonic", lambda: clock[0])
    late = FailedAttempts(limit=1, window_s=60.0)
    late.failed("c")
    assert late.retry_after("c") == 60
    clock[0] += 61
    assert late.retry_after("c") == 0  # a minute later it may try again
