"""The similar-defect store: nearest neighbours, filters, replacement, errors, and indexing."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from model.bundle import export_fp32_bundle
from model.contract import read_split
from model.schema import CLASS_NAMES, FABS
from service.similar import (
    INDEX_COMMAND,
    NoIndexError,
    SimilarDefects,
    UnknownDieError,
    index_split,
    table_name,
)

D = 8  # vector length of the hand-made embeddings
PER_CLASS = 6
VERSION = "3"


def die(c: int, j: int) -> str:
    """Die j of class c; its fab is FABS[j % 3]."""
    return f"{FABS[j % 3]}-L0001-W0{c}-D{j:03d}"


def vector(c: int, j: int) -> np.ndarray:
    """Class c's axis, tilted further towards a shared axis as j grows (j=0 is the centre)."""
    v = np.zeros(D, np.float32)
    v[c] = 1.0
    v[D - 1] = 0.1 * j
    return v


def row(c: int, j: int, **changes) -> dict:
    base = {
        "die_id": die(c, j),
        "vector": vector(c, j),
        "defect_class": c,
        "class_name": CLASS_NAMES[c],
        "source": "training",
        "label_origin": "ground_truth",
        "wafer_id": f"W0{c}",
        "fab": FABS[j % 3],
        "date": f"2026-03-0{1 + j % 3}",
        "note": f"note {c}-{j}",
    }
    return base | changes


def expected_distance(j: int) -> float:
    """Cosine distance between the centre of a class and its die j."""
    return 1.0 - 1.0 / np.sqrt(1.0 + (0.1 * j) ** 2)


@pytest.fixture
def store(tmp_path) -> SimilarDefects:
    similar = SimilarDefects(tmp_path / "lance")
    rows = [row(c, j) for c in range(len(CLASS_NAMES)) for j in range(PER_CLASS)]
    assert similar.add(VERSION, rows) == len(rows)
    return similar


def ids(results: list[dict]) -> list[str]:
    return [r["die_id"] for r in results]


def test_nearest_dies_are_the_same_class_in_order_of_distance(store):
    found = store.search(VERSION, die(1, 0), k=5)
    assert ids(found) == [die(1, j) for j in range(1, 6)]
    got = [r["distance"] for r in found]
    assert got == sorted(got)
    assert got == pytest.approx([expected_distance(j) for j in range(1, 6)], abs=1e-5)
    expected = {k: v for k, v in row(1, 1).items() if k != "vector"}
    assert {k: v for k, v in found[0].items() if k != "distance"} == expected


def test_the_die_itself_is_never_returned(store):
    found = store.search(VERSION, die(2, 3), k=100)
    assert die(2, 3) not in ids(found)
    assert len(found) == 4 * PER_CLASS - 1  # every other defective die


def test_filters_by_class_and_fab(store):
    by_class = store.search(VERSION, die(1, 0), k=100, defect_class=3)
    assert {r["defect_class"] for r in by_class} == {3} and len(by_class) == PER_CLASS
    by_fab = store.search(VERSION, die(1, 0), k=100, fab="B")
    assert {r["fab"] for r in by_fab} == {"B"}
    assert ids(by_fab)[:2] == [die(1, 1), die(1, 4)]  # the nearest fab-B dies come first
    both = store.search(VERSION, die(1, 0), k=100, defect_class=2, fab="C")
    assert ids(both) == [die(2, 2), die(2, 5)]


def test_defects_only_leaves_out_good_dies(store):
    defects = store.search(VERSION, die(0, 0), k=100)
    assert defects and 0 not in {r["defect_class"] for r in defects}
    everything = store.search(VERSION, die(0, 0), k=5, defects_only=False)
    assert ids(everything) == [die(0, j) for j in range(1, 6)]
    good = store.search(VERSION, die(4, 0), k=100, defect_class=0, defects_only=False)
    assert {r["defect_class"] for r in good} == {0}


