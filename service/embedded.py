"""The inspection service inside this process: uvicorn in a thread on a loopback port.

For a simulation (or a test) that streams dies at a real HTTP server without starting a
second process. Production runs `dieguard serve` instead.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from service.config import ServiceConfig


class ServiceNotReadyError(RuntimeError):
    """The service did not answer /readyz in time (no champion, or a failed start)."""


def answers_ok(
    url: str, timeout_s: float, interval_s: float = 0.2, alive: Callable[[], bool] = lambda: True
) -> bool:
    """Poll GET `url` until it answers 200 (True), or the time runs out or `alive()` turns
    False (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(interval_s)
    return False


def serve_in_thread(app, host: str = "127.0.0.1", ready_timeout_s: float = 60.0):
    """Serve an ASGI app on a free port of `host` until the returned `stop` is called.

    Returns:
        (url, stop): the base URL once /readyz answers 200, and a callable that shuts the
        server down.
    Raises:
        ServiceNotReadyError: /readyz did not answer 200 within `ready_timeout_s` (the server is
            stopped).
    """
    import uvicorn

    sock = socket.socket()
    sock.bind((host, 0))  # held from here on: no other process can take the port
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

    if not answers_ok(f"{url}/readyz", ready_timeout_s, alive=thread.is_alive):
        stop()
        raise ServiceNotReadyError(f"the service at {url} did not become ready in time")
    return url, stop


@dataclass(frozen=True)
class EmbeddedService:
    """A service started by `start_embedded`: where it listens, its keys and its stores."""

    url: str
    station_key: str
    operator_key: str
    config: ServiceConfig
    stop: Callable[[], None]


def start_embedded(model_name: str, tracking_uri: str | None, state_dir: str | Path,
                   reload_interval_s: float = 1.0) -> EmbeddedService:  # fmt: skip
    """The registry's champion served in this process, with fresh one-time keys.

    Args:
        model_name, tracking_uri: the registry whose champion (and rollout) it serves.
        state_dir: its bundles, image store and SQLite inspection log.
        reload_interval_s: how often aliases and the rollout state are re-read (a compressed
            clock needs this short).
    Raises:
        ServiceNotReadyError: no champion to serve.
    """
    from service.app import create_app
    from service.config import ServiceConfig, parse_keys

    station, operator = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    config = ServiceConfig(
        model_name=model_name,
        tracking_uri=tracking_uri,
        state_dir=Path(state_dir),
        keys=parse_keys(f"station:station-sim:{station},operator:operator-sim:{operator}"),
        reload_interval_s=reload_interval_s,
    )
    url, stop = serve_in_thread(create_app(config))
    return EmbeddedService(url, station, operator, config, stop)
