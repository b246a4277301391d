"""Shared fixtures: one small synthetic data set per session, throw-away split copies, a
throw-away PostgreSQL database, a loopback S3 server and a headless Chromium.

PostgreSQL: the server at 127.0.0.1:5432 (trust auth, user postgres), or the admin URL in
DIEGUARD_TEST_POSTGRES. Without one the PostgreSQL cases are skipped, or fail where
DIEGUARD_REQUIRE_POSTGRES=1 (CI has one). Chromium likewise with DIEGUARD_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import sync_playwright

from model.config import load_config
from model.prepare import prepare
from model.schema import IMAGES_DIR, NOTES_FILE
from model.synthetic.generate import generate_dataset
from model.train import train_model

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright, headless (`make test` installs it where it may).

    Module-scoped: while Playwright's sync API is open, Prefect's sync calls in the same
    thread see a running event loop. Without Chromium the browser tests skip, or fail where
    DIEGUARD_REQUIRE_BROWSER=1 (CI)."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("DIEGUARD_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield chromium
        chromium.close()


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 600-die synthetic data set (train/val/test + synth_truth.csv), generated once.

    Read-only for tests: copy a split with `copy_split` before changing anything.
    """
    out = tmp_path_factory.mktemp("tiny_data")
    generate_dataset(out, n=600, seed=0, workers=2)
    return out


@pytest.fixture(scope="session")
def smoke_prepared(tiny_data, tmp_path_factory):
    """The smoke config over `tiny_data` and its prepared splits (read-only: deepcopy the
    config before changing it)."""
    out = tmp_path_factory.mktemp("smoke")
    cfg = load_config(
        "configs/smoke.yaml",
        [f"data_dir={tiny_data}", f"out_dir={out}", f"data.cache_dir={out / 'cache'}"],
    )
    return cfg, prepare(cfg, out / "prepared")


@pytest.fixture(scope="session")
def smoke_multimodal(smoke_prepared, tmp_path_factory):
    """A smoke multimodal model trained once per session; its model.pt is in `.folder`."""
    cfg, data = smoke_prepared
    return train_model("multimodal", data, cfg, tmp_path_factory.mktemp("mm"), progress=False)


@pytest.fixture
def scoring_passes(monkeypatch) -> list[dict]:
    """The passes of a model over a whole split (predict's keyword arguments), counted from
    an empty memory of earlier scorings."""
    import model.predict as scoring

    seen, real = [], scoring.predict

    def counted(model, dataset, *args, **kwargs):
        seen.append(kwargs)
        return real(model, dataset, *args, **kwargs)

    monkeypatch.setattr(scoring, "predict", counted)
    monkeypatch.setattr(scoring, "_remembered", type(scoring._remembered)())
    return seen


@pytest.fixture
def copy_split(tiny_data, tmp_path) -> Callable[..., Path]:
    """Copy one split of `tiny_data` into tmp_path and return the copy's folder.

    `copy_split(split="val", n=12)` keeps the first `n` dies (by sorted id) of every table,
    the notes and the images, so corruption tests stay fast; `n=None` copies everything.
    """

    def copy(split: str = "val", n: int | None = 12) -> Path:
        src, dst = tiny_data / split, tmp_path / split
        if n is None:
            shutil.copytree(src, dst)
            return dst
        (dst / IMAGES_DIR).mkdir(parents=True)
        keep = sorted(p.stem for p in (src / IMAGES_DIR).iterdir())[:n]
        for table in src.glob("*.csv"):
            rows = pd.read_csv(table, dtype={"die_id": str})
            rows[rows["die_id"].isin(keep)].to_csv(dst / table.name, index=False)
        notes = json.loads((src / NOTES_FILE).read_text())
        kept = {k: v for k, v in notes.items() if k in keep}
        (dst / NOTES_FILE).write_text(json.dumps(kept, indent=0, sort_keys=True))
        for die in keep:
            shutil.copy2(src / IMAGES_DIR / f"{die}.png", dst / IMAGES_DIR / f"{die}.png")
        return dst

    return copy


POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _postgres_unavailable(reason: str) -> None:
    """Skip the PostgreSQL cases, or fail them where DIEGUARD_REQUIRE_POSTGRES=1."""
    if os.environ.get("DIEGUARD_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL required here but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    """The admin URL of a PostgreSQL server that answers (for creating databases)."""
    if importlib.util.find_spec("psycopg") is None:
        _postgres_unavailable("no PostgreSQL driver (psycopg) installed in the environment")
    import psycopg

    admin = os.environ.get("DIEGUARD_TEST_POSTGRES", POSTGRES_ADMIN)
    try:
        psycopg.connect(admin, autocommit=True, connect_timeout=3).close()
    except psycopg.OperationalError as err:
        reason = str(err).strip().splitlines()[0][:160]
        _postgres_unavailable(f"no PostgreSQL server answers at {admin}: {reason}")
    return admin


@pytest.fixture(scope="session")
def postgres_url(postgres_admin):
    """A fresh database on the PostgreSQL server (a postgresql:// URL), dropped after the
    session. Tests share it: each uses its own tables or names."""
    with throwaway_database(postgres_admin) as url:
        yield url


@pytest.fixture
def own_postgres_url(postgres_admin):
    """A fresh database for one test alone (its tables are its own), dropped after it."""
    with throwaway_database(postgres_admin) as url:
        yield url


@contextmanager
def throwaway_database(admin: str):
    """Create a database on the server of `admin`, yield its URL, drop it."""
    import psycopg

    name = f"dieguard_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        try:
            conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as err:
            _postgres_unavailable(f"cannot create a throw-away database at {admin}: {err}")
        try:
            yield admin.rsplit("/", 1)[0] + f"/{name}"
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on a free loopback port for the session (an http:// URL).

    boto3, MLflow and LanceDB reach it through the environment: dummy credentials,
    AWS_ENDPOINT_URL and MLFLOW_S3_ENDPOINT_URL (boto3 and moto[server] are installed with the
    project, so a missing one is an error, not a skip).
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }.items():
        env.setenv(key, value)
    try:
        yield endpoint
    finally:
        env.undo()
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A new empty bucket of this test's own on the session's S3 server (its name)."""
    import boto3

    name = f"dieguard-test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
