"""The content-addressed image store: refs, deduplication, atomic writes, refused refs."""

from __future__ import annotations

import hashlib
import io
import threading

import numpy as np
import pytest
from PIL import Image

from service.image_store import ImageStore, image_format


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
