"""Data sets on S3: fetched once into a verified, read-only, content-addressed snapshot.

    data_dir = resolve_data_dir("s3://fab-exports/2026-w48", ".cache/dieguard")
    # -> .cache/dieguard/snapshots/<digest>, a folder in the dataset contract

The snapshot's digest covers the listing (key, size, ETag of every object under train/, val/
and test/), so the same content asked again is served from the folder without a download,
and changed content gets a new folder. Every object is checked against its size and ETag
as it arrives, then the split digests (`model.cache.split_digest`) are computed and written
with the listing to SNAPSHOT.json. Files and split folders are read-only; the snapshot's
top folder stays writable for a quarantine marker. A snapshot is re-hashed when reused.

boto3 is imported when a fetch runs: model/ still needs only torch, numpy and pandas. The
endpoint and credentials are boto3's own (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import shutil
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from model.cache import content_digest
from model.config import RunConfig
from model.contract import DatasetError
from model.schema import IMAGES_DIR, SPLITS

SCHEME = "s3://"
SNAPSHOTS_DIR = "snapshots"  # under data.cache_dir
SNAPSHOT_FILE = "SNAPSHOT.json"
_CHUNK = 1 << 20


class RemoteDataError(DatasetError):
    """A remote data set cannot be fetched: no such prefix, or a split without objects."""


class SnapshotIntegrityError(RemoteDataError):
    """Bytes differ from what was listed or recorded; names the objects or files."""


@dataclass(frozen=True)
class Snapshot:
    """A fetched data set: where it came from, its digest and its local folder."""

    uri: str
    digest: str
    path: Path
    split_digests: dict[str, str] = field(default_factory=dict)
    reused: bool = False

    def lineage(self) -> dict:
        """The snapshot's address for the registry: s3 URI, digest, split digests."""
        return {"uri": self.uri, "digest": self.digest, "split_digests": self.split_digests}


def is_remote(data_dir: str | Path) -> bool:
    """Whether `data_dir` names an S3 prefix rather than a local folder."""
    return str(data_dir).startswith(SCHEME)


def resolve_data_dir(data_dir: str | Path, cache_dir: str | Path) -> str:
    """A local folder unchanged; an ``s3://`` URI fetched to its snapshot folder (absolute)."""
    if not is_remote(data_dir):
        return str(data_dir)
    return str(fetch_dataset(str(data_dir), Path(cache_dir) / SNAPSHOTS_DIR).path)


def local_config(cfg: RunConfig) -> RunConfig:
    """The config itself when its data_dir is a folder; else a copy naming the snapshot."""
    if not is_remote(cfg.data_dir):
        return cfg
    return dataclasses.replace(cfg, data_dir=resolve_data_dir(cfg.data_dir, cfg.data.cache_dir))


def snapshot_origin(data_dir: str | Path) -> dict | None:
    """The SNAPSHOT.json address (uri, digest, split digests) of a snapshot folder, else None."""
    path = Path(data_dir) / SNAPSHOT_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return {k: record[k] for k in ("uri", "digest", "split_digests")}


def fetch_dataset(
    uri: str, root: str | Path, expected_digest: str | None = None, client=None
) -> Snapshot:
    """Fetch ``s3://bucket/prefix`` (train/val/test below it) into ``root/<digest>``.

    Args:
        uri: the data set's prefix.
        root: the snapshots folder (e.g. ``.cache/dieguard/snapshots``).
        expected_digest: refuse unless the prefix still holds exactly this snapshot.
        client: a boto3 S3 client (default: one from the environment).
    Returns:
        The snapshot; ``reused`` when the folder already held this content.
    Raises:
        RemoteDataError: nothing under the prefix, or a split without objects.
        SnapshotIntegrityError: an object whose bytes do not match its size or ETag, content
            other than `expected_digest`, or a reused snapshot whose files have changed.
    """
    uri = uri.rstrip("/")
    bucket, prefix = _parse(uri)
    client = client or _client()
    objects = _list_objects(client, bucket, prefix, uri)
    digest = listing_digest(objects)
    if expected_digest and digest != expected_digest:
        raise SnapshotIntegrityError(
            f"{uri} no longer holds snapshot {expected_digest} (now {digest})", [uri]
        )
    dest = Path(root) / digest
    reused = (dest / SNAPSHOT_FILE).is_file() or not _download(
        client, bucket, prefix, uri, objects, dest
    )
    if reused:
        verify_snapshot(dest)
    record = json.loads((dest / SNAPSHOT_FILE).read_text())
    return Snapshot(uri, digest, dest.resolve(), record["split_digests"], reused)


def upload_dataset(folder: str | Path, uri: str, client=None) -> int:
    """Upload a local data set's split folders under ``s3://bucket/prefix``; files uploaded."""
    bucket, prefix = _parse(uri.rstrip("/"))
    client = client or _client()
    base = f"{prefix}/" if prefix else ""
    files = [p for s in SPLITS for p in sorted((Path(folder) / s).rglob("*")) if p.is_file()]
    with ThreadPoolExecutor(8) as pool:
        keys = [base + p.relative_to(folder).as_posix() for p in files]
        list(pool.map(lambda pk: client.upload_file(str(pk[0]), bucket, pk[1]), zip(files, keys)))
    return len(files)


