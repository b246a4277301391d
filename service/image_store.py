"""Content-addressed storage of uploaded die images: one file per distinct upload.

A stored image is named by the SHA-256 of its bytes, under a two-character fan-out folder:
``ab/abcdef...png``. That relative name (the *ref*) is what inspection records keep. Writes
are atomic (a temporary file renamed into place) and durable (fsynced before `put` returns),
so a reader never sees half an image, a crash loses none that was stored, and the same bytes
uploaded twice are stored once. `open_image_store` opens a folder, or an S3 prefix
(``s3://bucket/prefix``, service.s3_images) with the same refs and the same guarantees.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from service.spool import sync_folder

SUFFIXES = {"png": ".png", "jpeg": ".jpg"}
REF_PATTERN = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}\.(?:png|jpg)$")


class Images(Protocol):
    """What every image store does (ImageStore, service.s3_images.S3ImageStore)."""

    def put(self, data: bytes, fmt: str) -> str: ...

    def get(self, ref: str) -> bytes: ...

    def exists(self, ref: str) -> bool: ...


def open_image_store(location: str | Path) -> Images:
    """The image store at a folder, or at an S3 prefix (``s3://bucket/prefix``)."""
    if str(location).startswith("s3://"):
        from service.s3_images import S3ImageStore  # boto3 only where S3 is used

        return S3ImageStore(str(location))
    return ImageStore(location)


def content_ref(data: bytes, fmt: str) -> str:
    """The ref of an upload: ``"ab/ab12...ef.png"``.

    Raises:
        ValueError: unknown format or no bytes.
    """
    if fmt not in SUFFIXES:
        raise ValueError(f"unknown image format {fmt!r}; expected one of {sorted(SUFFIXES)}")
    if not data:
        raise ValueError("an image upload has no bytes")
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest}{SUFFIXES[fmt]}"


def check_ref(ref: str) -> str:
    """The ref, when it is one that `put` returns.

    Raises:
        ValueError: it is not (e.g. it would escape the store).
    """
    if not isinstance(ref, str) or not REF_PATTERN.match(ref):
        raise ValueError(f"not an image ref of this store: {ref!r}")
    return ref


class ImageStore:
    """Uploaded images under one root folder, addressed by their content hash."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, fmt: str) -> str:
        """Store an upload (once per distinct content).

        Args:
            data: the encoded image as received.
            fmt: "png" or "jpeg".
        Returns:
            The ref, e.g. ``"ab/ab12...ef.png"``, relative to the root.
        Raises:
            ValueError: unknown format or no bytes. OSError: not stored.
        """
        ref = content_ref(data, fmt)
        target = self.root / ref
        if target.exists():
            return ref
        target.parent.mkdir(exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
            sync_folder(target.parent)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return ref

    def path(self, ref: str) -> Path:
        """The file of a ref (which may not exist).

        Raises:
            ValueError: the ref is not one that `put` returns (e.g. it escapes the root).
        """
        path = (self.root / check_ref(ref)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"image ref escapes the store root: {ref!r}")
        return path

    def get(self, ref: str) -> bytes:
        """The stored bytes of a ref.

        Raises:
            ValueError: malformed ref. FileNotFoundError: nothing stored under it.
        """
        path = self.path(ref)
        if not path.is_file():
            raise FileNotFoundError(f"no image stored under {ref} in {self.root}")
        return path.read_bytes()

    def exists(self, ref: str) -> bool:
        """True when an image is stored under a well-formed ref."""
        return self.path(ref).is_file()

    def refs(self) -> list[str]:
        """Every stored image's ref, sorted (half-written temporary files are not images)."""
        found = (p.relative_to(self.root).as_posix() for p in self.root.glob("??/*"))
        return sorted(ref for ref in found if REF_PATTERN.match(ref))


def copy_images(source: ImageStore, target: Images) -> dict:
    """Copy every image of a local store that `target` lacks (moving a station's images to
    S3, say). Each is checked against its ref, its content hash, before it is copied; one
    that does not match is left out and named. Running it again copies only what is left.

    Returns: {"copied": n, "present": n, "corrupt": [refs]}.
    """
    copied, present, corrupt = 0, 0, []
    for ref in source.refs():
        if target.exists(ref):
            present += 1
            continue
        data, fmt = source.get(ref), image_format(ref)
        if content_ref(data, fmt) != ref:
            corrupt.append(ref)
            continue
        target.put(data, fmt)
        copied += 1
    return {"copied": copied, "present": present, "corrupt": corrupt}


def image_format(ref: str) -> str:
    """The format ("png" or "jpeg") a ref was stored as."""
    suffix = Path(ref).suffix
    for fmt, known in SUFFIXES.items():
        if suffix == known:
            return fmt
    raise ValueError(f"not an image ref of this store: {ref!r}")
