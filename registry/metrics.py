"""Training figures as MLflow metrics: per-epoch history and test figures, named by kind."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric

SPLITS = ("test", "test_no_notes")  # with notes, and with every note removed
BATCH = 1000  # MLflow's limit of metrics per log_batch call


def epoch_metrics(kind: str, history_csv: str | Path) -> list[Metric]:
    """Every numeric column of a history.csv as ``<kind>.<column>`` with ``step=epoch``.

    Empty cells (stage-1 rows lack the stage-2 loss terms) are left out.
    """
    table = pd.read_csv(history_csv)
    if "epoch" not in table.columns:
        raise ValueError(f"{history_csv} has no epoch column")
    now = int(time.time() * 1000)
    columns = [c for c in table.select_dtypes("number").columns if c != "epoch"]
    return [
        Metric(f"{kind}.{column}", float(row[column]), now, int(row["epoch"]))
        for _, row in table.iterrows()
        for column in columns
        if not pd.isna(row[column])
    ]


def test_metrics(summary: Mapping[str, Mapping]) -> dict[str, float]:
    """Test figures of each kind from summary.json (see model.report.score).

    Names: ``<kind>.<split>.{escape_rate, escape_upper95, fpr, fpr_upper95, macro_f1,
    accuracy}`` for split ``test`` and ``test_no_notes``, and ``<kind>.operating_threshold``
    (the kept epoch's; ``<kind>.threshold`` is each epoch's, in the history),
    ``<kind>.best_epoch``, ``<kind>.train_seconds``.
    """
    out: dict[str, float] = {}
    for kind, figures in summary.items():
        for split in SPLITS:
            if split in figures:
                out |= {f"{kind}.{split}.{k}": v for k, v in _split_figures(figures[split])}
        for key, name in (("threshold", "operating_threshold"), ("best_epoch", "best_epoch")):
            if figures.get(key) is not None:
                out[f"{kind}.{name}"] = float(figures[key])
        if figures.get("seconds") is not None:
            out[f"{kind}.train_seconds"] = float(figures["seconds"])
    return out


def _split_figures(t: Mapping) -> Iterator[tuple[str, float]]:
    yield "escape_rate", float(t["escape"]["rate"])
    yield "escape_upper95", float(t["escape"]["hi"])
    yield "fpr", float(t["fpr"]["rate"])
    yield "fpr_upper95", float(t["fpr"]["hi"])
    yield "macro_f1", float(t["macro_f1"])
    if "accuracy" in t:
        yield "accuracy", float(t["accuracy"])


def run_metrics(
    histories: Mapping[str, str | Path], summary: Mapping[str, Mapping]
) -> list[Metric]:
    """Every kind's per-epoch history, then the test figures, as one list to log.

    The test figures are stamped after every history value, so that a name in both would not
    repeat the key (name, timestamp, step) of its epoch-0 value, which MLflow's logged-model
    metrics refuse.
    """
    metrics = [m for kind, path in histories.items() for m in epoch_metrics(kind, path)]
    now = max([int(time.time() * 1000), *(m.timestamp + 1 for m in metrics)])
    return metrics + [Metric(k, v, now, 0) for k, v in test_metrics(summary).items()]


def batches(metrics: Iterable[Metric], size: int = BATCH) -> Iterator[list[Metric]]:
    """Metrics in chunks that one log_batch call accepts."""
    chunk: list[Metric] = []
    for metric in metrics:
        chunk.append(metric)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
