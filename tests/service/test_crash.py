"""SIGKILL the real server under load and start it again on the same state: every inspection
it answered 200 must be in the inspection log, also when the database was slow at the kill
(SQLite, and PostgreSQL with the log's table locked by another connection), and with a
challenger in shadow whose decisions are still being added when the kill comes."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext

import pytest
import sqlalchemy as sa

from service.loadtest import load_test, make_dies
from service.log_tables import DECISIONS, INSPECTIONS, engine_url
from service.server_process import ServerProcess, wait_until_logged
from tests.service.conftest import KEYS, MODEL_NAME, register_bundle, variant

CYCLES = 20
PG_CYCLES = 6
SHADOW_CYCLES = 4
RATE = 30.0  # dies per second
LOAD_S = 3.0  # of posting per cycle; the kill comes KILL_AT_S into it
KILL_AT_S = 2.0
LOCK_S = 3.0  # a slow database: another connection holds a lock this long, across the kill
RECOVERED = re.compile(r"(\d+) inspections only the spool held are now in the log")
STATION_KEYS = f"station:station-1:{KEYS['station']}"


@contextmanager
def held_for(seconds: float):
    """The body's lock stays held until `seconds` after entering, however soon it ends."""
    until = time.monotonic() + seconds
    try:
        yield
    finally:
        time.sleep(max(0.0, until - time.monotonic()))


@contextmanager
def write_lock_held(sqlite_path: str, seconds: float):
    """Another process's exclusive write lock on the log's SQLite file, for `seconds`."""
    conn = sqlite3.connect(sqlite_path, timeout=30, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        with held_for(seconds):
            yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@contextmanager
def table_lock_held(postgres_url: str, seconds: float):
    """Another connection's ACCESS EXCLUSIVE lock on the log's inspections table, in a
    transaction held open for `seconds`: the server's writes and reads of it wait."""
    import psycopg

    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        conn.execute("LOCK TABLE inspections IN ACCESS EXCLUSIVE MODE")
        try:
            with held_for(seconds):
                yield
        finally:
            conn.rollback()


def kill_under_load(
    server: ServerProcess, cycles: int, slow_database: Callable[[int], AbstractContextManager]
) -> dict:
    """Start, load and SIGKILL the server `cycles` times (the kill inside the context
    `slow_database(cycle)` gives, entered LOCK_S / 2 before it), start it once more and
    wait for the log. Returns what was sent, acknowledged, missing and recovered."""
    dies = make_dies(32)
    acknowledged, sent, restarts = [], 0, []
    for cycle in range(cycles):
        restarts.append(server.start())
        with ThreadPoolExecutor(1) as pool:
            load = pool.submit(
                load_test, server.url, KEYS["station"], RATE, LOAD_S,
                stations=3, dies=dies, timeout_s=10, first_request=sent,
            )  # fmt: skip
            time.sleep(KILL_AT_S - LOCK_S / 2)
            with slow_database(cycle):
                time.sleep(LOCK_S / 2)
                server.kill()
            report = load.result()
        acknowledged += report.acknowledged
        sent += report.sent
    server.start()
    try:
        missing = wait_until_logged(server.log_url, acknowledged, timeout_s=60)
    finally:
        server.stop()
    recovered = sum(int(n) for n in RECOVERED.findall(server.log_file.read_text()))
    return {
        "sent": sent,
        "acknowledged": acknowledged,
        "missing": missing,
        "recovered": recovered,
        "restart_s": (min(restarts), max(restarts)),
    }


def check(run: dict, cycles: int, what: str) -> None:
    first, last = run["restart_s"]
    print(
        f"\n{cycles} SIGKILLs ({what}) at {RATE:g} dies/s: {run['sent']} sent, "
        f"{len(run['acknowledged'])} acknowledged, {len(run['missing'])} missing, "
        f"{run['recovered']} written from the spool after a kill; "
        f"restart to ready {first:.1f}-{last:.1f} s"
    )
    assert len(run["acknowledged"]) >= cycles * RATE * KILL_AT_S * 0.25  # the load was served
    assert run["recovered"] > 0  # some kills did catch acknowledged records outside the database
    assert len(set(run["acknowledged"])) == len(run["acknowledged"])
    assert run["missing"] == []


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 20 restarts: about 10 s each on two free cores, far more when busy
def test_no_acknowledged_inspection_is_lost_over_sigkill_cycles(service_bundle, tmp_path, request):
    server = ServerProcess(service_bundle, tmp_path / "state", STATION_KEYS)
    request.addfinalizer(server.kill)  # no server left behind, whatever happens
    db = str(server.state_dir / "inspections.db")

    def every_other_locked(cycle: int):
        return write_lock_held(db, LOCK_S) if cycle % 2 == 1 else nullcontext()

    run = kill_under_load(server, CYCLES, every_other_locked)
    check(run, CYCLES, f"every other with the SQLite file locked {LOCK_S:g} s")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_no_acknowledged_inspection_is_lost_when_postgres_is_locked_at_the_kill(
    service_bundle, own_postgres_url, tmp_path, request
):
    server = ServerProcess(
        service_bundle, tmp_path / "state", STATION_KEYS, database_url=own_postgres_url
    )
    request.addfinalizer(server.kill)

    def locked_after_the_first(cycle: int):  # the first run creates the tables
        return table_lock_held(own_postgres_url, LOCK_S) if cycle > 0 else nullcontext()

    run = kill_under_load(server, PG_CYCLES, locked_after_the_first)
    check(run, PG_CYCLES, f"all but the first with PostgreSQL's log table locked {LOCK_S:g} s")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_no_acknowledged_inspection_is_lost_or_altered_with_a_challenger_in_shadow(
    service_bundle, tmp_path, request
):
    """The kill often falls between an answer and its shadow decision: the inspections stay
    as answered (the champion's), and no added decision is written twice."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_bundle(uri, service_bundle)
    register_bundle(uri, variant(service_bundle, tmp_path / "flags-all", 0.0), promote_it=False)
    env = {"MLFLOW_TRACKING_URI": uri, "DIEGUARD_MODEL_NAME": MODEL_NAME}
    env |= {"DIEGUARD_ROUTE_MODE": "shadow"}
    server = ServerProcess(None, tmp_path / "state", STATION_KEYS, env=env)
    request.addfinalizer(server.kill)
    db = str(server.state_dir / "inspections.db")

    def every_other_locked(cycle: int):
        return write_lock_held(db, LOCK_S) if cycle % 2 == 1 else nullcontext()

    run = kill_under_load(server, SHADOW_CYCLES, every_other_locked)
    check(run, SHADOW_CYCLES, "with the challenger in shadow, every other with SQLite locked")
    engine = sa.create_engine(engine_url(server.log_url))
    with engine.connect() as conn:
        answered = sa.select(INSPECTIONS.c.served_by, INSPECTIONS.c.route)
        served = {tuple(row) for row in conn.execute(answered)}
        roles = sa.select(DECISIONS.c.inspection_id, DECISIONS.c.role)
        decided = [tuple(row) for row in conn.execute(roles)]
    engine.dispose()
    assert served == {("champion", "shadow")}
    assert len(decided) == len(set(decided))  # no decision written twice
    shadowed = {i for i, role in decided if role == "candidate"}
    print(f"{len(shadowed)} of {len(run['acknowledged'])} inspections have the shadow decision")
    assert shadowed and all((i, "champion") in decided for i in shadowed)
