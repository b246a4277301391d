"""API keys: stations inspect, operators give feedback and read the dashboard, admins steer.

The API takes the key in the `X-API-Key` header; the dashboard pages take it as the
password of HTTP basic authentication (any user name), so a browser can hold it. Keys are
held as digests (service.keys). A client that sends more than the allowed number of wrong
keys in a minute is answered 429 until its oldest failure is a minute old.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections import deque

from fastapi import HTTPException, Request, status
from fastapi.security import APIKeyHeader

from service.config import ADMIN, OPERATOR, STATION, ApiKey

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
MAY = {  # what each role may call
    STATION: {STATION},
    OPERATOR: {OPERATOR},
    ADMIN: {STATION, OPERATOR, ADMIN},
}


class FailedAttempts:
    """Wrong keys per client over the last `window_s` seconds; past `limit`, 429."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        with self._lock:
            times = self._recent(client)
            if len(times) < self.limit:
                return 0.0
            return max(times[0] + self.window_s - time.monotonic(), 0.0)

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(time.monotonic())
            if len(self._failures) > 10_000:  # forget quiet clients
                for name in [c for c, t in self._failures.items() if not t]:
                    del self._failures[name]

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and times[0] < time.monotonic() - self.window_s:
            times.popleft()
        return times


def identify(request: Request, given: str | None) -> ApiKey | None:
    """The holder of the key a request gives (None when none or unknown).

    Raises:
        HTTPException: 429 while the client has sent too many wrong keys.
    """
    state = request.app.state.service
    client = request.client.host if request.client else "unknown"
    wait = state.attempts.retry_after(client)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many wrong keys from this client; try again later",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    holder = state.config.keys.find(given)
    if holder is None and given:
        state.attempts.failed(client)
    return holder


def require(*roles: str):
    """A dependency admitting holders of a key allowed any of `roles` (401/403 otherwise)."""

    async def check(request: Request) -> ApiKey:
        holder = identify(request, await API_KEY_HEADER(request))
        if holder is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or unknown X-API-Key")
        if not MAY[holder.role] & set(roles):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"a {holder.role} key may not do this")
        return holder

    return check


def require_browser(*roles: str):
    """Like `require`, for pages: the key is the basic-auth password."""

    async def check(request: Request) -> ApiKey:
        holder = identify(request, _basic_password(request))
        if holder is None or not MAY[holder.role] & set(roles):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "sign in with your operator key as the password",
                headers={"WWW-Authenticate": 'Basic realm="dieguard dashboard"'},
            )
        return holder

    return check


def _basic_password(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        _, _, password = base64.b64decode(value).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password or None
