"""The per-image statistics table: one pass with PIL, bad files named, cache read when present."""

from __future__ import annotations

import numpy as np
import pytest

from expectations.image_stats import COLUMNS, content_digest, image_stats
from model.cache import cached_images, split_digest
from model.contract import read_split
from model.schema import IMAGE_SIZE, IMAGES_DIR


def test_good_images_have_size_channels_and_spread(copy_split):
    split = copy_split("val", n=6)
    table = image_stats(split, threads=2)
    assert list(table.columns) == COLUMNS and len(table) == 6
    assert (table[["height", "width"]] == IMAGE_SIZE).all().all()
    assert (table["channels"] == 3).all() and (table["format"] == "PNG").all()
    assert table["error"].isna().all() and (table["std"] > 2).all()


def test_undecodable_and_foreign_files_are_rows_with_an_error(copy_split):
    split = copy_split("val", n=3)
    broken = sorted((split / IMAGES_DIR).iterdir())[0]
    broken.write_bytes(b"not a png at all")
    (split / IMAGES_DIR / "notes.txt").write_text("stray file")
    table = image_stats(split, threads=1).set_index("file")
    assert table.loc[broken.name, "error"].startswith(f"{broken.name}: not a readable image")
    assert table.loc["notes.txt", "error"] == "notes.txt: not an image file"
    assert table["error"].notna().sum() == 2


def test_digest_is_the_training_cache_key_and_the_cache_is_reused(
    copy_split, tmp_path, monkeypatch
):
    split = copy_split("val", n=5)
    tables = read_split(split)
    digest = content_digest(split)
    assert digest == split_digest(tables)
    cached_images(tables, IMAGE_SIZE, tmp_path, digest)  # what training at full size leaves
    decoded = image_stats(split, threads=1)

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the cache holds it")

    monkeypatch.setattr("expectations.image_stats._file_stats", no_decoding)
    from_cache = image_stats(split, cache_dir=tmp_path, digest=digest)
    assert from_cache[["die_id", "file", "format"]].equals(decoded[["die_id", "file", "format"]])
    for column in ("mean", "std"):
        assert np.allclose(from_cache[column], decoded[column], atol=1e-3)
    with pytest.raises(AssertionError, match="decoded"):  # another digest: no cache, decode
        image_stats(split, cache_dir=tmp_path, digest="0" * 32, threads=1)
