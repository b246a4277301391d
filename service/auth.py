"""API keys: stations inspect, operators give feedback and read the dashboard, admins steer.

The API takes the key in the `X-API-Key` header; the dashboard pages take it as the
password of HTTP basic authentication (any user name), so a browser can hold it.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import HTTPException, Request, status
from fastapi.security import APIKeyHeader

from service.config import ADMIN, OPERATOR, STATION, ApiKey

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
MAY = {  # what each role may call
    STATION: {STATION},
    OPERATOR: {OPERATOR},
    ADMIN: {STATION, OPERATOR, ADMIN},
}


def find_key(keys: dict[str, ApiKey], given: str | None) -> ApiKey | None:
    """The key's holder, compared in constant time; None when unknown."""
    if not given:
        return None
    for key, holder in keys.items():
        if hmac.compare_digest(key.encode(), given.encode()):
            return holder
    return None


def require(*roles: str):
    """A dependency admitting holders of a key allowed any of `roles` (401/403 otherwise)."""

    async def check(request: Request) -> ApiKey:
        holder = find_key(request.app.state.service.config.keys, await API_KEY_HEADER(request))
        if holder is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or unknown X-API-Key")
        if not MAY[holder.role] & set(roles):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"a {holder.role} key may not do this")
        return holder

    return check


def require_browser(*roles: str):
    """Like `require`, for pages: the key is the basic-auth password."""

    async def check(request: Request) -> ApiKey:
        holder = find_key(request.app.state.service.config.keys, _basic_password(request))
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
