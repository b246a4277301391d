"""Registry fixtures: the fake run folder, and MLflow stores it is logged into.

Stores: a SQLite file, and the session's throw-away PostgreSQL database (`postgres_url` in
tests/conftest.py: skipped, or failed under DIEGUARD_REQUIRE_POSTGRES=1, when none answers).
Each store is opened and the run logged once per session; tests register under their own
model names, so they do not see each other's versions.
"""

from __future__ import annotations

import uuid

import pytest

from registry import open_store
from tests.registry.fake_run import DATA_DIGEST, GIT_COMMIT, build_run, log_fake_run


@pytest.fixture(scope="session")
def run_files(tmp_path_factory) -> dict:
    """The run folder and what log_training needs with it (read-only for tests)."""
    return build_run(tmp_path_factory.mktemp("registry_run"))


@pytest.fixture(scope="session")
def postgres_store_url(postgres_url) -> str:
    """The session's throw-away PostgreSQL database (see tests/conftest.py)."""
    return postgres_url


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
