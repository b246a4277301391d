"""The inspection API over a real uvicorn server: contract, batching, bad input, auth, feedback."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dieguard.cli import main
from model.contract import read_split
from model.schema import CLASS_NAMES, parameter_names
from monitoring.config import MonitorConfig
from monitoring.history import History
from monitoring.windows import window_report
from service.similar import index_split
from tests.service.conftest import KEYS


def inspect(service, die, role="station", **changes):
    data, files = die.form(**changes)
    with service.client(role) as client:
        return client.post("/api/v1/inspect", data=data, files=files)


def test_inspect_returns_the_decision_with_its_reasons(live_service, dies):
    die = dies[0]
    response = inspect(live_service, die)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["die_id"] == die.die_id and body["wafer_id"] == die.wafer_id
    assert body["class_name"] == CLASS_NAMES[body["defect_class"]]
    assert abs(sum(body["probabilities"].values()) - 1.0) < 1e-3
    assert body["defect_probability"] == pytest.approx(1 - body["probabilities"]["good"], abs=1e-3)
    assert 0.0 <= body["confidence"] <= 1.0 and body["latency_ms"] > 0
    assert body["model_version"] == "1" and body["decided_by"] == "champion"
    assert body["route"] == "off" and body["explanation"]
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["attention_heatmap"])))
    assert heatmap.format == "PNG" and heatmap.size == (256, 256)
    assert heatmap.has_transparency_data  # a layer to draw over the die, decoding to RGBA
    given = set(die.process_log)
    assert set(body["missing_parameters"]) == set(parameter_names()) - given
    for row in body["anomalous_parameters"]:
        assert abs(row["z"]) > 2.0 and row["name"] in given


def test_the_inspection_is_logged_with_its_decisions(live_service, dies):
    die = dies[1]
    body = inspect(live_service, die).json()
    with live_service.client("operator") as client:
        record = client.get(f"/api/v1/inspections/{die.die_id}").json()
    assert record["inspection_id"] == body["inspection_id"]
    assert record["defect_class"] == body["defect_class"]
    assert record["operator_notes"] == die.note
    assert [d["role"] for d in record["decisions"]] == ["champion"]
    assert record["image_ref"] and record["process_log"] == pytest.approx(die.process_log)


def test_concurrent_dies_are_batched_and_get_the_single_call_answers(live_service, dies):
    sample = dies[2:18]
    alone = [inspect(live_service, d).json() for d in sample]
    before = batch_counts(live_service)
    with ThreadPoolExecutor(len(sample)) as pool:
        together = list(pool.map(lambda d: inspect(live_service, d).json(), sample))
    calls, batched = (a - b for a, b in zip(batch_counts(live_service), before))
    occluded = sum(len(d["anomalous_parameters"]) for d in together if d["flagged"])
    assert batched == len(sample) + occluded  # the attribution's copies go through the batcher
    assert calls < batched  # some calls held several dies
    for one, many in zip(alone, together):
        assert many["defect_class"] == one["defect_class"]
        for name, p in one["probabilities"].items():
            assert many["probabilities"][name] == pytest.approx(p, abs=1e-4)


def batch_counts(service) -> tuple[float, float]:
    """(model calls, dies in them) of the champion so far, from /metrics."""
    text = service.client(None).get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith("dieguard_batch_size_") and 'role="champion"' in line:
            name, value = line.split("{")[0], float(line.rsplit(" ", 1)[1])
            values[name] = value
    return values.get("dieguard_batch_size_count", 0.0), values.get("dieguard_batch_size_sum", 0.0)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


BAD_REQUESTS = {
    "wrong image size": ({"image": png(np.zeros((64, 64, 3), np.uint8))}, 422, "64x64"),
    "not an image": ({"image": b"GIF89a garbage"}, 415, "PNG or JPEG"),
    "corrupt image": ({"image": b"\x89PNG\r\n\x1a\n" + b"\0" * 100}, 415, ""),
    "malformed JSON": ({"process_log": "{temperature"}, 400, "not valid JSON"),
    "unknown parameter": ({"process_log": json.dumps({"flux": 1})}, 422, "flux"),
    "non-numeric value": ({"process_log": json.dumps({"rf_power": "high"})}, 422, "rf_power"),
    "NaN value": ({"process_log": '{"rf_power": NaN}'}, 422, "finite"),
    "bad die id": ({"die_id": "../../etc/passwd"}, 422, "die_id"),
    "bad metadata": ({"metadata": json.dumps({"fab": "Q"})}, 422, "fab"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_with_the_reason(live_service, dies, case):
    changes, status, reason = BAD_REQUESTS[case]
    response = inspect(live_service, dies[0], **changes)
    assert response.status_code == status, response.text
    assert reason in json.dumps(response.json()["detail"])


def test_missing_fields_are_named(live_service):
    with live_service.client() as client:
        response = client.post("/api/v1/inspect", data={"die_id": "D1"})
    assert response.status_code == 422
    missing = {e["loc"][-1] for e in response.json()["detail"]}
    assert {"image", "process_log", "wafer_id"} <= missing


def test_an_oversized_request_is_refused(live_service, dies):
    huge = b"\0" * (live_service.config.max_request_bytes + 1)
    response = inspect(live_service, dies[0], image=huge)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "role", "status"),
    [
        ("/api/v1/inspect", None, 401),
        ("/api/v1/inspect", "operator", 403),
        ("/api/v1/feedback", "station", 403),
        ("/api/v1/admin/routing", "operator", 403),
    ],
)
def test_keys_are_checked(live_service, dies, path, role, status):
    data, files = dies[0].form()
    with live_service.client(role) as client:
        if path.endswith("routing"):
            response = client.put(path, json={"mode": "off"})
        elif path.endswith("feedback"):
            response = client.post(path, json={"die_id": dies[0].die_id, "verdict": "confirm"})
        else:
            response = client.post(path, data=data, files=files)
    assert response.status_code == status


def test_a_wrong_key_is_refused(live_service, dies):
    data, files = dies[0].form()
    with live_service.client(None, headers={"X-API-Key": KEYS["station"] + "x"}) as client:
        assert client.post("/api/v1/inspect", data=data, files=files).status_code == 401


def test_feedback_is_stored_once(live_service, dies):
    die = dies[20]
    assert inspect(live_service, die).status_code == 200
    feedback = {"die_id": die.die_id, "verdict": "override", "true_class": 2, "comment": "scratch"}
    with live_service.client("operator") as client:
        first = client.post("/api/v1/feedback", json=feedback)
        again = client.post("/api/v1/feedback", json=feedback)
        unknown = client.post("/api/v1/feedback", json=feedback | {"die_id": "NO-SUCH-DIE"})
        bad = client.post("/api/v1/feedback", json=feedback | {"true_class": 9})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json() == again.json()
    assert unknown.status_code == 404 and bad.status_code == 422


def test_operations_endpoints(live_service, dies):
    inspect(live_service, dies[0])
    client = live_service.client(None)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "status": "ready"}  # status only
    ready = live_service.client("operator").get("/readyz").json()
    assert ready["ready"] and ready["models"]["champion"]["version"] == "1"
    assert ready["model_answering"] and ready["source"] == "registry"
    metrics = client.get("/metrics").text
    for name in (
        "dieguard_inspect_latency_seconds_bucket",
        "dieguard_decisions_total",
        "dieguard_missing_notes_total",
        "dieguard_missing_parameters_total",
        'dieguard_model_loaded{model_version="1",role="champion"} 1.0',
    ):
        assert name in metrics


def test_metrics_carry_the_monitors_latest_check(live_service):
    client = live_service.client(None)
    history = History(live_service.config.log_url)
    try:
        history.append(window_report([], [], datetime.now(UTC), MonitorConfig()))
    finally:
        history.close()
    metrics = client.get("/metrics").text
    assert "dieguard_monitor_last_check_timestamp_seconds" in metrics
    assert "dieguard_escape_rate_24h" not in metrics  # no labelled dies: no rate
    assert "dieguard_defective_labelled_24h 0.0" in metrics


def test_the_openapi_document_describes_every_route(live_service):
    spec = live_service.client(None).get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/api/v1/inspect", "/api/v1/feedback", "/api/v1/similar/{die_id}"):
        assert path in paths
    form = paths["/api/v1/inspect"]["post"]["requestBody"]["content"]["multipart/form-data"]
    ref = form["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = spec["components"]["schemas"][ref]["properties"]
    assert {"image", "process_log", "die_id", "wafer_id", "operator_notes"} <= set(fields)
    assert "InspectResponse" in spec["components"]["schemas"]


def test_feedback_exports_as_a_labelled_split(live_service, dies, tmp_path):
    die = dies[21]
    assert inspect(live_service, die).status_code == 200
    feedback = {"die_id": die.die_id, "verdict": "override", "true_class": 3}
    with live_service.client("operator") as client:
        assert client.post("/api/v1/feedback", json=feedback).status_code == 201
    out = tmp_path / "feedback"
    state = str(live_service.config.state_dir)
    result = CliRunner().invoke(main, ["export-feedback", "--out", str(out), "--state-dir", state])
    assert result.exit_code == 0, result.output
    split = read_split(out)
    assert split.labels[split.ids.index(die.die_id)] == 3


def test_similar_defects_of_an_indexed_die(live_service, dies, tiny_data, service_bundle):
    similar = live_service.app.state.service.similar
    assert index_split(similar, service_bundle, tiny_data, "val", "1") == len(dies)
    defect = next(d for d in dies if d.label != 0)
    with live_service.client("operator") as client:
        found = client.get(f"/api/v1/similar/{defect.die_id}", params={"k": 3}).json()
        unknown = client.get("/api/v1/similar/NO-SUCH-DIE")
        bad_fab = client.get(f"/api/v1/similar/{defect.die_id}", params={"fab": "Z"})
    rows = found["similar"]
    assert found["model_version"] == "1" and 1 <= len(rows) <= 3
    assert all(r["defect_class"] != 0 and r["die_id"] != defect.die_id for r in rows)
    assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)
    assert unknown.status_code == 404 and bad_fab.status_code == 422


def test_serving_without_keys_is_refused(monkeypatch):
    monkeypatch.delenv("DIEGUARD_API_KEYS", raising=False)
    monkeypatch.delenv("DIEGUARD_API_KEYS_FILE", raising=False)
    result = CliRunner().invoke(main, ["serve", "--port", "1"])
    assert result.exit_code == 2 and "no API keys" in result.output
