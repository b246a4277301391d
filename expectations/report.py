"""The outcome of validating a data folder, its human-readable failures, and the error raised."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

SHOWN = 10  # failures named in an exception message
SAMPLES = 5  # unexpected values named in one failure
VALUE_CHARS = 60  # a longer value is cut in a failure line


@dataclass
class ValidationReport:
    """What `validate_dataset` found.

    Attributes:
        success: every suite passed on every split and every file could be read.
        failures: one line per failed expectation or unreadable file (split/suite: what).
        results: split -> suite -> GX summary (success, statistics, expectations) or
            {"success": False, "error": ...} when the suite's table could not be read.
        docs_index: the Data Docs index.html of this run.
        data_dir: the validated folder.
        digests: split -> content digest (the key `model.cache` uses for decoded images).
        checked_at: UTC time of the run, ISO 8601.
        seconds: wall time of the run.
    """

    success: bool
    failures: list[str]
    results: dict[str, dict[str, dict]]
    docs_index: Path
    data_dir: Path
    digests: dict[str, str] = field(default_factory=dict)
    checked_at: str = ""
    seconds: float = 0.0

    @property
    def digest(self) -> str:
        """One digest for all validated splits."""
        h = hashlib.blake2b(digest_size=16)
        for split, digest in sorted(self.digests.items()):
            h.update(f"{split}:{digest}\n".encode())
        return h.hexdigest()

    def to_dict(self) -> dict:
        """JSON-able form (paths as strings)."""
        out = asdict(self)
        out |= {"docs_index": str(self.docs_index), "data_dir": str(self.data_dir)}
        return out | {"digest": self.digest}


class DataValidationError(RuntimeError):
    """A data folder failed validation; the message names the failed expectations."""

    def __init__(self, report: ValidationReport):
        self.report = report
        n = len(report.failures)
        listed = "; ".join(report.failures[:SHOWN])
        more = f"; and {n - SHOWN} more" if n > SHOWN else ""
        super().__init__(
            f"data validation failed for {report.data_dir}: {n} failure(s): {listed}{more}. "
            f"Data Docs: {report.docs_index}"
        )


def describe_failures(split: str, suite: str, summary: dict) -> list[str]:
    """One line per failed expectation of one suite's GX summary."""
    return [
        f"{split}/{suite}: {_name(e)} failed: {_observed(e)}"
        for e in summary.get("expectations", [])
        if not e["success"]
    ]


def _name(expectation: dict) -> str:
    column = (expectation.get("kwargs") or {}).get("column")
    kind = expectation["expectation_type"]
    return f"{kind}(column={column})" if column else kind


def _observed(expectation: dict) -> str:
    """What was seen: the error, the observed value, or the unexpected values with their ids."""
    if expectation.get("exception"):
        return f"error: {expectation['exception'].splitlines()[0]}"
    result = expectation.get("result") or {}
    mismatch = (result.get("details") or {}).get("mismatched")
    if isinstance(mismatch, dict):
        return f"missing columns {mismatch.get('missing', [])}, unexpected columns " + str(
            mismatch.get("unexpected", [])
        )
    if "observed_value" in result:
        return f"observed {result['observed_value']!r}"
    if "unexpected_count" in result:
        count, total = result["unexpected_count"], result.get("element_count") or 0
        share = f" ({100 * count / total:.1f}%)" if total else ""
        return f"{count} of {total} values unexpected{share}, e.g. {_samples(result)}"
    return "no details"


def _samples(result: dict) -> str:
    rows = result.get("partial_unexpected_index_list") or []
    if rows and isinstance(rows[0], dict):
        names = result.get("unexpected_index_column_names") or []
        shown = [_row(r, names) for r in rows]
    else:
        shown = [_value(v) for v in result.get("partial_unexpected_list") or []]
    return ", ".join(list(dict.fromkeys(shown))[:SAMPLES]) or "none listed"


def _value(value) -> str:
    """A short repr; numpy floats shown as plain numbers."""
    text = repr(float(value) if isinstance(value, float) else value)
    return text if len(text) <= VALUE_CHARS else f"{text[: VALUE_CHARS - 3]}..."


def _row(row: dict, index_names: list[str]) -> str:
    """'<id>=<value>', or just the value when it already names the row (e.g. an error)."""
    ident = " ".join(str(row[n]) for n in index_names if n in row)
    values = [v for k, v in row.items() if k not in index_names]
    if not values:  # the checked column is the id itself (e.g. a repeated die id)
        return ident
    value = values[0]
    if ident and isinstance(value, str) and ident in value:
        return value
    return f"{ident}={_value(value)}" if ident else _value(value)
