"""Data sets on S3 (a moto server on loopback): fetched, verified, sealed and reused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest

from model.cache import split_digest
from model.config import load_config
from model.contract import read_split
from model.remote import (
    SNAPSHOT_FILE,
    RemoteDataError,
    SnapshotIntegrityError,
    fetch_dataset,
    local_config,
    resolve_data_dir,
    snapshot_origin,
    upload_dataset,
)
from model.schema import SPLITS

IMAGE = "train/images/{}.png"


@pytest.fixture
def local_data(copy_split) -> Path:
    """The first 12 dies of each split of local_data, as one data set folder."""
    return [copy_split(split, n=12) for split in SPLITS][0].parent


@pytest.fixture
def remote_data(local_data, s3_bucket) -> str:
    """`local_data` uploaded under s3://<bucket>/fab/2026-w48."""
    uri = f"s3://{s3_bucket}/fab/2026-w48"
    assert upload_dataset(local_data, uri) == 3 * (12 + 4)
    return uri


def first_image(data: Path) -> str:
    return sorted(p.stem for p in (data / "train" / "images").iterdir())[0]


def moto_key(bucket: str, key: str):
    """moto's stored object (to corrupt its bytes behind S3's back)."""
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    return get_backend("s3")[DEFAULT_ACCOUNT_ID]["global"].buckets[bucket].keys[key]


def test_fetch_verifies_and_seals_a_snapshot(remote_data, local_data, tmp_path):
    snap = fetch_dataset(remote_data, tmp_path / "snapshots")
    assert not snap.reused and snap.path == (tmp_path / "snapshots" / snap.digest).resolve()
    for split in SPLITS:
        assert snap.split_digests[split] == split_digest(read_split(local_data / split))
        assert split_digest(read_split(snap.path / split)) == snap.split_digests[split]
    image = snap.path / IMAGE.format(first_image(local_data))
    assert image.read_bytes() == (local_data / IMAGE.format(first_image(local_data))).read_bytes()
    assert not image.stat().st_mode & 0o222 and not image.parent.stat().st_mode & 0o222
    assert snapshot_origin(snap.path) == snap.lineage()
    assert snap.lineage()["uri"] == remote_data
    assert not list((tmp_path / "snapshots").glob(".*partial"))


def test_same_content_is_reused_without_a_download(remote_data, tmp_path):
    first = fetch_dataset(remote_data, tmp_path / "snapshots")
    client = boto3.client("s3")
    gets = []
    client.meta.events.register("before-call.s3.GetObject", lambda **kw: gets.append(1))
    again = fetch_dataset(
        remote_data, tmp_path / "snapshots", expected_digest=first.digest, client=client
    )
    assert again.reused and again.path == first.path and again.digest == first.digest
    assert gets == []


def test_resolve_data_dir_fetches_under_the_cache(remote_data, tmp_path):
    local = resolve_data_dir(remote_data, tmp_path / "cache")
    assert Path(local).parent == (tmp_path / "cache" / "snapshots").resolve()
    assert (Path(local) / SNAPSHOT_FILE).is_file()
    assert resolve_data_dir("data/default", tmp_path / "cache") == "data/default"


def test_local_config_points_a_remote_config_at_its_snapshot(remote_data, tmp_path):
    cfg = load_config("configs/smoke.yaml", [f"data.cache_dir={tmp_path / 'cache'}"])
    assert local_config(cfg) is cfg  # a local folder: nothing to fetch
    remote = load_config(
        "configs/smoke.yaml", [f"data_dir={remote_data}", f"data.cache_dir={tmp_path / 'cache'}"]
    )
    local = local_config(remote)
    assert snapshot_origin(local.data_dir)["uri"] == remote_data
    assert remote.data_dir == remote_data and local.train == remote.train


def test_corrupted_object_is_refused_by_name(remote_data, local_data, s3_bucket, tmp_path):
    key = "fab/2026-w48/" + IMAGE.format(first_image(local_data))
    stored = moto_key(s3_bucket, key)
    _ = stored.etag  # listed ETag stays; the bytes below change behind it
    stored._value_buffer.seek(100)
    stored._value_buffer.write(b"\x00\x01\x02\x03")
    with pytest.raises(SnapshotIntegrityError, match="do not match") as refused:
        fetch_dataset(remote_data, tmp_path / "snapshots")
    assert refused.value.offending == [IMAGE.format(first_image(local_data))]
    assert list((tmp_path / "snapshots").iterdir()) == []  # nothing half-written is left


def test_changed_content_gets_a_new_snapshot_and_a_pin_refuses_it(
    remote_data, local_data, s3_bucket, tmp_path
):
    first = fetch_dataset(remote_data, tmp_path / "snapshots")
    client = boto3.client("s3")
    client.put_object(Bucket=s3_bucket, Key="fab/2026-w48/val/labels.csv", Body=b"die_id,label\n")
    with pytest.raises(SnapshotIntegrityError, match=f"no longer holds snapshot {first.digest}"):
        fetch_dataset(remote_data, tmp_path / "snapshots", expected_digest=first.digest)
    second = fetch_dataset(remote_data, tmp_path / "snapshots")
    assert second.digest != first.digest and not second.reused
    assert second.split_digests["train"] == first.split_digests["train"]
    assert second.split_digests["val"] != first.split_digests["val"]


def test_a_changed_snapshot_file_is_refused_on_reuse(remote_data, local_data, tmp_path):
    snap = fetch_dataset(remote_data, tmp_path / "snapshots")
    name = "val/labels.csv"
    path = snap.path / name
    path.parent.chmod(0o755)
    path.chmod(0o644)
    path.write_text(path.read_text().replace(",0\n", ",1\n", 1))
    with pytest.raises(SnapshotIntegrityError, match="changed since it was fetched") as refused:
        fetch_dataset(remote_data, tmp_path / "snapshots")
    assert refused.value.offending == [name]


def test_multipart_objects_are_checked_against_their_etag(remote_data, s3_bucket, tmp_path):
    from boto3.s3.transfer import TransferConfig

    big = tmp_path / "scan.bin"
    big.write_bytes(os.urandom(11 * 2**20))
    parts = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    boto3.client("s3").upload_file(str(big), s3_bucket, "fab/2026-w48/test/scan.bin", Config=parts)
    snap = fetch_dataset(remote_data, tmp_path / "snapshots")
    record = json.loads((snap.path / SNAPSHOT_FILE).read_text())
    (entry,) = [o for o in record["objects"] if o["key"] == "test/scan.bin"]
    assert entry["etag"].endswith("-3")
    assert (snap.path / "test" / "scan.bin").read_bytes() == big.read_bytes()


def test_a_prefix_without_every_split_is_refused(tiny_data, s3_bucket, tmp_path):
    boto3.client("s3").upload_file(
        str(tiny_data / "train" / "labels.csv"), s3_bucket, "partial/train/labels.csv"
    )
    with pytest.raises(RemoteDataError, match="holds no objects for splits") as refused:
        fetch_dataset(f"s3://{s3_bucket}/partial", tmp_path / "snapshots")
    assert refused.value.offending == ["val", "test"]
