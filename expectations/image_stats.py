"""Per-image statistics of one split's images/ folder, for the image_stats suite.

One row per file: size, channels, mean and standard deviation of the 0-255 pixels, and the
decode error (naming the file) when the file is not a readable image. Nothing raises for a
bad image: the suite reports it. Decoding is one pass with PIL in a few threads; when the
decoded uint8 cache of `model.cache` exists for this exact content, it is read instead.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from expectations.tables import TableReadError
from model.cache import ALLOWED_FORMATS, split_digest
from model.schema import IMAGE_SIZE, IMAGE_SUFFIXES, IMAGES_DIR

COLUMNS = ["die_id", "file", "format", "height", "width", "channels", "mean", "std", "error"]
_FORMAT_OF_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF"}
_FORMAT_OF_SUFFIX[".tiff"] = "TIFF"
_CHUNK = 256  # images per step when reading the cache
_DECODE_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError)
_DECODE_ERRORS += (ValueError, TypeError)  # e.g. a 16-bit mode that is not uint8 pixels


def image_files(split_dir: Path) -> list[Path]:
    """Every file in the split's images/ folder, sorted by die id (then name)."""
    folder = split_dir / IMAGES_DIR
    if not folder.is_dir():
        raise TableReadError(f"missing folder {IMAGES_DIR}/")
    return sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: (p.stem, p.name))


def content_digest(split_dir: Path) -> str:
    """The split's content digest, the same key `model.cache` gives its decoded images."""
    files = image_files(split_dir) if (split_dir / IMAGES_DIR).is_dir() else []
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    return split_digest(SimpleNamespace(split_dir=split_dir, image_paths=images))


def image_stats(
    split_dir: Path,
    cache_dir: Path | None = None,
    digest: str | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """The statistics table of one split (columns COLUMNS, one row per file in images/).

    Args:
        split_dir: e.g. ``data/train``.
        cache_dir: the training image cache; used when it holds this content at full size.
        digest: the split's `content_digest`, needed to find the cache.
        threads: decoding threads (default: up to 4, no more than the cores).
    """
    files = image_files(split_dir)
    cached = _cache_file(cache_dir, digest)
    if cached is not None and all(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        return _stats_from_cache(files, np.load(cached, mmap_mode="r"))
    threads = threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:
        rows = list(pool.map(_file_stats, files))
    return pd.DataFrame(rows, columns=COLUMNS).astype({"error": object, "format": object})


def _cache_file(cache_dir: Path | None, digest: str | None) -> Path | None:
    if cache_dir is None or digest is None:
        return None
    path = Path(cache_dir) / f"images-{digest}-{IMAGE_SIZE}.npy"
    return path if path.is_file() else None


def _file_stats(path: Path) -> tuple:
    """One row of the table; a file that is not a readable image gets an error naming it."""
    head = (path.stem, path.name)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return (*head, None, None, None, None, None, None, f"{path.name}: not an image file")
    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as img:
            fmt, (width, height), channels = img.format, img.size, len(img.getbands())
            pixels = np.asarray(img, dtype=np.uint8)
    except _DECODE_ERRORS as err:
        reason = f"{path.name}: not a readable image ({type(err).__name__}: {err})"
        return (*head, None, None, None, None, None, None, reason)
    flat = pixels.reshape(-1).astype(np.float32)
    return (*head, fmt, height, width, channels, float(flat.mean()), float(flat.std()), None)


def _stats_from_cache(files: list[Path], pixels: np.ndarray) -> pd.DataFrame:
    """The same table from the decoded cache (which only holds valid 256x256 RGB images)."""
    means, stds = [], []
    for start in range(0, len(files), _CHUNK):
        chunk = pixels[start : start + _CHUNK].reshape(-1, IMAGE_SIZE * IMAGE_SIZE * 3)
        chunk = chunk.astype(np.float32)
        means += chunk.mean(axis=1).tolist()
        stds += chunk.std(axis=1).tolist()
    return pd.DataFrame(
        {
            "die_id": [p.stem for p in files],
            "file": [p.name for p in files],
            "format": [_FORMAT_OF_SUFFIX[p.suffix.lower()] for p in files],
            "height": IMAGE_SIZE,
            "width": IMAGE_SIZE,
            "channels": 3,
            "mean": means,
            "std": stds,
            "error": pd.Series([None] * len(files), dtype=object),
        },
        columns=COLUMNS,
    )
