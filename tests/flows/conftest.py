"""The flow tests' real Prefect server (API and UI) and the helpers to drive it.

The Prefect test harness serves the API only; these tests start `prefect server start` on a
loopback port with its own home folder, and serve flows from child processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_LOGGING_TO_API_ENABLED,
    temporary_settings,
)

from service.embedded import answers_ok
from tests.conftest import free_port


@pytest.fixture(scope="module")
def prefect_ui(tmp_path_factory) -> str:
    """A Prefect server with its UI on a free loopback port; yields its base URL."""
    port = free_port()
    home = tmp_path_factory.mktemp("prefect_home")
    env = os.environ | {
        "PREFECT_HOME": str(home),
        "PREFECT_UI_ENABLED": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "0",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    command = [sys.executable, "-m", "prefect", "server", "start"]
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server, home / "server.log")
        yield url
    finally:
        EventsWorker.drain_all()  # the flow's events, sent before the server goes away
        server.terminate()
        server.wait(timeout=30)
        log.close()


# Minutes on two busy cores (niced, beside a training job): the bounds are for a server that
# never answers and a runner that never registers its deployments (it imports the flows,
# torch and MLflow, first), not for how fast a loaded machine starts them.
SERVER_START_S = 600
RUNNER_START_S = 600


def _wait_healthy(
    url: str, server: subprocess.Popen, log: Path, timeout_s: float = SERVER_START_S
) -> None:
    if answers_ok(f"{url}/api/health", timeout_s, 1.0, alive=lambda: server.poll() is None):
        return
    if server.poll() is not None:
        raise RuntimeError(f"the Prefect server exited:\n{log.read_text()[-2000:]}")
    raise TimeoutError(f"the Prefect server did not answer within {timeout_s} s")


@contextmanager
def serving(code: str, prefect_ui: str, folder: Path):
    """Run `code` (a `flow.serve` call) in a child process against the server at `prefect_ui`.

    Yields the client settings for that server, with results stored in `folder`.
    """
    api = f"{prefect_ui}/api"
    env = os.environ | {
        "PREFECT_API_URL": api,
        "PREFECT_LOCAL_STORAGE_PATH": str(folder),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PYTHONPATH": str(Path.cwd()),
    }
    log = (folder / "runner.log").open("w")
    runner = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=log)
    try:
        yield {PREFECT_API_URL: api, PREFECT_LOCAL_STORAGE_PATH: folder,
               PREFECT_LOGGING_TO_API_ENABLED: False}  # fmt: skip
    finally:
        runner.terminate()
        runner.wait(timeout=30)
        log.close()


def in_thread(fn, *args, **kwargs):
    """Prefect's sync calls, away from the thread where Playwright's event loop runs."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def wait_for(settings: dict, run_id: str, done, timeout_s: float = RUNNER_START_S):
    """The run's state once `done(state)` holds (a resumed run starts a new process first)."""

    def poll():
        state = None
        with temporary_settings(settings), get_client(sync_client=True) as client:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                state = client.read_flow_run(run_id).state
                if state and done(state):
                    return state
                time.sleep(0.5)
        last = f"{state.type.value} {state.name!r}: {state.message}" if state else "none"
        raise TimeoutError(f"run {run_id} never reached the expected state (last: {last})")

    return in_thread(poll)
