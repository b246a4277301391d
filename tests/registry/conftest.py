"""Registry fixtures: the fake run folder, and MLflow stores it is logged into.

Stores: a SQLite file, and a throw-away database on a PostgreSQL server at 127.0.0.1:5432
(trust auth, user postgres; or the admin URL in DIEGUARD_TEST_POSTGRES) when one answers.
Each store is opened and the run logged once per session; tests register under their own
model names, so they do not see each other's versions.
"""

from __future__ import annotations

import importlib.util
import os
import uuid

import pytest

from registry import open_store
from tests.registry.fake_run import DATA_DIGEST, GIT_COMMIT, build_run, log_fake_run

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def run_files(tmp_path_factory) -> dict:
    """The run folder and what log_training needs with it (read-only for tests)."""
    return build_run(tmp_path_factory.mktemp("registry_run"))


def _unavailable(reason: str) -> None:
    """Skip the PostgreSQL cases, or fail them where DIEGUARD_REQUIRE_POSTGRES=1 (CI has one)."""
    if os.environ.get("DIEGUARD_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL required here but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_store_url():
    """A fresh database on the local PostgreSQL server, dropped after the session."""
    if importlib.util.find_spec("psycopg") is None:
        _unavailable("no PostgreSQL driver (psycopg) installed in the environment")
    import psycopg

    admin = os.environ.get("DIEGUARD_TEST_POSTGRES", POSTGRES_ADMIN)
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        reason = str(err).strip().splitlines()[0][:160]
        _unavailable(f"no PostgreSQL server answers at {admin}: {reason}")
    name = f"dieguard_registry_{uuid.uuid4().hex[:10]}"
    with conn:
        try:
            conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as err:
            _unavailable(f"cannot create a throw-away database at {admin}: {err}")
        try:
            yield admin.rsplit("/", 1)[0] + f"/{name}"
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def store(request, tmp_path_factory):
    """An opened store: SQLite file, or a throw-away PostgreSQL database."""
    root = tmp_path_factory.mktemp(f"store_{request.param}")
    if request.param == "sqlite":
        return open_store(f"sqlite:///{root / 'mlflow.db'}")
    url = request.getfixturevalue("postgres_store_url")
    return open_store(url, root / "artifacts")


@pytest.fixture(scope="session")
def logged(store, run_files):
    """The run folder logged once into the store (a TrainingRecord)."""
    return log_fake_run(
        store,
        run_files,
        data_digest=DATA_DIGEST,
        git_commit=GIT_COMMIT,
        tags={"trigger": "test", "attempt": 1},
    )


@pytest.fixture
def model_name() -> str:
    """A registered model name of this test's own."""
    return f"dieguard-test-{uuid.uuid4().hex[:8]}"
