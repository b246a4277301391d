"""API keys held as HMAC-SHA256 digests under a server secret: the service never keeps a key.

A key entry is `role:name:key` (the key is hashed as it is read) or, for a keys file that
must not hold keys either, `role:name:hmac-sha256:<hex digest>` (`dieguard hash-key` prints
one). Each key names one holder; a lookup hashes the given key and compares digests in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

STATION, OPERATOR, ADMIN = "station", "operator", "admin"
ROLES = (STATION, OPERATOR, ADMIN)
HASHED = "hmac-sha256:"


class ConfigError(ValueError):
    """A setting is malformed; the message names it."""


@dataclass(frozen=True)
class ApiKey:
    """Who holds a key and what it may do."""

    name: str  # e.g. "station-3", "j.doe"
    role: str  # station | operator | admin


def key_digest(secret: bytes, key: str) -> str:
    """The hex HMAC-SHA256 of a key under the server secret."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


class KeyRing:
    """The holders of the service's keys, by key digest."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.ephemeral = secret is None  # a random secret: digests from a file cannot match
        self._holders: dict[str, ApiKey] = {}

    def add(self, role: str, name: str, key: str) -> None:
        """Admit a holder by key, or by its digest (`hmac-sha256:<hex>`).

        Raises:
            ConfigError: unknown role, malformed digest, or a key already given.
        """
        if role not in ROLES:
            raise ConfigError(f"API key for {name!r} has role {role!r}; roles are {ROLES}")
        if key.startswith(HASHED):
            digest = key.removeprefix(HASHED).lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"the key digest of {name!r} is not 64 hex digits")
            if self.ephemeral:
                raise ConfigError("hashed API keys need the server secret DIEGUARD_KEY_SECRET")
        else:
            digest = key_digest(self.secret, key)
        if digest in self._holders:
            other = self._holders[digest].name
            raise ConfigError(f"the API key of {name!r} is also given to {other!r}")
        self._holders[digest] = ApiKey(name=name, role=role)

    def find(self, given: str | None) -> ApiKey | None:
        """The holder of a key, or None."""
        if not given:
            return None
        wanted = key_digest(self.secret, given)
        found = None
        for digest, holder in self._holders.items():  # every digest compared: constant time
            if hmac.compare_digest(digest, wanted):
                found = holder
        return found

    def holders(self) -> list[ApiKey]:
        return list(self._holders.values())

    def __len__(self) -> int:
        return len(self._holders)


def parse_keys(text: str, secret: bytes | None = None) -> KeyRing:
    """Keys from `role:name:key` entries separated by commas or newlines.

    Raises:
        ConfigError: an entry is malformed, a role unknown, or a key given twice.
    """
    ring = KeyRing(secret)
    for entry in text.replace("\n", ",").split(","):
        if not entry.strip():
            continue
        parts = entry.strip().split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ConfigError(f"API key entry {entry.strip()[:20]!r}... is not role:name:key")
        ring.add(*parts)
    return ring
