"""Data tasks: fetching from S3, Great Expectations validation (quarantine on failure), EDA."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from expectations.validate import DataValidationError, quarantine, validate_dataset
from model.config import RunConfig
from model.explore import explore_dataset
from model.remote import local_config


@task(retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def fetch_data(cfg: RunConfig) -> RunConfig:
    """The config with an s3:// data_dir replaced by its verified, read-only local snapshot."""
    return local_config(cfg)


@task(retries=1, retry_condition_fn=lambda task, run, state: not _refused(state))
def validate_data(data_dir: str, out_dir: Path, quarantine_root: Path | None = None) -> dict:
    """Validate a data set; a failing one is quarantined and stops the run with its reasons.

    Returns:
        The validation report as a dict (success, results, docs_index).
    """
    report = validate_dataset(data_dir, Path(out_dir) / "data_docs")
    if not report.success:
        quarantine(data_dir, report, quarantine_root or Path(out_dir) / "quarantine")
        raise DataValidationError(report)
    return report.to_dict()


@task
def explore(data_dir: str, out_dir: Path) -> str:
    """The exploratory report of the training split; returns its HTML path."""
    explore_dataset(data_dir, out_dir)
    return str(Path(out_dir) / "eda.html")


def _refused(state) -> bool:
    """A validation verdict is final; only I/O errors are worth a retry."""
    try:
        state.result()
    except DataValidationError:
        return True
    except Exception:  # noqa: BLE001 - any other failure may be transient
        return False
    return False
