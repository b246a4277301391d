"""Service fixtures: a registered champion bundle, and the real service on loopback.

`live_service` runs `create_app` under uvicorn in a thread on a free port, with its models
coming from a SQLite MLflow registry, exactly as `dieguard serve` does.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from model.bundle import export_fp32_bundle
from model.contract import read_split
from model.onnx_runtime import operating_point_path
from registry import CHAMPION, log_bundle, open_store, promote, register
from registry.aliases import alias_version
from service.config import ServiceConfig, parse_keys
from service.embedded import serve_in_thread
from tests.registry.approvals import make_servable

MODEL_NAME = "dieguard-service-tests"
KEYS = {"station": "station-key-1", "operator": "operator-key-1", "admin": "admin-key-1"}


@dataclass
class DiePayload:
    """One die of the tiny data set as a station sends it."""

    die_id: str
    wafer_id: str
    image: bytes
    process_log: dict
    note: str
    label: int

    def form(self, **changes) -> tuple[dict, dict]:
        """(data, files) for httpx: the multipart fields of /api/v1/inspect."""
        data = {
            "die_id": self.die_id,
            "wafer_id": self.wafer_id,
            "process_log": json.dumps(self.process_log),
            "operator_notes": self.note,
        }
        data |= {k: v for k, v in changes.items() if k != "image"}
        files = {"image": ("die.png", changes.get("image", self.image), "image/png")}
        return data, files


@dataclass
class LiveService:
    url: str
    config: ServiceConfig
    tracking_uri: str
    app: object

    def client(self, role: str = "station", **kwargs) -> httpx.Client:
        headers = ({"X-API-Key": KEYS[role]} if role else {}) | kwargs.pop("headers", {})
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)


@pytest.fixture(scope="session")
def dies(tiny_data) -> list[DiePayload]:
    """The tiny validation split's dies as inspection payloads."""
    tables = read_split(tiny_data / "val")
    out = []
    for i, die_id in enumerate(tables.ids):
        row = tables.process.iloc[i]
        out.append(
            DiePayload(
                die_id=die_id,
                wafer_id=str(tables.metadata.loc[die_id, "wafer_id"]),
                image=tables.image_paths[i].read_bytes(),
                process_log={k: float(v) for k, v in row.items() if v == v},  # NaN: absent
                note=tables.notes[i],
                label=int(tables.labels[i]),
            )
        )
    return out


@pytest.fixture(scope="session")
def service_bundle(smoke_multimodal, smoke_prepared, tmp_path_factory) -> Path:
    """The smoke model exported as a serving bundle (FP32 ONNX, scaler, tokenizer)."""
    _, prepared = smoke_prepared
    dest = tmp_path_factory.mktemp("service_bundle") / "bundle"
    return export_fp32_bundle(smoke_multimodal.folder / "model.pt", prepared.folder, dest)


def register_bundle(
    tracking_uri: str, folder: Path, promote_it: bool = True, approve: bool = True
) -> str:
    """Log and register a bundle folder, approved (gates passed) unless told otherwise;
    promote it to champion when asked."""
    store = open_store(tracking_uri)
    record = log_bundle(store, f"{MODEL_NAME}-training", folder, "multimodal")
    version = register(store.client, MODEL_NAME, record.serving["multimodal"], {"test": True})
    if approve:
        make_servable(store.client, MODEL_NAME, version)
    if promote_it:
        current = alias_version(store.client, MODEL_NAME, CHAMPION)
        promote(store.client, MODEL_NAME, version, "service tests", current)
    return version


def variant(bundle: Path, dest: Path, threshold: float) -> Path:
    """A copy of a bundle at another operating point: a different registered version."""
    shutil.copytree(bundle, dest)
    point_file = operating_point_path(dest / "model.onnx")
    point = json.loads(point_file.read_text())
    point_file.write_text(json.dumps(point | {"threshold": threshold}))
    return dest


def live_config(tracking_uri: str, state_dir: Path, **changes) -> ServiceConfig:
    """Test settings: the three keys, one thread, aliases re-read every half second.

    A die's deadline is a minute: the deadline is test_overload's subject (it sets its own);
    elsewhere a busy test machine must not turn a slow answer into a 504."""
    keys = parse_keys(",".join(f"{role}:{role}-1:{key}" for role, key in KEYS.items()))
    settings = {"reload_interval_s": 0.5, "threads": 1, "request_timeout_s": 60.0} | changes
    return ServiceConfig(
        model_name=MODEL_NAME, tracking_uri=tracking_uri, state_dir=state_dir, keys=keys, **settings
    )


def start_service(config: ServiceConfig, tracking_uri: str = "", ready_timeout_s: float = 60):
    """Run the app under uvicorn in a thread; returns (LiveService, stop)."""
    from service.app import create_app  # imported here: the other service tests need less

    app = create_app(config)
    url, stop = serve_in_thread(app, ready_timeout_s=ready_timeout_s)
    return LiveService(url, config, tracking_uri, app), stop


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3-compatible server on loopback (moto's server mode), for the whole session."""
    from moto.server import ThreadedMotoServer  # a declared dev dependency: no skip

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch) -> str:
    """A fresh bucket on the local S3 server; boto3 is pointed at that server (endpoint and
    test credentials in the environment, as a pod would have them)."""
    import boto3

    settings = {
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    name = f"dieguard-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def registry_uri(service_bundle, tmp_path_factory) -> str:
    """A SQLite MLflow registry whose champion is the smoke bundle."""
    root = tmp_path_factory.mktemp("service_registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    register_bundle(uri, service_bundle)
    return uri


@pytest.fixture(scope="session")
def live_service(registry_uri, tmp_path_factory):
    """The service on loopback, serving the registry's champion (reload every 0.5 s)."""
    config = live_config(registry_uri, tmp_path_factory.mktemp("service_state"))
    service, stop = start_service(config, registry_uri)
    yield service
    stop()


def inspect_ok(service: LiveService, die: DiePayload) -> dict:
    """Post one die with the station key; its response body (asserting a 200)."""
    data, files = die.form()
    with service.client("station") as client:
        response = client.post("/api/v1/inspect", data=data, files=files)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(check, timeout_s: float = 20.0):
    """Poll `check` until it returns something true; that value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")
