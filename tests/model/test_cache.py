"""Content digests and the decode-once image cache; bad images are refused by file name."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

import model.cache
from model.cache import cached_images, decode_images, read_image, split_digest
from model.contract import ImageFormatError, read_split
from model.schema import IMAGES_DIR, NOTES_FILE, PROCESS_LOGS_FILE


def _digest(split_dir) -> str:
    return split_digest(read_split(split_dir))


def _image(split_dir, k: int = 0):
    return sorted((split_dir / IMAGES_DIR).iterdir())[k]


def test_digest_is_stable_and_ignores_location(copy_split, tmp_path):
    split = copy_split(n=6)
    first = _digest(split)
    assert first == _digest(split)
    moved = shutil.copytree(split, tmp_path / "elsewhere" / "batch")
    assert _digest(moved) == first


def test_digest_changes_with_one_image_byte(copy_split):
    split = copy_split(n=6)
    before = _digest(split)
    png = _image(split, 3)
    data = bytearray(png.read_bytes())
    data[len(data) // 2] ^= 0x01
    png.write_bytes(bytes(data))
    assert _digest(split) != before


def test_digest_changes_with_one_csv_cell(copy_split):
    split = copy_split(n=6)
    before = _digest(split)
    path = split / PROCESS_LOGS_FILE
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[5] = str(float(cells[5]) + 0.001)
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    tables = read_split(split)  # still a valid split
    assert split_digest(tables) != before


def test_digest_changes_with_a_note(copy_split):
    split = copy_split(n=6)
    before = _digest(split)
    (split / NOTES_FILE).write_text("{}")
    assert _digest(split) != before


def test_cached_images_match_decoding_and_are_reused(copy_split, tmp_path, monkeypatch):
    split = copy_split(n=8)
    tables = read_split(split)
    cache_dir = tmp_path / "cache"
    pixels = cached_images(tables, 64, cache_dir)
    assert pixels.shape == (8, 64, 64, 3)
    assert pixels.dtype == np.uint8
    assert not pixels.flags.writeable
    np.testing.assert_array_equal(pixels, decode_images(tables.image_paths, 64))
    files = list(cache_dir.iterdir())
    assert [f.name for f in files] == [f"images-{split_digest(tables)}-64.npy"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache was not reused")

    monkeypatch.setattr(model.cache, "decode_images", no_decoding)
    again = cached_images(tables, 64, cache_dir)
    np.testing.assert_array_equal(again, pixels)
    again = cached_images(tables, 64, cache_dir, digest=split_digest(tables))
    np.testing.assert_array_equal(again, pixels)
    assert list(cache_dir.iterdir()) == files


def test_cache_key_has_size_and_content(copy_split, tmp_path):
    split = copy_split(n=4)
    cache_dir = tmp_path / "cache"
    small = cached_images(read_split(split), 32, cache_dir)
    full = cached_images(read_split(split), 256, cache_dir)
    assert small.shape == (4, 32, 32, 3) and full.shape == (4, 256, 256, 3)
    np.testing.assert_array_equal(full[0], np.asarray(Image.open(_image(split, 0))))
    (split / NOTES_FILE).write_text("{}")  # new content, new key
    cached_images(read_split(split), 32, cache_dir)
    assert len(list(cache_dir.glob("images-*.npy"))) == 3
    assert not list(cache_dir.glob("*.tmp"))


def test_read_image_path_and_file_object(tiny_data):
    png = _image(tiny_data / "val", 0)
    pixels = read_image(png)
    assert pixels.shape == (256, 256, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, np.asarray(Image.open(png).convert("RGB")))
    np.testing.assert_array_equal(read_image(io.BytesIO(png.read_bytes())), pixels)
    assert read_image(png, 64).shape == (64, 64, 3)


def _wrong_size(path):
    Image.new("RGB", (128, 128), (90, 90, 90)).save(path)


def _rgba(path):
    Image.open(path).convert("RGBA").save(path)


def _grey(path):
    Image.open(path).convert("L").save(path)


def _text(path):
    path.write_text("this is not an image")


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (_wrong_size, "size 128x128"),
        (_rgba, "mode RGBA"),
        (_grey, "mode L"),
        (_text, "not a readable image"),
        (_truncated, "not a readable image"),
    ],
    ids=["128x128", "rgba", "grey", "text", "truncated"],
)
def test_bad_image_is_named(copy_split, tmp_path, corrupt, reason):
    split = copy_split(n=5)
    bad = _image(split, 2)
    corrupt(bad)
    tables = read_split(split)  # the folder itself is fine: only decoding finds the problem
    with pytest.raises(ImageFormatError) as err:
        cached_images(tables, 64, tmp_path / "cache")
    assert len(err.value.offending) == 1
    assert err.value.offending[0].startswith(bad.name)
    assert reason in err.value.offending[0]
    assert bad.name in str(err.value)
    assert not list((tmp_path / "cache").glob("*.npy"))  # nothing half-cached
    with pytest.raises(ImageFormatError, match=reason):
        read_image(bad)


def test_every_bad_image_is_listed(copy_split, tmp_path):
    split = copy_split(n=6)
    first, second = _image(split, 1), _image(split, 4)
    _text(first)
    _wrong_size(second)
    with pytest.raises(ImageFormatError) as err:
        decode_images(read_split(split).image_paths, 64)
    assert [o.split(" ")[0] for o in err.value.offending] == sorted([first.name, second.name])
