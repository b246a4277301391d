"""Content digests of data, and the decode-once uint8 image cache keyed by them."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.contract import ImageFormatError, SplitTables
from model.schema import IMAGE_SIZE

ALLOWED_FORMATS = ("PNG", "JPEG", "TIFF")
_CHUNK = 1 << 20


def file_digest(path: Path, hasher=None) -> str:
    """blake2b of one file's bytes."""
    h = hasher or hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def split_digest(tables: SplitTables) -> str:
    """Digest of a split's content: every table and every image, in a fixed order."""
    return content_digest(tables.split_dir, tables.image_paths)


def content_digest(split_dir: Path, image_paths: list[Path]) -> str:
    """Digest of a split folder's files (by name), then its images in the order given."""
    h = hashlib.blake2b(digest_size=16)
    files = sorted(p for p in Path(split_dir).iterdir() if p.is_file())
    for path in [*files, *image_paths]:
        h.update(path.name.encode() + b"\0")
        file_digest(path, h)
    return h.hexdigest()


def cached_images(
    tables: SplitTables, size: int, cache_dir: str | Path, digest: str | None = None
) -> np.ndarray:
    """The split's images as uint8 (N, size, size, 3), decoded once and reused.

    Args:
        tables: the split (its image paths, in die-id order).
        size: side after resizing from IMAGE_SIZE.
        cache_dir: where cache files live; one file per (content digest, size).
        digest: the split's digest when already known.
    Returns:
        A read-only memory map of the cached array.
    """
    digest = digest or split_digest(tables)
    path = Path(cache_dir) / f"images-{digest}-{size}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = decode_images(tables.image_paths, size)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as handle:
            np.save(handle, pixels)
        tmp.replace(path)  # atomic: a reader never sees half a cache file
    return np.load(path, mmap_mode="r")


def decode_images(paths: list[Path], size: int, threads: int = 4) -> np.ndarray:
    """Decode and check images; raise ImageFormatError naming every bad file."""
    out = np.empty((len(paths), size, size, 3), np.uint8)
    errors: list[str] = []

    def work(i: int) -> None:
        try:
            out[i] = read_image(paths[i], size)
        except ImageFormatError as err:
            errors.append(f"{paths[i].name} ({err.reason})")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(len(paths))))
    if errors:
        raise ImageFormatError("images break the contract", sorted(errors))
    return out


def read_image(source, size: int = IMAGE_SIZE) -> np.ndarray:
    """Open one die image (path or file object) as uint8 (size, size, 3).

    Only PNG, JPEG and TIFF are opened; the image must be 256x256 RGB.
    """
    try:
        with Image.open(source, formats=ALLOWED_FORMATS) as img:
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                raise ImageFormatError(f"size {img.size[0]}x{img.size[1]}, expected 256x256")
            if img.mode != "RGB":
                raise ImageFormatError(f"mode {img.mode}, expected RGB")
            img.load()
            if size != IMAGE_SIZE:
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as err:
        raise ImageFormatError(f"not a readable image ({type(err).__name__})") from err
