"""Data splits as MLflow dataset inputs: our content digest and the folder they were read from."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Run

CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
CONTEXT_TAG = "mlflow.data.context"  # the tag MLflow itself sets from `context`
ROWS_TAG = "dieguard.rows"


@dataclass(frozen=True)
class Split:
    """One data split as training read it.

    Attributes:
        digest: our content digest (e.g. ``DieSplit.digest``; at most 36 characters).
        source: the split's folder or URI.
        rows: number of dies, when known.
    """

    digest: str
    source: str | Path
    rows: int | None = None


def log_splits(splits: Mapping[str, Split]) -> None:
    """Log each split as a dataset input of the active fluent run (name = split name)."""
    for name, split in splits.items():
        dataset = MetaDataset(_source(split.source), name=name, digest=split.digest)
        tags = {} if split.rows is None else {ROWS_TAG: str(split.rows)}
        mlflow.log_input(dataset, context=CONTEXTS.get(name, name), tags=tags)


def _source(source: str | Path) -> DatasetSource:
    """A local folder (made absolute) or a URI as an MLflow dataset source."""
    text = str(source)
    if isinstance(source, Path) or len(urlparse(text).scheme) <= 1:
        text = str(Path(text).resolve())
    with warnings.catch_warnings():  # MLflow 3.17 registers the local source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(text)


def run_splits(run: Run) -> list[dict]:
    """The dataset inputs of a run: name, digest, source, context and rows, in logged order."""
    out = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in item.tags}
        ds = item.dataset
        try:
            source = json.loads(ds.source).get("uri", ds.source)
        except (ValueError, AttributeError):
            source = ds.source
        out.append(
            {
                "name": ds.name,
                "digest": ds.digest,
                "source": source,
                "context": tags.get(CONTEXT_TAG),
                "rows": tags.get(ROWS_TAG),
            }
        )
    return out
