"""open_store: the default SQLite store under the current directory, and URI handling."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import mlflow
import pytest

from registry import open_store
from registry.store import artifact_uri, experiment_id, fluent_run, sqlalchemy_uri


def test_default_store_is_a_sqlite_file_under_mlruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store()
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert store.artifact_root == (tmp_path / "mlruns" / "artifacts").as_uri()
    exp = store.client.get_experiment(experiment_id(store, "demo"))
    assert exp.artifact_location == f"{store.artifact_root}/demo"
    assert experiment_id(store, "demo") == exp.experiment_id


@pytest.mark.skipif(
    importlib.util.find_spec("psycopg2") is not None, reason="psycopg2 serves postgresql://"
)
def test_postgres_urls_use_psycopg3():
    url = "postgresql://postgres@127.0.0.1:5432/test"
    assert sqlalchemy_uri(url) == "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    assert sqlalchemy_uri("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert sqlalchemy_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_artifact_roots():
    assert artifact_uri(Path("/data/art")) == "file:///data/art"
    assert artifact_uri("relative/art") == (Path.cwd() / "relative/art").as_uri()
    assert artifact_uri("s3://bucket/mlflow/") == "s3://bucket/mlflow"


def test_fluent_binding_restores_the_process_wide_tracking_uri(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///somewhere-else.db")
    client = store.client
    run = client.create_run(experiment_id(store, "binding"))
    with fluent_run(client, run.info.run_id):
        assert mlflow.get_tracking_uri() == client.tracking_uri
        assert mlflow.active_run().info.run_id == run.info.run_id
    assert mlflow.get_tracking_uri() == "sqlite:///somewhere-else.db"
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///somewhere-else.db"
    assert mlflow.active_run() is None
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