def test_adding_a_known_die_replaces_it(store):
    moved = row(1, 5, vector=vector(3, 0), defect_class=3, class_name="pattern", note="again")
    store.add(VERSION, [moved | {"source": "inspection", "label_origin": "model"}])
    assert store.count(VERSION) == len(CLASS_NAMES) * PER_CLASS
    assert die(1, 5) not in ids(store.search(VERSION, die(1, 0), k=5))
    near = store.search(VERSION, die(3, 0), k=1)[0]
    assert near["die_id"] == die(1, 5)
    assert (near["defect_class"], near["source"], near["label_origin"], near["note"]) == (
        3,
        "inspection",
        "model",
        "again",
    )


def test_a_repeated_die_in_one_add_keeps_the_last(tmp_path):
    similar = SimilarDefects(tmp_path / "lance")
    assert similar.add(VERSION, [row(1, 0), row(1, 1), row(1, 0, note="last")]) == 2
    assert similar.count(VERSION) == 2
    assert similar.search(VERSION, die(1, 1), k=5)[0]["note"] == "last"


def test_relabel_changes_the_class_and_keeps_the_vector(store):
    store.relabel(VERSION, die(1, 2), 4, "process_deviation")
    found = store.search(VERSION, die(1, 0), k=5)
    relabelled = next(r for r in found if r["die_id"] == die(1, 2))
    assert (relabelled["defect_class"], relabelled["class_name"]) == (4, "process_deviation")
    assert relabelled["label_origin"] == "operator"
    assert relabelled["distance"] == pytest.approx(expected_distance(2), abs=1e-5)
    only_4 = store.search(VERSION, die(4, 0), k=100, defect_class=4)
    assert die(1, 2) in ids(only_4)
    with pytest.raises(UnknownDieError):
        store.relabel(VERSION, "A-L9-W9-D999", 2, "scratch")
    with pytest.raises(ValueError, match="scratch"):
        store.relabel(VERSION, die(1, 2), 3, "scratch")


def test_unknown_die_and_unknown_version(store):
    with pytest.raises(UnknownDieError) as err:
        store.search(VERSION, "A-L9-W9-D999")
    assert err.value.die_id == "A-L9-W9-D999"
    with pytest.raises(NoIndexError, match=INDEX_COMMAND):
        store.search("4", die(1, 0))
    with pytest.raises(NoIndexError):
        store.count("4")
    assert store.has_index(VERSION) and not store.has_index("4")
    assert store.count(VERSION) == len(CLASS_NAMES) * PER_CLASS


@pytest.mark.parametrize(
    "bad",
    [
        {"k": 0},
        {"k": 101},
        {"k": True},
        {"k": 2.5},
        {"defect_class": 5},
        {"defect_class": -1},
        {"defect_class": "1"},
        {"defect_class": 0},  # good dies while defects_only
        {"fab": "D"},
        {"fab": "A' OR '1'='1"},
    ],
)
def test_bad_search_values_raise_value_error(store, bad):
    with pytest.raises(ValueError):
        store.search(VERSION, die(1, 0), **bad)


def test_quotes_in_die_ids_are_data_not_sql(store):
    odd = "A-L1-W1-D1' OR '1'='1"
    store.add(VERSION, [row(2, 0, die_id=odd, vector=vector(2, 0) + 0.001)])
    assert ids(store.search(VERSION, odd, k=1)) == [die(2, 0)]
    assert odd in ids(store.search(VERSION, die(2, 0), k=1))
    with pytest.raises(UnknownDieError):
        store.search(VERSION, "x' OR '1'='1")


@pytest.mark.parametrize(
    "bad",
    [
        {"source": "web"},
        {"label_origin": "guess"},
        {"class_name": "scratch"},  # class 1 is particle
        {"defect_class": 7},
        {"fab": "Z"},
        {"date": "March"},
        {"vector": np.zeros(D, np.float32)},
        {"vector": np.full(D, np.nan, np.float32)},
        {"die_id": ""},
    ],
)
def test_bad_rows_are_refused(store, bad):
    with pytest.raises(ValueError):
        store.add(VERSION, [row(1, 0) | bad])


