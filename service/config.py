"""The service's settings: where models, logs and images live, keys, batching and limits.

Read from `DIEGUARD_*` environment variables (see `from_env`); nothing is read at import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from service.keys import ADMIN, OPERATOR, ROLES, STATION, ApiKey, ConfigError, KeyRing, parse_keys

__all__ = ["ADMIN", "OPERATOR", "ROLES", "STATION", "ApiKey", "ConfigError", "KeyRing"]
__all__ += ["ServiceConfig", "from_env", "parse_keys"]

ROUTE_MODES = ("off", "shadow", "canary")


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `create_app` needs.

    Models come either from the MLflow registry (`model_name`'s `champion` alias, re-read
    every `reload_interval_s`) or, when `bundle` is set, from one fixed bundle folder.
    """

    model_name: str = "dieguard"
    tracking_uri: str | None = None  # None: mlruns/mlflow.db under the working directory
    bundle: Path | None = None  # a fixed bundle folder instead of the registry
    state_dir: Path = Path("runs/service")  # bundles, images, the SQLite log, the index
    database_url: str | None = None  # None: SQLite file in state_dir
    similar_uri: str | None = None  # None: LanceDB folder in state_dir
    image_store: str | None = None  # s3://bucket/prefix or a folder; None: images in state_dir
    keys: KeyRing = field(default_factory=KeyRing)
    max_batch: int = 8
    max_wait_ms: float = 4.0
    max_queue: int = 64  # dies waiting for the model; past it 503 with Retry-After
    request_timeout_s: float = 1.0  # a die's deadline for its model answer; past it 504
    max_connections: int = 128  # uvicorn's concurrency limit; past it 503
    max_missing_share: float = 0.5  # a process log missing more parameters is refused
    auth_failures_per_minute: int = 20  # wrong keys from one client before 429
    reload_interval_s: float = 10.0
    threads: int | None = None  # ONNX Runtime intra-op threads (None: all cores)
    max_image_bytes: int = 2 * 1024 * 1024
    max_request_bytes: int = 3 * 1024 * 1024
    candidate_alias: str = "challenger"
    route_mode: str = "off"  # off | shadow | canary
    canary_share: float = 0.0  # share of dies the candidate decides in canary mode
    anomaly_sigma: float = 2.0

    def __post_init__(self) -> None:
        if self.route_mode not in ROUTE_MODES:
            raise ConfigError(f"route_mode must be one of {ROUTE_MODES}, got {self.route_mode!r}")
        if not 0.0 <= self.canary_share <= 1.0:
            raise ConfigError(f"canary_share must be in [0, 1], got {self.canary_share}")
        if not 1 <= self.max_batch <= 64:
            raise ConfigError(f"max_batch must be in 1..64, got {self.max_batch}")
        if not 0.0 <= self.max_missing_share <= 1.0:
            raise ConfigError(f"max_missing_share must be in [0, 1], got {self.max_missing_share}")
        if self.max_queue < 1 or self.request_timeout_s <= 0 or self.max_connections < 1:
            raise ConfigError("max_queue, request_timeout_s and max_connections must be positive")

    @property
    def log_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.state_dir / 'inspections.db').resolve()}"

    @property
    def image_location(self) -> str:
        return self.image_store or str(self.state_dir / "images")

    @property
    def similar_location(self) -> str:
        return self.similar_uri or str(self.state_dir / "similar")

    def with_changes(self, **changes) -> ServiceConfig:
        return replace(self, **changes)


def from_env(environ: dict[str, str] | None = None, **overrides) -> ServiceConfig:
    """Settings from DIEGUARD_* variables, then `overrides` (e.g. command-line options).

    Variables: DIEGUARD_API_KEYS (role:name:key,...; or DIEGUARD_API_KEYS_FILE),
    DIEGUARD_MODEL_NAME, MLFLOW_TRACKING_URI, DIEGUARD_BUNDLE, DIEGUARD_STATE_DIR,
    DIEGUARD_DATABASE_URL, DIEGUARD_SIMILAR_URI, DIEGUARD_IMAGE_STORE (a folder or
    s3://bucket/prefix), DIEGUARD_MAX_BATCH, DIEGUARD_MAX_WAIT_MS, DIEGUARD_RELOAD_S,
    DIEGUARD_THREADS, DIEGUARD_ROUTE_MODE, DIEGUARD_CANARY_SHARE,
    DIEGUARD_MAX_QUEUE, DIEGUARD_REQUEST_TIMEOUT_S, DIEGUARD_MAX_CONNECTIONS,
    DIEGUARD_MAX_MISSING_SHARE, DIEGUARD_KEY_SECRET (or DIEGUARD_KEY_SECRET_FILE: the secret
    the keys are hashed under; without it, a random one per process).
    """
    env = os.environ if environ is None else environ
    keys_text = env.get("DIEGUARD_API_KEYS", "")
    if env.get("DIEGUARD_API_KEYS_FILE"):
        keys_text += "\n" + Path(env["DIEGUARD_API_KEYS_FILE"]).read_text()
    settings = {
        "model_name": env.get("DIEGUARD_MODEL_NAME"),
        "tracking_uri": env.get("MLFLOW_TRACKING_URI"),
        "bundle": _path(env.get("DIEGUARD_BUNDLE")),
        "state_dir": _path(env.get("DIEGUARD_STATE_DIR")),
        "database_url": env.get("DIEGUARD_DATABASE_URL"),
        "similar_uri": env.get("DIEGUARD_SIMILAR_URI"),
        "image_store": env.get("DIEGUARD_IMAGE_STORE"),
        "max_batch": _number(env, "DIEGUARD_MAX_BATCH", int),
        "max_wait_ms": _number(env, "DIEGUARD_MAX_WAIT_MS", float),
        "reload_interval_s": _number(env, "DIEGUARD_RELOAD_S", float),
        "threads": _number(env, "DIEGUARD_THREADS", int),
        "route_mode": env.get("DIEGUARD_ROUTE_MODE"),
        "canary_share": _number(env, "DIEGUARD_CANARY_SHARE", float),
        "max_queue": _number(env, "DIEGUARD_MAX_QUEUE", int),
        "request_timeout_s": _number(env, "DIEGUARD_REQUEST_TIMEOUT_S", float),
        "max_connections": _number(env, "DIEGUARD_MAX_CONNECTIONS", int),
        "max_missing_share": _number(env, "DIEGUARD_MAX_MISSING_SHARE", float),
        "keys": parse_keys(keys_text, key_secret(env)) if keys_text.strip() else None,
    }
    settings |= overrides
    return ServiceConfig(**{k: v for k, v in settings.items() if v is not None})


def key_secret(env) -> bytes | None:
    """The server secret keys are hashed under (DIEGUARD_KEY_SECRET or _FILE); None: none."""
    if env.get("DIEGUARD_KEY_SECRET_FILE"):
        return Path(env["DIEGUARD_KEY_SECRET_FILE"]).read_bytes().strip()
    return env.get("DIEGUARD_KEY_SECRET", "").encode() or None


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _number(env, name: str, kind):
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError as err:
        raise ConfigError(f"{name}={value!r} is not a valid {kind.__name__}") from err
