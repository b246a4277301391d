"""Similar past defects: pooled die embeddings in LanceDB, one table per model version.

Embeddings of different model versions are not comparable, so each version has its own table
(`table_name`). Vectors are L2-normalized when stored, and `distance` is the cosine distance
1 - cos(a, b): 0 for the same direction, 1 for orthogonal, at most 2. Searches are exact
(a flat scan, filters applied before ranking). A die_id is stored once per table: adding it
again replaces it.
"""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import date, datetime, timedelta
from pathlib import Path

import lancedb
import numpy as np
import pandas as pd
import pyarrow as pa

from model.bundle import open_bundle_split
from model.onnx_runtime import predict_session
from model.schema import CLASS_NAMES, FABS, GOOD

SOURCES = ("training", "inspection")
LABEL_ORIGINS = ("ground_truth", "model", "operator")
MAX_K = 100
INDEX_COMMAND = "dieguard index-similar"  # the command that builds a version's table
RESULT_COLUMNS = (
    "die_id", "defect_class", "class_name", "wafer_id", "fab", "date", "note", "source",
    "label_origin",
)  # fmt: skip
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class UnknownDieError(LookupError):
    """The die is not in the model version's table."""

    def __init__(self, die_id: str, model_version: str | None = None):
        self.die_id = die_id
        where = f" for model version {model_version!r}" if model_version is not None else ""
        super().__init__(f"die {die_id!r} is not in the similar-defect index{where}")


class NoIndexError(LookupError):
    """No table of embeddings exists for the model version."""

    def __init__(self, model_version: str):
        self.model_version = model_version
        super().__init__(
            f"no similar-defect index for model version {model_version!r}: build it with "
            f"`{INDEX_COMMAND}` for that version (it embeds the training dies)"
        )


def table_name(model_version: str) -> str:
    """The table of one model version: `embeddings_v<version>`, e.g. embeddings_v3.

    Characters other than letters, digits, "_" and "-" become "_", and a short hash of the
    original string is then appended, so that two different versions never share a table.
    """
    version = str(model_version).strip()
    if not version:
        raise ValueError("the model version is empty")
    safe = _UNSAFE.sub("_", version)
    if safe != version:
        safe += "_" + hashlib.blake2b(version.encode(), digest_size=4).hexdigest()
    return f"embeddings_v{safe}"