def test_versions_have_their_own_tables(store):
    with pytest.raises(ValueError, match="length"):
        store.add(VERSION, [row(1, 0, vector=np.ones(D + 1, np.float32))])
    store.add("baseline-1", [row(1, 0, vector=np.ones(4)), row(1, 1, vector=np.arange(1, 5))])
    assert store.count("baseline-1") == 2 and store.count(VERSION) == len(CLASS_NAMES) * PER_CLASS
    assert table_name("3") == "embeddings_v3" and table_name("baseline-1") != table_name("3")
    assert table_name("a/b") != table_name("a_b") != table_name("a.b")
    with pytest.raises(ValueError):
        table_name(" ")


def test_writes_from_another_thread_while_searching(store):
    errors = []

    def write():
        try:
            for j in range(PER_CLASS, PER_CLASS + 10):
                store.add(VERSION, [row(2, j, source="inspection", label_origin="model")])
        except Exception as err:  # reported below
            errors.append(err)

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        assert ids(store.search(VERSION, die(2, 0), k=3))[0] == die(2, 1)
    writer.join()
    assert not errors
    assert store.count(VERSION) == len(CLASS_NAMES) * PER_CLASS + 10


def test_index_split_embeds_a_real_split(tiny_data, smoke_prepared, smoke_multimodal, tmp_path):
    cfg, prepared = smoke_prepared
    bundle = export_fp32_bundle(
        smoke_multimodal.folder / "model.pt", prepared.folder, tmp_path / "b"
    )
    similar = SimilarDefects(tmp_path / "lance")
    n = index_split(similar, bundle, tiny_data, "val", "7", cache_dir=cfg.data.cache_dir)
    tables = read_split(tiny_data / "val")
    assert n == len(tables.ids) == similar.count("7")
    labels = dict(zip(tables.ids, tables.labels))
    notes = dict(zip(tables.ids, tables.notes))
    query = next(i for i in tables.ids if labels[i] != 0)
    found = similar.search("7", query, k=5)
    assert found and query not in ids(found)
    assert [r["distance"] for r in found] == sorted(r["distance"] for r in found)
    for r in found:
        meta = tables.metadata.loc[r["die_id"]]
        assert r["defect_class"] == labels[r["die_id"]] != 0
        assert r["class_name"] == CLASS_NAMES[r["defect_class"]]
        assert (r["wafer_id"], r["fab"], r["note"]) == (
            meta["wafer_id"],
            meta["fab"],
            notes[r["die_id"]],
        )
        assert r["date"] == pd.Timestamp(meta["timestamp"]).date().isoformat()
        assert (r["source"], r["label_origin"]) == ("training", "ground_truth")
        assert 0.0 <= r["distance"] <= 2.0


def test_store_on_s3_adds_searches_and_relabels(s3_bucket):
    """LanceDB on an s3:// URI (the session's moto server, reached through the environment)."""
    import boto3

    uri = f"s3://{s3_bucket}/similar"
    s3 = SimilarDefects(uri)
    assert s3.add(VERSION, [row(c, j) for c in range(1, 3) for j in range(PER_CLASS)]) == 12
    found = s3.search(VERSION, die(1, 0), k=3)
    assert [r["die_id"] for r in found] == [die(1, j) for j in range(1, 4)]
    s3.relabel(VERSION, die(1, 1), 2, CLASS_NAMES[2])
    reader = SimilarDefects(uri)  # another replica reads what this one wrote
    assert reader.count(VERSION) == 12
    relabelled = reader.search(VERSION, die(1, 0), k=5, defect_class=2)
    assert relabelled[0]["die_id"] == die(1, 1) and relabelled[0]["label_origin"] == "operator"
    stored = boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="similar/")
    assert stored["KeyCount"] > 0
