"""Validate a dataset folder with the stored suites, build Data Docs, and report.

    report = validate_dataset(data_dir, docs_dir)
    if not report.success:
        quarantine(data_dir, report, quarantine_root)
        raise DataValidationError(report)

Command line: ``python -m expectations.validate DATA_DIR DOCS_DIR [--splits train val]``
(DATA_DIR may be ``s3://bucket/prefix``: it is fetched to its verified snapshot first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from expectations import tables
from expectations.gx_run import SuiteRunner
from expectations.image_stats import content_digest, image_stats
from expectations.quarantine import (
    QuarantinedError,
    ensure_not_quarantined,
    is_quarantined,
    quarantine,
    quarantine_status,
)
from expectations.report import DataValidationError, ValidationReport, describe_failures
from model.config import DataConfig
from model.remote import resolve_data_dir
from model.schema import SPLITS

__all__ = [
    "DataValidationError",
    "QuarantinedError",
    "ValidationReport",
    "ensure_not_quarantined",
    "is_quarantined",
    "quarantine",
    "quarantine_status",
    "validate_dataset",
]

INDEX_COLUMN = {"image_stats": "file"}  # the column naming an unexpected row; else die_id


def validate_dataset(
    data_dir: str | Path,
    docs_dir: str | Path,
    splits: Sequence[str] = SPLITS,
    *,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    refuse_quarantined: bool = True,
) -> ValidationReport:
    """Run every suite on every split of `data_dir` and build Data Docs into `docs_dir`.

    Args:
        data_dir: the dataset folder (one sub-folder per split).
        docs_dir: where the Data Docs site goes (its index.html is `report.docs_index`).
        splits: the split folders to check.
        cache_dir: the training image cache (`data.cache_dir`), read when it already holds
            these images decoded at full size; otherwise every image is decoded once.
        threads: image decoding threads.
        refuse_quarantined: raise QuarantinedError for a folder with a quarantine marker.
    Returns:
        The report; it does not raise for bad data (see DataValidationError).
    """
    data_dir = Path(data_dir)
    if refuse_quarantined:
        ensure_not_quarantined(data_dir)
    start = time.perf_counter()
    runner = SuiteRunner(docs_dir, run_name=data_dir.resolve().name)
    results: dict[str, dict[str, dict]] = {}
    failures: list[str] = []
    digests: dict[str, str] = {}
    for split in splits:
        split_dir, results[split] = data_dir / split, {}
        if not split_dir.is_dir():
            failures.append(f"{split}: missing split folder {split_dir}")
            continue
        digests[split] = content_digest(split_dir)
        loaders = _loaders(split_dir, cache_dir, digests[split], threads)
        for suite, table in _load_tables(loaders).items():
            if isinstance(table, str):
                results[split][suite] = {"success": False, "error": table}
                failures.append(f"{split}/{suite}: could not read: {table}")
                continue
            summary = runner.validate(split, suite, table, INDEX_COLUMN.get(suite, "die_id"))
            results[split][suite] = summary
            failures += describe_failures(split, suite, summary)
    return ValidationReport(
        success=not failures,
        failures=failures,
        results=results,
        docs_index=runner.build_docs(),
        data_dir=data_dir,
        digests=digests,
        checked_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - start, 2),
    )


def _loaders(split_dir: Path, cache_dir, digest: str, threads: int | None) -> dict:
    cache = Path(cache_dir) if cache_dir else None
    return {
        "process_logs": lambda: tables.process_logs(split_dir),
        "labels": lambda: tables.labels(split_dir),
        "notes": lambda: tables.notes(split_dir),
        "metadata": lambda: tables.metadata(split_dir),
        "image_stats": lambda: image_stats(split_dir, cache, digest, threads),
    }


def _load_tables(loaders: dict[str, Callable[[], pd.DataFrame]]) -> dict[str, pd.DataFrame | str]:
    """Each suite's table, or the reason it could not be read; then the die_ids table."""
    loaded: dict[str, pd.DataFrame | str] = {}
    for suite, load in loaders.items():
        try:
            loaded[suite] = load()
        except tables.TableReadError as err:
            loaded[suite] = str(err)
    readable = {k: v for k, v in loaded.items() if isinstance(v, pd.DataFrame)}
    by_modality = {m: readable.get(m) for m in ("process_logs", "labels", "metadata")}
    by_modality["images"] = readable.get("image_stats")
    notes = readable.get("notes")
    note_ids = notes["die_id"].dropna().tolist() if notes is not None else []
    loaded["die_ids"] = tables.die_ids(by_modality, note_ids)
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="a dataset folder or s3://bucket/prefix")
    parser.add_argument("docs_dir", type=Path)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS))
    parser.add_argument("--cache-dir", type=Path)
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or DataConfig().cache_dir
    data_dir = resolve_data_dir(args.data_dir, cache_dir)  # s3://: its verified snapshot
    report = validate_dataset(data_dir, args.docs_dir, args.splits, cache_dir=args.cache_dir)
    summary = {k: v for k, v in report.to_dict().items() if k != "results"}
    print(json.dumps(summary, indent=2))
    return 0 if report.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
