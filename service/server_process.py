"""The inspection service as a child process (`dieguard serve`), for crash and load runs, and
the check that every acknowledged inspection reached the inspection log."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from service.embedded import ServiceNotReadyError, answers_ok
from service.log_tables import INSPECTIONS, engine_url


class ServerProcess:
    """`dieguard serve` over a state folder, on a free loopback port, serving a fixed bundle
    folder or (bundle None) the registry's champion; its inspection log is the SQLite file
    in the state folder, or the database at `database_url`. `env` adds settings (e.g.
    MLFLOW_TRACKING_URI, DIEGUARD_ROUTE_MODE)."""

    def __init__(
        self,
        bundle: Path | None,
        state_dir: Path,
        keys: str,
        log_file: Path | None = None,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
    ):
        self.bundle, self.state_dir, self.keys = bundle, Path(state_dir), keys
        self.database_url, self.env = database_url, env or {}
        self.log_file = log_file or self.state_dir / "server.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, ready_timeout_s: float = 180.0) -> float:
        """Start the server; the seconds it took to answer /readyz.

        Raises:
            ServiceNotReadyError: not ready in time (the process is killed).
        """
        started = time.monotonic()
        command = [sys.executable, "-m", "dieguard.cli", "serve", "--port", str(self.port)]
        command += ["--state-dir", str(self.state_dir)]
        command += ["--bundle", str(self.bundle)] if self.bundle else []
        env = os.environ | {"DIEGUARD_API_KEYS": self.keys, "DIEGUARD_THREADS": "1"}
        env |= {"DIEGUARD_DATABASE_URL": self.database_url} if self.database_url else {}
        env |= self.env
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
        alive = lambda: self.process.poll() is None  # noqa: E731
        if not answers_ok(f"{self.url}/readyz", ready_timeout_s, 0.05, alive):
            self.kill()
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise ServiceNotReadyError(f"the server did not start in time; its log ends:\n{tail}")
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM: a graceful shutdown (what is unwritten stays in the spool)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def log_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.state_dir / 'inspections.db').resolve()}"


def served_max_rate(
    bundle: Path | None,
    state_dir: Path,
    rates: list[float],
    duration_s: float,
    stations: int,
    p99_limit_ms: float,
) -> tuple[list, list[str], list[str]]:
    """Start the real service, step through `rates` until p99 passes `p99_limit_ms`, stop it
    gracefully and start it again to check its log.

    Returns:
        (the LoadReports, the acknowledged inspection ids, those missing from the log).
    """
    from service.loadtest import make_dies, max_rate

    key = secrets.token_urlsafe(16)
    server = ServerProcess(bundle, state_dir, f"station:loadtest:{key}")
    server.start()
    try:
        _, reports = max_rate(server.url, key, rates, duration_s, stations=stations,
                              p99_limit_ms=p99_limit_ms, dies=make_dies(64))  # fmt: skip
    finally:
        server.stop()
    acknowledged = [i for r in reports for i in r.acknowledged]
    server.start()  # what the stop left in the spool is replayed
    try:
        missing = wait_until_logged(server.log_url, acknowledged)
    finally:
        server.stop()
    return reports, acknowledged, missing


def missing_from_log(log_url: str, inspection_ids: list[str]) -> list[str]:
    """The given inspection ids that the inspection log does not hold."""
    engine = sa.create_engine(engine_url(log_url))
    column, found = INSPECTIONS.c.inspection_id, set()
    try:
        with engine.connect() as conn:
            for i in range(0, len(inspection_ids), 500):
                chunk = inspection_ids[i : i + 500]
                found |= set(conn.scalars(sa.select(column).where(column.in_(chunk))))
    except sa.exc.OperationalError:  # no log at all yet
        pass
    finally:
        engine.dispose()
    return [i for i in inspection_ids if i not in found]


def wait_until_logged(log_url: str, inspection_ids: list[str], timeout_s: float = 60.0):
    """Poll until every id is in the log or the time runs out; the ids still missing."""
    deadline = time.monotonic() + timeout_s
    missing = missing_from_log(log_url, inspection_ids)
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        missing = missing_from_log(log_url, missing)
    return missing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