class SimilarDefects:
    """Nearest past dies by embedding, per model version, in a LanceDB database."""

    def __init__(self, uri: str | Path, refresh_s: float = 0.0):
        """Args: uri a local folder or an s3:// URI; refresh_s how stale reads may be when
        another process writes the same database (0: check on every read)."""
        self.uri = str(uri)
        self._db = lancedb.connect(self.uri, read_consistency_interval=timedelta(seconds=refresh_s))
        self._tables: dict[str, lancedb.table.Table] = {}
        self._lock = threading.Lock()  # one writer at a time; reads need none

    def has_index(self, model_version: str) -> bool:
        """Whether the model version has a table of embeddings."""
        try:
            self._table(model_version)
        except NoIndexError:
            return False
        return True

    def count(self, model_version: str) -> int:
        """Dies stored for the model version (NoIndexError when it has no table)."""
        return self._table(model_version).count_rows()

    def add(self, model_version: str, rows: list[dict]) -> int:
        """Store dies, replacing any already stored under the same die_id.

        Args:
            model_version: the version whose model produced the vectors.
            rows: dicts with die_id, vector (float (D,)), defect_class, class_name, source
                ("training" | "inspection"), label_origin ("ground_truth" | "model" |
                "operator"), and optionally wafer_id, fab, date (ISO date), note.
        Returns:
            The number of distinct dies written.
        Raises:
            ValueError: a row with a missing or invalid field, or vectors of another length.
        """
        rows = list({r["die_id"]: r for r in map(_checked_row, rows)}.values())  # last wins
        if not rows:
            return 0
        data = _arrow_rows(rows)
        with self._lock:
            table = self._table_for_write(model_version, data.schema)
            upsert = table.merge_insert("die_id").when_matched_update_all()
            upsert.when_not_matched_insert_all().execute(data)
        return len(rows)

    def relabel(
        self,
        model_version: str,
        die_id: str,
        defect_class: int,
        class_name: str,
        label_origin: str = "operator",
    ) -> None:
        """Change a stored die's class (an operator's correction), keeping its vector."""
        defect_class = _checked_class(defect_class, class_name)
        _check_choice("label_origin", label_origin, LABEL_ORIGINS)
        with self._lock:
            table = self._table(model_version)
            where = f"die_id = {_quote(die_id)}"
            if table.count_rows(where) == 0:
                raise UnknownDieError(die_id, model_version)
            values = {"defect_class": defect_class, "class_name": class_name}
            table.update(where=where, values=values | {"label_origin": label_origin})

    def search(
        self,
        model_version: str,
        die_id: str,
        k: int = 5,
        defect_class: int | None = None,
        fab: str | None = None,
        defects_only: bool = True,
    ) -> list[dict]:
        """The k stored dies nearest to die_id's own vector, nearest first.

        Args:
            model_version: whose table to search.
            die_id: a stored die; it is never among its own results.
            k: how many, 1 to MAX_K.
            defect_class: only dies of this class (0-4).
            fab: only dies of this fab (one of model.schema.FABS).
            defects_only: leave out good dies (class 0).
        Returns:
            Dicts of RESULT_COLUMNS plus `distance` (cosine distance, see the module).
        Raises:
            NoIndexError, UnknownDieError, ValueError (bad k, class or fab).
        """
        where = [f"die_id != {_quote(die_id)}", *_filters(k, defect_class, fab, defects_only)]
        table = self._table(model_version)
        found = (
            table.search(self._vector(table, die_id, model_version), vector_column_name="vector")
            .distance_type("cosine")
            .where(" AND ".join(where), prefilter=True)
            .select([*RESULT_COLUMNS, "_distance"])
            .limit(int(k))
            .to_list()
        )
        return [{c: r[c] for c in RESULT_COLUMNS} | {"distance": r["_distance"]} for r in found]

    def _vector(self, table, die_id: str, model_version: str) -> np.ndarray:
        hits = table.search().where(f"die_id = {_quote(die_id)}").select(["vector"]).limit(1)
        found = hits.to_list()
        if not found:
            raise UnknownDieError(die_id, model_version)
        return np.asarray(found[0]["vector"], np.float32)

    def _table(self, model_version: str):
        name = table_name(model_version)
        table = self._tables.get(name)
        if table is None:
            try:
                table = self._db.open_table(name)
            except ValueError as err:  # lancedb: "Table '<name>' was not found"
                raise NoIndexError(model_version) from err
            self._tables[name] = table
        return table

    def _table_for_write(self, model_version: str, schema: pa.Schema):
        name = table_name(model_version)
        if name not in self._tables:
            self._tables[name] = self._db.create_table(name, schema=schema, exist_ok=True)
        table = self._tables[name]
        stored, given = table.schema.field("vector").type, schema.field("vector").type
        if stored != given:
            raise ValueError(
                f"model version {model_version!r} stores vectors of length {stored.list_size}, "
                f"got {given.list_size}"
            )
        return table


def index_split(
    similar: SimilarDefects,
    bundle_dir: str | Path,
    data_dir: str | Path,
    split: str,
    model_version: str,
    batch_size: int = 64,
    cache_dir: str | Path = ".cache/dieguard",
) -> int:
    """Embed every die of a labelled split with a bundle's model and store them.

    Args:
        similar: the store.
        bundle_dir: the bundle of `model_version` (model.onnx, scaler.json, tokenizer.json).
        data_dir: a data set in the dataset contract; split: which of its splits.
        model_version: the table to fill.
        batch_size: dies per model call.
        cache_dir: the decoded-image cache.
    Returns:
        The number of dies indexed (source "training", ground-truth labels).
    """
    opened = open_bundle_split(bundle_dir, data_dir, split, cache_dir)
    embedding = predict_session(
        opened.session, opened.dataset, batch_size=batch_size, keep=("embedding",)
    )["embedding"]  # N, D
    part, meta = opened.part, opened.part.metadata
    dates = pd.to_datetime(meta["timestamp"], utc=True, errors="coerce")
    rows = [
        {
            "die_id": die_id,
            "vector": embedding[i],
            "defect_class": int(part.labels[i]),
            "class_name": CLASS_NAMES[int(part.labels[i])],
            "source": "training",
            "label_origin": "ground_truth",
            "wafer_id": _text(meta["wafer_id"].iloc[i]),
            "fab": _text(meta["fab"].iloc[i]),
            "date": "" if pd.isna(dates.iloc[i]) else dates.iloc[i].date().isoformat(),
            "note": part.notes[i],
        }
        for i, die_id in enumerate(part.ids)
    ]
    return similar.add(model_version, rows)


