"""Load generator: synthetic payloads, report maths, and open-loop runs against a real server."""

from __future__ import annotations

import asyncio
import io
import json
import math
import socket
import threading
import time
from typing import Annotated

import pytest
import uvicorn
from fastapi import FastAPI, File, Form, Header, HTTPException, UploadFile
from fastapi.responses import PlainTextResponse
from PIL import Image

from model.schema import IMAGE_SIZE, METADATA_COLUMNS, parameter_names
from service.loadtest import (
    LoadReport,
    Outcome,
    build_report,
    endpoint,
    find_max_rate,
    format_table,
    load_test,
    make_dies,
    run_load,
)

KEY = "station-key"
SLOW_KEY = "slow-key"
TEXT_KEY = "text-key"  # answers 200 with a body that is not JSON


@pytest.fixture(scope="module")
def load_dies():
    return make_dies(6, seed=3)


def _app(seen: dict) -> FastAPI:
    app = FastAPI()

    @app.post("/api/v1/inspect")
    async def inspect(
        image: Annotated[UploadFile, File()],
        process_log: Annotated[str, Form()],
        wafer_id: Annotated[str, Form()],
        die_id: Annotated[str, Form()],
        operator_notes: Annotated[str, Form()] = "",
        metadata: Annotated[str, Form()] = "{}",
        x_api_key: Annotated[str | None, Header()] = None,
    ):
        if x_api_key == TEXT_KEY:
            return PlainTextResponse("fine")
        if x_api_key not in (KEY, SLOW_KEY):
            raise HTTPException(status_code=401, detail="unknown station key")
        seen["in_flight"] += 1
        seen["peak"] = max(seen["peak"], seen["in_flight"])
        try:
            pixels = Image.open(io.BytesIO(await image.read()))
            assert pixels.size == (IMAGE_SIZE, IMAGE_SIZE)
            json.loads(process_log), json.loads(metadata)
            seen["die_ids"].append(die_id)
            await asyncio.sleep(0.3 if x_api_key == SLOW_KEY else seen["delay_s"])
        finally:
            seen["in_flight"] -= 1
        return {"defect_class": 0, "confidence": 0.9, "latency_ms": 4.0, "model_version": "7"}

    return app


@pytest.fixture(scope="module")
def server():
    """A real uvicorn server on a free loopback port; yields (base URL, what it saw)."""
    seen = {"in_flight": 0, "peak": 0, "die_ids": [], "delay_s": 0.005}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(_app(seen), log_level="error", timeout_graceful_shutdown=1)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "test server did not start"
    yield f"http://127.0.0.1:{port}", seen
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_make_dies_gives_valid_unique_payloads(load_dies):
    names = set(parameter_names())
    assert len({d.die_id for d in load_dies}) == len(load_dies) == 6
    for die in load_dies:
        img = Image.open(io.BytesIO(die.image))
        assert img.format == "PNG" and img.size == (IMAGE_SIZE, IMAGE_SIZE)
        assert img.mode == "RGB"
        assert 0 < len(die.process_log) <= 48 and set(die.process_log) <= names
        assert all(math.isfinite(v) for v in die.process_log.values())
        assert set(die.metadata) == set(METADATA_COLUMNS[2:])
        assert die.die_id.startswith(die.wafer_id) and isinstance(die.note, str)
    assert make_dies(6, seed=3) == load_dies  # a function of the seed
    with pytest.raises(ValueError, match="at least one die"):
        make_dies(0)


def _outcomes(latencies, errors=()):
    ok = [
        Outcome("ok", ms, server_latency_ms=2.0 * i, model_version="7")
        for i, ms in enumerate(latencies)
    ]
    return ok + [Outcome(kind, 1.0) for kind in errors]


def test_report_maths_on_hand_made_latencies():
    lat = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    report = build_report(12.0, 3, 2.0, _outcomes(lat, ["401", "timeout", "401"]))
    assert report.sent == 13 and report.ok == 10
    assert report.errors == {"401": 2, "timeout": 1}
    assert report.throughput == pytest.approx(5.0)  # ok / elapsed
    assert report.p50_ms == pytest.approx(55.0)  # linear interpolation
    assert report.p95_ms == pytest.approx(95.5)
    assert report.p99_ms == pytest.approx(99.1)
    assert report.max_ms == 100.0
    assert report.server_latency_ms == pytest.approx(9.0)  # mean of 0, 2, ..., 18
    assert report.model_versions == {"7": 10}
    assert report.error_rate == pytest.approx(3 / 13)
    assert not report.meets(p99_limit_ms=200.0)  # errors are not allowed by default
    assert report.meets(p99_limit_ms=200.0, max_error_rate=0.25)
    assert not report.meets(p99_limit_ms=99.0, max_error_rate=0.25)
    clean = build_report(5.0, 1, 2.0, _outcomes(lat))
    assert clean.meets(p99_limit_ms=100.0) and not clean.meets(p99_limit_ms=50.0)
    assert json.loads(json.dumps(report.as_dict()))["errors"] == {"401": 2, "timeout": 1}
    assert "401=2" in report.format() and "p99 99.1" in report.format()
    assert len(format_table([report, clean]).splitlines()) == 3


