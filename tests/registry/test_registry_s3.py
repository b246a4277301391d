"""The production registry: MLflow on PostgreSQL with artifacts on S3 (a moto server on
loopback, reached through MLFLOW_S3_ENDPOINT_URL). Skipped without PostgreSQL or moto."""

from __future__ import annotations

import uuid

import boto3
import pytest

from registry import (
    BundleError,
    Split,
    audit,
    download_bundle,
    log_bundle,
    log_training,
    open_store,
    register,
)
from registry.bundle import MANIFEST_FILE, MODEL_FILE
from tests.registry.fake_run import DATA_DIGEST, KIND, SPLIT_DIGESTS


@pytest.fixture(scope="module")
def s3_store(postgres_url, s3_endpoint):
    """A store on the session's PostgreSQL database whose artifacts go to a new bucket."""
    bucket = f"dieguard-mlflow-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    store = open_store(postgres_url, f"s3://{bucket}/mlflow")
    assert store.artifact_root == f"s3://{bucket}/mlflow"
    return store, bucket


@pytest.fixture(scope="module")
def s3_logged(s3_store, run_files):
    """The fake run logged into its own experiment (artifact location on S3)."""
    store, _ = s3_store
    splits = {
        name: Split(digest, f"s3://fab-exports/2026-w48/{name}", 40)
        for name, digest in SPLIT_DIGESTS.items()
    }
    return log_training(
        store,
        f"s3-tests-{uuid.uuid4().hex[:8]}",
        run_files["folder"],
        run_files["config"],
        splits,
        kinds=(KIND,),
        deployments={KIND: run_files["deploy"]},
        artifacts=run_files["artifacts"],
        data_digest=DATA_DIGEST,
    )


def test_artifact_root_from_the_environment(s3_store, postgres_url, monkeypatch):
    _, bucket = s3_store
    monkeypatch.setenv("DIEGUARD_ARTIFACT_ROOT", f"s3://{bucket}/mlflow/")
    assert open_store(postgres_url).artifact_root == f"s3://{bucket}/mlflow"


def keys(bucket: str, prefix: str = "mlflow/") -> list[str]:
    pages = (
        boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_training_artifacts_and_models_land_on_s3(s3_store, s3_logged):
    store, bucket = s3_store
    run = store.client.get_run(s3_logged.run_id)
    assert run.info.artifact_uri.startswith(f"s3://{bucket}/mlflow/")
    stored = keys(bucket)
    assert any(k.endswith("prepared/scaler.json") for k in stored)
    assert any(k.endswith("/" + MODEL_FILE) or k.endswith(".onnx") for k in stored)


def test_register_and_download_bundle_from_s3(s3_store, s3_logged, model_name, tmp_path):
    store, _ = s3_store
    version = register(store.client, model_name, s3_logged.serving[KIND], {"data_digest": "x"})
    bundle = download_bundle(store.client, model_name, version, tmp_path / "bundle")
    assert (bundle / MODEL_FILE).is_file() and (bundle / MANIFEST_FILE).is_file()
    record = audit(store.client, model_name, version)
    sources = {s["name"]: s["source"] for s in record["data"]["splits"]}
    assert sources["train"] == "s3://fab-exports/2026-w48/train"


def test_log_bundle_round_trips_through_s3(s3_store, s3_logged, model_name, tmp_path):
    store, bucket = s3_store
    version = register(store.client, model_name, s3_logged.serving[KIND], {})
    first = download_bundle(store.client, model_name, version, tmp_path / "first")
    record = log_bundle(store, f"s3-bundles-{uuid.uuid4().hex[:8]}", first, KIND)
    assert store.client.get_run(record.run_id).info.artifact_uri.startswith(f"s3://{bucket}/")
    again = register(store.client, model_name, record.serving[KIND], {})
    second = download_bundle(store.client, model_name, again, tmp_path / "second")
    assert (second / MODEL_FILE).read_bytes() == (first / MODEL_FILE).read_bytes()


def test_an_altered_model_on_s3_is_refused(s3_store, s3_logged, model_name, tmp_path):
    store, bucket = s3_store
    record = log_bundle(
        store,
        f"s3-altered-{uuid.uuid4().hex[:8]}",
        download_bundle(
            store.client,
            model_name,
            register(store.client, model_name, s3_logged.serving[KIND], {}),
            tmp_path / "source",
        ),
        KIND,
    )
    version = register(store.client, model_name, record.serving[KIND], {})
    source = store.client.get_model_version(model_name, version).source
    prefix = source[len(f"s3://{bucket}/") :]
    (model_key,) = [k for k in keys(bucket, prefix) if k.endswith("/" + MODEL_FILE)]
    boto3.client("s3").put_object(Bucket=bucket, Key=model_key, Body=b"not the model")
    with pytest.raises(BundleError, match=MODEL_FILE):
        download_bundle(store.client, model_name, version, tmp_path / "bundle")
