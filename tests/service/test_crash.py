"""SIGKILL the real server under load and start it again on the same state: every inspection
it answered 200 must be in the inspection log, also when the database was slow at the kill."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import pytest

from service.loadtest import load_test, make_dies
from service.server_process import ServerProcess, wait_until_logged
from tests.service.conftest import KEYS

CYCLES = 20
RATE = 30.0  # dies per second
LOAD_S = 3.0  # of posting per cycle; the kill comes KILL_AT_S into it
KILL_AT_S = 2.0
LOCK_S = 3.0  # a slow database: another process holds the write lock this long at the kill
RECOVERED = re.compile(r"(\d+) inspections only the spool held are now in the log")


@contextmanager
def write_lock_held(sqlite_path: str, seconds: float):
    """Another process's exclusive write lock on the log's SQLite file, for `seconds`."""
    conn = sqlite3.connect(sqlite_path, timeout=30, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(seconds, lambda: None)
    released.start()
    try:
        yield
    finally:
        released.join()
        conn.execute("ROLLBACK")
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 20 restarts: about 10 s each on two free cores, far more when busy
def test_no_acknowledged_inspection_is_lost_over_sigkill_cycles(service_bundle, tmp_path, request):
    keys = f"station:station-1:{KEYS['station']}"
    server = ServerProcess(service_bundle, tmp_path / "state", keys)
    request.addfinalizer(server.kill)  # no server left behind, whatever happens
    dies = make_dies(32)
    acknowledged, sent, restarts, slow_kills = [], 0, [], 0
    for cycle in range(CYCLES):
        restarts.append(server.start())
        slow = cycle % 2 == 1  # every other kill lands while the database is locked
        with ThreadPoolExecutor(1) as pool:
            load = pool.submit(
                load_test, server.url, KEYS["station"], RATE, LOAD_S,
                stations=3, dies=dies, timeout_s=10, first_request=sent,
            )  # fmt: skip
            time.sleep(KILL_AT_S - (LOCK_S / 2 if slow else 0))
            db = str(server.state_dir / "inspections.db")
            with write_lock_held(db, LOCK_S) if slow else nullcontext():
                if slow:
                    time.sleep(LOCK_S / 2)
                server.kill()
            report = load.result()
        slow_kills += slow
        acknowledged += report.acknowledged
        sent += report.sent
    server.start()
    try:
        missing = wait_until_logged(server.log_url, acknowledged, timeout_s=60)
    finally:
        server.stop()
    recovered = sum(int(n) for n in RECOVERED.findall(server.log_file.read_text()))
    print(
        f"\n{CYCLES} SIGKILLs ({slow_kills} with the database locked {LOCK_S:g} s) at {RATE:g} "
        f"dies/s: {sent} sent, {len(acknowledged)} acknowledged, {len(missing)} missing, "
        f"{recovered} written from the spool after a kill; "
        f"restart to ready {min(restarts):.1f}-{max(restarts):.1f} s"
    )
    assert len(acknowledged) >= CYCLES * RATE * KILL_AT_S * 0.25  # the load was served
    assert recovered > 0  # some kills did catch acknowledged records outside the database
    assert len(set(acknowledged)) == len(acknowledged)
    assert missing == []
