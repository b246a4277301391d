"""The content-addressed image store: refs, deduplication, atomic writes, refused refs; the
same on S3, against a real S3-compatible server on loopback."""

from __future__ import annotations

import hashlib
import io
import socket
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from service.image_store import ImageStore, image_format, open_image_store
from tests.service.conftest import KEYS, inspect_ok, live_config, start_service


def encoded(fmt: str, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt.upper())
    return buffer.getvalue()


def stored_files(store: ImageStore) -> list:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


def test_put_names_the_file_by_its_hash(tmp_path):
    store = ImageStore(tmp_path / "images")
    data = encoded("png")
    ref = store.put(data, "png")
    digest = hashlib.sha256(data).hexdigest()
    assert ref == f"{digest[:2]}/{digest}.png"
    assert store.get(ref) == data
    assert store.path(ref) == store.root / ref
    assert image_format(ref) == "png"


def test_jpeg_is_stored_as_jpg(tmp_path):
    store = ImageStore(tmp_path)
    ref = store.put(encoded("jpeg"), "jpeg")
    assert ref.endswith(".jpg") and image_format(ref) == "jpeg"


def test_same_bytes_are_stored_once_even_at_once(tmp_path):
    store = ImageStore(tmp_path)
    data = encoded("png", seed=1)
    refs: list[str] = []
    barrier = threading.Barrier(4)

    def put():
        barrier.wait()
        refs.append(store.put(data, "png"))

    threads = [threading.Thread(target=put) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(refs)) == 1
    assert stored_files(store) == [store.path(refs[0])]  # no temporary files left behind
    assert store.put(encoded("png", seed=2), "png") != refs[0]
    assert len(stored_files(store)) == 2


@pytest.mark.parametrize(
    "ref",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "ab/../../" + "a" * 64 + ".png",
        "ab/" + "a" * 64 + ".gif",
        "AB/" + "A" * 64 + ".png",
        "",
        None,
    ],
)
def test_path_refuses_refs_that_are_not_the_stores(tmp_path, ref):
    with pytest.raises(ValueError, match="image ref"):
        ImageStore(tmp_path).path(ref)


def test_refusals(tmp_path):
    store = ImageStore(tmp_path)
    with pytest.raises(ValueError, match="format"):
        store.put(b"GIF89a", "gif")
    with pytest.raises(ValueError, match="no bytes"):
        store.put(b"", "png")
    with pytest.raises(FileNotFoundError, match="no image stored"):
        store.get("ab/" + "ab" * 32 + ".png")


def test_s3_store_round_trip_against_a_local_s3_server(s3_bucket):
    import boto3  # here: the local store's tests need no S3 client

    store = open_image_store(f"s3://{s3_bucket}/station-1/images")
    data = encoded("png", seed=3)
    ref = store.put(data, "png")
    digest = hashlib.sha256(data).hexdigest()
    assert ref == f"{digest[:2]}/{digest}.png"  # the refs of the local store
    assert store.put(data, "png") == ref  # the same bytes, the same object
    assert store.exists(ref) and store.get(ref) == data
    listed = boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"station-1/images/{ref}"]
    other = "ab/" + "ab" * 32 + ".png"
    assert not store.exists(other)
    with pytest.raises(FileNotFoundError, match="no image stored"):
        store.get(other)
    with pytest.raises(ValueError, match="image ref"):
        store.get("../../etc/passwd")
    with pytest.raises(ValueError, match="format"):
        store.put(b"GIF89a", "gif")


def test_a_stations_local_images_are_copied_to_s3_once_each_and_checked(s3_bucket, tmp_path):
    from click.testing import CliRunner

    from dieguard.cli import main as cli

    local = ImageStore(tmp_path / "state" / "images")
    refs = [local.put(encoded(fmt, seed), fmt) for seed, fmt in enumerate(("png", "jpeg", "png"))]
    (local.root / ".part-of-a-write").write_bytes(b"half")  # not an image: not copied
    bad = refs[2]
    local.path(bad).write_bytes(b"bit rot")  # no longer the bytes its name hashes
    target = f"s3://{s3_bucket}/fab-a"
    run = CliRunner().invoke(
        cli, ["copy-images", "--to", target, "--state-dir", str(tmp_path / "state")]
    )
    assert run.exit_code == 1, run.output
    assert f'"corrupt": ["{bad}"]' in run.output and '"copied": 2' in run.output
    s3 = open_image_store(target)
    assert [s3.get(r) == local.get(r) for r in refs[:2]] == [True, True] and not s3.exists(bad)
    local.path(bad).unlink()
    again = CliRunner().invoke(
        cli, ["copy-images", "--to", target, "--state-dir", str(tmp_path / "state")]
    )
    assert again.exit_code == 0 and '"copied": 0, "present": 2' in again.output
    missing = CliRunner().invoke(
        cli, ["copy-images", "--to", target, "--state-dir", str(tmp_path / "none")]
    )
    assert missing.exit_code != 0 and "no image store" in missing.output


def test_s3_store_that_cannot_be_reached_stores_nothing(s3_bucket, monkeypatch):
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{sock.getsockname()[1]}")
    store = open_image_store(f"s3://{s3_bucket}")
    with pytest.raises(OSError, match="image not stored"):
        store.put(encoded("png"), "png")


def test_the_service_stores_each_image_on_s3_before_its_200(
    registry_uri, s3_bucket, tmp_path, dies
):
    import boto3

    config = live_config(registry_uri, tmp_path / "state", image_store=f"s3://{s3_bucket}/fab-a")
    service, stop = start_service(config, registry_uri)
    try:
        die = dies[2]
        inspect_ok(service, die)
        record = service.app.state.service.log.get(die.die_id)
        stored = boto3.client("s3").get_object(Bucket=s3_bucket, Key=f"fab-a/{record['image_ref']}")
        assert stored["Body"].read() == die.image  # there once the station had its answer
        with httpx.Client(base_url=service.url, auth=("op", KEYS["operator"])) as client:
            shown = client.get(f"/dashboard/dies/{die.die_id}/image.png")
        assert shown.status_code == 200 and shown.content == die.image
    finally:
        stop()
    assert not (tmp_path / "state" / "images").exists()  # nothing on the pod's disk