def listing_digest(objects: list[dict]) -> str:
    """Digest of a listing: every object's relative key, size and ETag, in key order."""
    h = hashlib.blake2b(digest_size=16)
    for o in sorted(objects, key=lambda o: o["key"]):
        h.update(f"{o['key']}\0{o['size']}\0{o['etag']}\n".encode())
    return h.hexdigest()


def verify_snapshot(folder: str | Path) -> None:
    """Re-hash every file of a snapshot against SNAPSHOT.json; raise naming changed files."""
    folder = Path(folder)
    record = json.loads((folder / SNAPSHOT_FILE).read_text())
    changed = []
    for o in record["objects"]:
        path = folder / o["key"]
        if not path.is_file() or path.stat().st_size != o["size"] or _md5(path) != o["md5"]:
            changed.append(o["key"])
    if changed:
        raise SnapshotIntegrityError(f"snapshot {folder} changed since it was fetched", changed)


def _parse(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len(SCHEME) :].partition("/")
    if not uri.startswith(SCHEME) or not bucket:
        raise RemoteDataError(f"not an s3://bucket/prefix URI: {uri!r}")
    return bucket, prefix.strip("/")


def _client():
    import boto3  # lazily: model/ runs without it

    return boto3.client("s3")


def _list_objects(client, bucket: str, prefix: str, uri: str) -> list[dict]:
    """Objects under the split folders: relative key, size and ETag (quotes stripped)."""
    base = f"{prefix}/" if prefix else ""
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for item in page.get("Contents", []):
            key = item["Key"][len(base) :]
            if key.split("/", 1)[0] in SPLITS and not key.endswith("/"):
                objects.append({"key": key, "size": item["Size"], "etag": item["ETag"].strip('"')})
    absent = [s for s in SPLITS if not any(o["key"].startswith(f"{s}/") for o in objects)]
    if absent:
        raise RemoteDataError(f"{uri} holds no objects for splits", absent)
    return objects


def _download(client, bucket, prefix, uri, objects, dest: Path) -> bool:
    """Download, verify and seal into a private folder, then move it to `dest` at once.

    Returns False when another process put the same snapshot there first (theirs is kept).
    """
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    base = f"{prefix}/" if prefix else ""
    try:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda o: _get(client, bucket, base, o, tmp), objects))
        bad = sorted(key for key, md5 in got if md5 is None)
        if bad:
            raise SnapshotIntegrityError(f"objects at {uri} do not match their size or ETag", bad)
        md5s = dict(got)
        record = {
            "uri": uri,
            "digest": dest.name,
            "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "split_digests": {s: _split_digest(tmp / s) for s in SPLITS},
            "objects": [o | {"md5": md5s[o["key"]]} for o in objects],
        }
        (tmp / SNAPSHOT_FILE).write_text(json.dumps(record, indent=1) + "\n")
        _seal(tmp)
        try:
            tmp.rename(dest)
        except OSError:  # fetched meanwhile by another process: keep theirs
            if not (dest / SNAPSHOT_FILE).is_file():
                raise
            return False
        return True
    finally:
        if tmp.exists():
            _remove(tmp)


def _get(client, bucket: str, base: str, obj: dict, tmp: Path) -> tuple[str, str | None]:
    """Stream one object to disk; its md5, or None when its size or ETag do not match."""
    from botocore.exceptions import ClientError, FlexibleChecksumError

    path = tmp / obj["key"]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        reply = client.get_object(Bucket=bucket, Key=base + obj["key"], IfMatch=obj["etag"])
        with path.open("wb") as out:
            for chunk in reply["Body"].iter_chunks(_CHUNK):
                out.write(chunk)
    except FlexibleChecksumError:  # the stored CRC (uploads since boto3 1.36) disagrees
        return obj["key"], None
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("412", "PreconditionFailed"):
            return obj["key"], None  # replaced since it was listed
        raise
    md5 = _md5(path)
    part_size = _part_size(client, bucket, base, obj)
    actual = _multipart_etag(path, part_size) if part_size else md5
    ok = path.stat().st_size == obj["size"] and actual == obj["etag"]
    return obj["key"], md5 if ok else None


def _part_size(client, bucket: str, base: str, obj: dict) -> int:
    """0 for a single-part object; else the size of its first part (all but the last match)."""
    if "-" not in obj["etag"]:
        return 0
    head = client.head_object(Bucket=bucket, Key=base + obj["key"], PartNumber=1)
    return int(head["ContentLength"])


def _multipart_etag(path: Path, part_size: int) -> str:
    """S3's ETag of a multipart upload: md5 of the parts' md5s, then "-<parts>"."""
    digests = []
    with path.open("rb") as handle:
        while part := handle.read(part_size):
            digests.append(hashlib.md5(part).digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def _split_digest(split_dir: Path) -> str:
    """`model.cache.split_digest` of a split, with images in die-id order, without reading
    its tables (a batch that breaks the contract is refused by validation, not here)."""
    images = split_dir / IMAGES_DIR
    paths = sorted(images.iterdir(), key=lambda p: p.stem) if images.is_dir() else []
    return content_digest(split_dir, paths)


def _seal(folder: Path) -> None:
    """Files and split folders read-only; the top folder stays writable for a marker."""
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        mode = path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        path.chmod(mode)


def _remove(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    shutil.rmtree(folder)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
