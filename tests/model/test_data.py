"""Loading dies: train-fitted z-scoring, the seed's tensor contract and batched augmentation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from model.cache import read_image
from model.contract import read_split
from model.data import (
    ProcessScaler,
    augment_batch,
    jitter_optics,
    load_multimodal_dataset,
    load_split,
    random_turns,
    shuffle_parameters,
    train_scaler,
)
from model.schema import parameter_names

SIZE = 64


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="module")
def train_tables(tiny_data):
    return read_split(tiny_data / "train")


def test_scaler_z_scores_train(train_tables):
    scaler = ProcessScaler.fit(train_tables.process)
    z = scaler.transform(train_tables.process)
    assert z.dtype == np.float32
    assert z.shape == (len(train_tables.ids), 48)
    np.testing.assert_allclose(np.nanmean(z, axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.nanstd(z, axis=0), 1.0, atol=1e-3)
    assert np.array_equal(np.isnan(z), train_tables.process.isna().to_numpy())


def test_scaler_reads_columns_by_name_and_survives_constant_columns():
    names = list(parameter_names())
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(5.0, 2.0, (20, 48)), columns=names)
    table["humidity"] = 40.0  # constant: std 0 must not divide by zero
    scaler = ProcessScaler.fit(table)
    assert scaler.std[names.index("humidity")] == 1.0
    z = scaler.transform(table[names[::-1]])  # column order of the frame does not matter
    np.testing.assert_allclose(z, scaler.transform(table), atol=0)
    assert np.isfinite(z).all()
    assert np.all(z[:, names.index("humidity")] == 0.0)


def test_scaler_json_round_trip(train_tables, tmp_path):
    scaler = ProcessScaler.fit(train_tables.process)
    path = tmp_path / "scaler.json"
    scaler.save(path)
    payload = json.loads(path.read_text())
    assert list(payload) == list(parameter_names())
    back = ProcessScaler.load(path)
    np.testing.assert_array_equal(back.mean, scaler.mean)
    np.testing.assert_array_equal(back.std, scaler.std)
    np.testing.assert_array_equal(
        back.transform(train_tables.process), scaler.transform(train_tables.process)
    )


def test_train_scaler_fitted_once_and_saved(tiny_data, tmp_path, monkeypatch, train_tables):
    scaler = train_scaler(tiny_data, tmp_path)
    saved = list(tmp_path.glob("scaler-*.json"))
    assert len(saved) == 1
    expected = ProcessScaler.fit(train_tables.process)
    np.testing.assert_array_equal(scaler.mean, expected.mean)
    np.testing.assert_array_equal(scaler.std, expected.std)

    def no_fit(*args, **kwargs):
        raise AssertionError("the saved statistics were not reused")

    monkeypatch.setattr(ProcessScaler, "fit", no_fit)
    again = train_scaler(tiny_data, tmp_path)
    np.testing.assert_array_equal(again.mean, scaler.mean)
    np.testing.assert_array_equal(again.std, scaler.std)


def test_load_split(tiny_data, cache_dir, train_tables):
    scaler = ProcessScaler.fit(train_tables.process)
    part = load_split(tiny_data, "val", SIZE, cache_dir, scaler)
    assert len(part) == 120
    assert part.images.shape == (120, SIZE, SIZE, 3) and part.images.dtype == np.uint8
    assert part.process.shape == (120, 48) and part.process.dtype == np.float32
    assert part.labels.dtype == np.int64
    assert part.ids == sorted(part.ids)
    assert list(part.metadata.index) == part.ids
    assert len(part.digest) == 32


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_seed_contract_shapes(tiny_data, cache_dir, split):
    images, process, notes, labels = load_multimodal_dataset(
        tiny_data, split, img_size=SIZE, cache_dir=cache_dir
    )
    n = {"train": 360, "val": 120, "test": 120}[split]
    assert images.shape == (n, 3, SIZE, SIZE)
    assert images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert process.shape == (n, 48) and process.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert isinstance(notes, list) and len(notes) == n
    assert all(isinstance(t, str) for t in notes)
    assert "" in notes
    tables = read_split(tiny_data / split)
    assert notes == tables.notes
    assert labels.tolist() == tables.labels.tolist()
    assert torch.equal(torch.isnan(process), torch.from_numpy(tables.process.isna().to_numpy()))


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_splits_use_train_statistics(tiny_data, cache_dir, train_tables, split):
    _, process, _, _ = load_multimodal_dataset(tiny_data, split, img_size=SIZE, cache_dir=cache_dir)
    raw = read_split(tiny_data / split).process.to_numpy(np.float64)
    train = train_tables.process.to_numpy(np.float64)
    with_train = (raw - np.nanmean(train, 0)) / np.nanstd(train, 0)
    np.testing.assert_allclose(process.numpy(), with_train, rtol=1e-5, atol=1e-5, equal_nan=True)
    own = (raw - np.nanmean(raw, 0)) / np.nanstd(raw, 0)
    assert not np.allclose(process.numpy(), own, atol=1e-3, equal_nan=True)


def test_eval_splits_are_not_augmented(tiny_data, cache_dir):
    images, *_ = load_multimodal_dataset(tiny_data, "test", img_size=SIZE, cache_dir=cache_dir)
    tables = read_split(tiny_data / "test")
    first = read_image(tables.image_paths[0], SIZE)
    expected = torch.from_numpy(np.array(first)).permute(2, 0, 1).float() / 255.0
    assert torch.equal(images[0], expected)


def test_train_augmentation(tiny_data, cache_dir):
    def load(**kwargs):
        return load_multimodal_dataset(
            tiny_data, "train", img_size=SIZE, cache_dir=cache_dir, **kwargs
        )

    plain, process, _, labels = load(augment=False)
    augmented, process_aug, _, labels_aug = load()  # train augments by default
    assert augmented.shape == plain.shape and augmented.dtype == plain.dtype
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0
    assert not torch.equal(augmented, plain)
    assert (augmented - plain).abs().mean() > 0.01
    # Only the images are augmented.
    assert torch.equal(torch.nan_to_num(process_aug), torch.nan_to_num(process))
    assert torch.equal(labels_aug, labels)
    again, *_ = load(seed=0)
    assert torch.equal(again, augmented)
    other, *_ = load(seed=1)
    assert not torch.equal(other, augmented)


def _batch(dtype):
    gen = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (6, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return images if dtype == torch.uint8 else images.float() / 255.0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32], ids=["uint8", "float"])
def test_augment_batch(dtype):
    images = _batch(dtype)
    out = augment_batch(images, torch.Generator().manual_seed(3))
    assert out.shape == images.shape
    assert out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    same = augment_batch(images, torch.Generator().manual_seed(3))
    assert torch.equal(out, same)
    other = augment_batch(images, torch.Generator().manual_seed(4))
    assert not torch.equal(out, other)
    assert images.dtype == dtype  # the input is left as it was


def test_augment_batch_same_for_uint8_and_float():
    a = augment_batch(_batch(torch.uint8), torch.Generator().manual_seed(5))
    b = augment_batch(_batch(torch.float32), torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_augment_batch_keeps_constant_images_in_range():
    white = torch.ones(4, 3, 16, 16)
    out = augment_batch(white, torch.Generator().manual_seed(0))
    assert out.min() >= 0.0 and out.max() <= 1.0
    black = augment_batch(torch.zeros(4, 3, 16, 16, dtype=torch.uint8))
    assert torch.equal(black, torch.zeros(4, 3, 16, 16))


def test_random_turns_give_each_image_one_symmetry_of_the_square():
    images = torch.randn(200, 6, 8, 8)
    out = random_turns(images, torch.Generator().manual_seed(0))

    def symmetries(x):
        turns = [torch.rot90(x, k, dims=(1, 2)) for k in range(4)]
        return turns + [t.flip(2) for t in turns]

    used = set()
    for x, y in zip(images, out, strict=True):
        matches = [i for i, s in enumerate(symmetries(x)) if torch.equal(s, y)]
        assert matches, "not a flip or turn of its input"
        used.add(matches[0])
    assert len(used) == 8  # 200 images: every symmetry is drawn


def test_optics_jitter_moves_the_layouts_edges_and_leaves_flat_areas_to_the_noise():
    x = torch.full((32, 3, 32, 32), 0.3)
    x[:, :, :, 8:16] = 0.8  # one bright line, 8 px wide: edges at columns 8 and 16
    out = jitter_optics(x, 1.0, torch.Generator().manual_seed(0))
    change = (out - x).abs().mean(dim=(0, 1, 2))  # per column
    edges, flat = change[[7, 8, 15, 16]], change[[2, 3, 11, 12, 22, 23]]
    assert edges.min() > 5 * flat.max()  # focus and sub-pixel offset act on edges
    assert flat.max() < 0.03  # elsewhere: sensor noise only
    draws = (out - x)[:, 0, 0, 8]
    assert len(set(draws.tolist())) == 32  # each die its own optics
    g = torch.Generator().manual_seed(1)
    plain = augment_batch(x, torch.Generator().manual_seed(1), turns=False)
    assert torch.equal(augment_batch(x, g, turns=False, optics=0.0), plain)


def test_shuffled_dies_keep_their_values_and_missing_flags_together():
    g = torch.Generator().manual_seed(0)
    values = torch.arange(64 * 48, dtype=torch.float32).reshape(64, 48)
    missing = values % 5 == 0
    shuffled, flags = shuffle_parameters(values, missing, 0.5, g)
    moved = (shuffled != values).any(dim=1)
    assert 16 < int(moved.sum()) < 48  # about half of the dies, each on its own permutation
    assert torch.equal(shuffled[~moved], values[~moved]) and torch.equal(flags, shuffled % 5 == 0)
    assert torch.equal(shuffled.sort(dim=1).values, values)  # the same values, other places
    assert len({tuple(row.tolist()) for row in shuffled[moved].argsort(dim=1)}) == int(moved.sum())


def test_no_share_shuffles_nothing():
    values = torch.randn(8, 48)
    out, _ = shuffle_parameters(values, values > 1, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(out, values)
