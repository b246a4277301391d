"""Opening the MLflow store: tracking URI, artifact root, experiments, fluent-API binding."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

DEFAULT_DIR = "mlruns"  # under the current directory
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
ARTIFACT_ROOT_ENV = "DIEGUARD_ARTIFACT_ROOT"  # e.g. s3://bucket/mlflow in production


@dataclass(frozen=True)
class Store:
    """An MLflow client and the artifact root that new experiments are created under.

    The client alone serves every registry call; the artifact root matters only when an
    experiment is created (MLflow would otherwise put artifacts under ./mlruns).
    """

    client: MlflowClient
    artifact_root: str

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri


def open_store(tracking_uri: str | None = None, artifact_root: str | Path | None = None) -> Store:
    """Connect to (and, for a new database, create) an MLflow tracking store and registry.

    Args:
        tracking_uri: ``sqlite:///path/mlflow.db``, ``postgresql://user@host/db`` (served by
            psycopg 3 when psycopg2 is absent) or any MLflow URI; None: ``mlruns/mlflow.db``
            under the current directory.
        artifact_root: folder or URI (``s3://bucket/mlflow``: the endpoint is MLflow's
            MLFLOW_S3_ENDPOINT_URL) for artifacts of experiments created here; None:
            $DIEGUARD_ARTIFACT_ROOT, else an ``artifacts`` folder beside a SQLite file, else
            ``mlruns/artifacts`` here.
    Raises:
        MlflowException, sqlalchemy errors: the store cannot be reached.
    """
    if tracking_uri is None:
        tracking_uri = f"sqlite:///{(Path.cwd() / DEFAULT_DIR / DB_FILE).resolve()}"
    tracking_uri = sqlalchemy_uri(tracking_uri)
    db_file = sqlite_path(tracking_uri)
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
    if artifact_root is None:
        artifact_root = os.environ.get(ARTIFACT_ROOT_ENV) or default_root(tracking_uri)
    root = artifact_uri(artifact_root)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.search_experiments(max_results=1)  # connect (and migrate) now, not mid-logging
    return Store(client, root)


def sqlalchemy_uri(uri: str) -> str:
    """``postgresql://`` as ``postgresql+psycopg://`` when only psycopg 3 is installed."""
    scheme = urlparse(uri).scheme
    psycopg3_only = not _installed("psycopg2") and _installed("psycopg")
    if scheme in ("postgresql", "postgres") and psycopg3_only:
        return "postgresql+psycopg" + uri[len(scheme) :]
    return uri


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores)."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def default_root(tracking_uri: str) -> Path:
    """Artifacts beside a SQLite file, else ``mlruns/artifacts`` under the current directory."""
    db_file = sqlite_path(tracking_uri)
    base = db_file.parent if db_file is not None else Path.cwd() / DEFAULT_DIR
    return base / ARTIFACTS_DIR


def artifact_uri(root: str | Path) -> str:
    """A local folder as an absolute ``file://`` URI; other URIs (s3://, ...) unchanged."""
    text = str(root)
    if isinstance(root, Path) or len(urlparse(text).scheme) <= 1:  # no scheme, or a drive
        return Path(text).expanduser().resolve().as_uri()
    return text.rstrip("/")


def experiment_id(store: Store, name: str) -> str:
    """The experiment's id, creating it under ``<artifact_root>/<name>`` when it is new."""
    found = store.client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return store.client.create_experiment(name, f"{store.artifact_root}/{name}")
    except MlflowException:  # created meanwhile by a concurrent task
        found = store.client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@contextmanager
def fluent_run(client: MlflowClient, run_id: str) -> Iterator[None]:
    """Make the client's store and `run_id` the fluent API's for the block, then end the run.

    Model logging (``mlflow.<flavor>.log_model``) and ``mlflow.log_input`` read the process-wide
    tracking URI and active run. The previous tracking URI is restored on exit; the run ends
    FINISHED, or FAILED when the block raises. Not safe against a concurrent call with another
    store in the same process.
    """
    saved = os.environ.get(TRACKING_ENV)  # MLflow's own restore would unset it
    try:
        with _use_tracking_uri(client.tracking_uri), mlflow.start_run(run_id=run_id):
            yield
    finally:
        if saved is None:
            os.environ.pop(TRACKING_ENV, None)
        else:
            os.environ[TRACKING_ENV] = saved