def _filters(k: int, defect_class: int | None, fab: str | None, defects_only: bool) -> list[str]:
    """SQL conditions from checked values only (no caller text reaches the query)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    where = []
    if defect_class is not None:
        c = _checked_class(defect_class)
        if defects_only and c == GOOD:
            raise ValueError("defect_class 0 (good) asks for good dies: pass defects_only=False")
        where.append(f"defect_class = {c}")
    elif defects_only:
        where.append(f"defect_class != {GOOD}")
    if fab is not None:
        _check_choice("fab", fab, FABS)
        where.append(f"fab = {_quote(fab)}")
    return where


def _quote(text: str) -> str:
    """A SQL string literal (quotes doubled)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"die ids are non-empty strings, got {text!r}")
    return "'" + text.replace("'", "''") + "'"


def _check_choice(field: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(choices)}, got {value!r}")


def _checked_class(defect_class, class_name: str | None = None) -> int:
    """The class as an int in range(5); class_name, when given, must be its name."""
    if isinstance(defect_class, bool) or not isinstance(defect_class, int | np.integer):
        raise ValueError(f"defect_class must be an integer, got {defect_class!r}")
    c = int(defect_class)
    if c not in range(len(CLASS_NAMES)):
        raise ValueError(f"defect_class must be 0 to {len(CLASS_NAMES) - 1}, got {c}")
    if class_name is not None and class_name != CLASS_NAMES[c]:
        raise ValueError(f"class {c} is {CLASS_NAMES[c]!r}, not {class_name!r}")
    return c


def _checked_row(row: dict) -> dict:
    """One row with every field checked and the vector L2-normalized."""
    required = ("die_id", "vector", "defect_class", "class_name", "source", "label_origin")
    if missing := [f for f in required if f not in row]:
        raise ValueError(f"a row lacks {', '.join(missing)}")
    _quote(row["die_id"])
    _check_choice("source", row["source"], SOURCES)
    _check_choice("label_origin", row["label_origin"], LABEL_ORIGINS)
    out = {f: _text(row.get(f)) for f in ("wafer_id", "fab", "note")}
    if out["fab"]:
        _check_choice("fab", out["fab"], FABS)
    vector = np.asarray(row["vector"], np.float32)
    norm = float(np.linalg.norm(vector)) if vector.ndim == 1 else 0.0
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"die {row['die_id']}: the vector must be 1-D, finite and non-zero")
    out["defect_class"] = _checked_class(row["defect_class"], row["class_name"])
    out["date"] = _iso_date(row.get("date"))
    keep = ("die_id", "class_name", "source", "label_origin")
    return out | {f: row[f] for f in keep} | {"vector": vector / norm}


def _text(value) -> str:
    """A metadata cell as text ("" for None or NaN)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value)


def _iso_date(value) -> str:
    """YYYY-MM-DD from a date, a datetime or an ISO date or timestamp string ("" for none)."""
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    try:
        return datetime.fromisoformat(str(value)).date().isoformat()
    except ValueError as err:
        raise ValueError(f"date must be an ISO date, got {value!r}") from err


def _arrow_rows(rows: list[dict]) -> pa.Table:
    dims = sorted({len(r["vector"]) for r in rows})
    if len(dims) > 1:
        raise ValueError(f"vectors of different lengths in one add: {dims}")
    text = [(c, pa.string()) for c in RESULT_COLUMNS if c not in ("die_id", "defect_class")]
    vector = ("vector", pa.list_(pa.float32(), dims[0]))
    fields = [("die_id", pa.string()), vector, ("defect_class", pa.int32()), *text]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))