def test_report_with_nothing_served_does_not_meet():
    report = build_report(5.0, 1, 1.0, _outcomes([], ["connection"] * 4))
    assert report.ok == 0 and report.p99_ms is None and report.throughput == 0.0
    assert not report.meets(max_error_rate=1.0)
    assert "p99 -" in report.format()
    assert isinstance(report, LoadReport)


def test_endpoint_accepts_base_or_full_url():
    assert endpoint("http://h:8000/") == "http://h:8000/api/v1/inspect"
    assert endpoint("http://h:8000/api/v1/inspect") == "http://h:8000/api/v1/inspect"


def test_run_load_sends_on_schedule_with_distinct_dies(server, load_dies):
    url, seen = server
    seen["die_ids"].clear()
    report = asyncio.run(run_load(url, KEY, rate=40.0, duration_s=0.5, stations=3, dies=load_dies))
    assert abs(report.sent - 40.0 * 0.5) <= 1
    assert report.ok == report.sent and report.errors == {}
    assert report.stations == 3 and report.rate == 40.0
    assert report.p50_ms <= report.p95_ms <= report.p99_ms <= report.max_ms
    assert report.server_latency_ms == 4.0 and report.model_versions == {"7": report.ok}
    assert report.throughput > 0 and report.meets(p99_limit_ms=10_000.0)
    assert len(set(seen["die_ids"])) == report.sent  # payloads reused with suffixed ids
    assert any(d.endswith("-r1") for d in seen["die_ids"])


def test_run_load_is_open_loop(server, load_dies):
    """Requests leave on schedule while earlier ones are still in the server."""
    url, seen = server
    seen["peak"], seen["delay_s"] = 0, 0.25
    try:
        report = load_test(url, KEY, rate=20.0, duration_s=0.5, stations=1, dies=load_dies)
    finally:
        seen["delay_s"] = 0.005
    assert report.ok == report.sent == 10
    assert seen["peak"] >= 2


def test_wrong_key_timeouts_and_bad_bodies_are_counted_not_raised(server, load_dies):
    url, _ = server
    bad = asyncio.run(run_load(url, "nope", rate=20.0, duration_s=0.25, stations=2, dies=load_dies))
    assert bad.ok == 0 and bad.errors == {"401": bad.sent} and bad.sent == 5
    assert not bad.meets()
    slow = asyncio.run(
        run_load(
            url, SLOW_KEY, rate=20.0, duration_s=0.2, stations=2, dies=load_dies, timeout_s=0.05
        )
    )
    assert slow.errors == {"timeout": slow.sent} and slow.sent == 4
    text = load_test(url, TEXT_KEY, rate=20.0, duration_s=0.1, dies=load_dies)
    assert text.ok == 0 and text.errors == {"invalid_response": 2}


def test_unreachable_port_gives_connection_errors(load_dies):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = asyncio.run(
        run_load(f"http://127.0.0.1:{port}", KEY, rate=20.0, duration_s=0.2, dies=load_dies)
    )
    assert report.sent == 4 and report.ok == 0
    assert report.errors == {"connection": 4}


def test_find_max_rate_stops_at_first_failing_rate(server, load_dies):
    url, seen = server
    seen["die_ids"].clear()
    best, reports = asyncio.run(
        find_max_rate(
            url,
            KEY,
            [20.0, 10.0],
            0.3,
            stations=2,
            p99_limit_ms=10_000.0,
            dies=load_dies,
            warmup_s=0.2,
        )
    )
    assert best == 20.0 and [r.rate for r in reports] == [10.0, 20.0]
    assert len(set(seen["die_ids"])) == len(seen["die_ids"]) == 2 + 3 + 6  # warm-up included
    best, reports = asyncio.run(
        find_max_rate(url, KEY, [10.0, 20.0], 0.3, p99_limit_ms=0.0, dies=load_dies, warmup_s=0)
    )
    assert best is None and len(reports) == 1
