"""A small fab's log for the dashboard's view tests, with every die's expected place.

Lot L0001 (fab A) has wafer W01, a 3 x 3 block of dies in all five classes (one die
inspected twice, one without a position, one confirmed and one overridden) and wafer W02;
lot L0003 (fab C) has one wafer of 60 good dies, enough for two pages of the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from service.bench_dashboard import (
    bench_config,
    inspection_record,
    record_all,
    seed_history,
    seed_registry,
)

W01, W02, W03 = "A-L0001-W01", "A-L0001-W02", "C-L0003-W01"
REINSPECTED = f"{W01}-D04"  # good at first, then a scratch
UNPLACED = f"{W01}-D99"
CONFIRMED, OVERRIDDEN = f"{W01}-D01", f"{W01}-D02"


@dataclass
class SeededFab:
    config: object
    records: list[dict]
    now: datetime

    def latest(self, wafer_id: str) -> dict[str, dict]:
        """The latest record of each die of a wafer, by die id."""
        found = {}
        for r in sorted(self.records, key=lambda r: r["received_at"]):
            if r["wafer_id"] == wafer_id:
                found[r["die_id"]] = r
        return found


def _meta(lot: str, fab: str, chamber: str, x: int | None, y: int | None) -> dict:
    meta = {"lot_id": lot, "fab": fab, "chamber": chamber}
    return meta if x is None else meta | {"die_x": x, "die_y": y}


def fab_records(now: datetime) -> list[dict]:
    """The records of the three wafers, received over the 30 hours before `now`."""
    start = now - timedelta(hours=30)
    records = []
    for i, (x, y) in enumerate((x, y) for y in (1, 0, -1) for x in (-1, 0, 1)):
        cls = i % 5
        meta = _meta("L0001", "A", "A-CH1", x, y)
        at = start + timedelta(minutes=10 * i)
        records.append(inspection_record(f"{W01}-D{i:02d}", W01, at, cls, cls != 0, meta))
    again = start + timedelta(hours=20)
    meta = _meta("L0001", "A", "A-CH1", 0, 0)
    records.append(inspection_record(REINSPECTED, W01, again, 2, True, meta))
    meta = _meta("L0001", "A", "A-CH1", None, None)
    records.append(inspection_record(UNPLACED, W01, start + timedelta(hours=2), 1, True, meta))
    for i in range(4):
        meta = _meta("L0001", "A", "A-CH2", i - 2, 2)
        at = start + timedelta(hours=5, minutes=i)
        records.append(inspection_record(f"{W02}-D{i:02d}", W02, at, 0, False, meta))
    for i in range(60):
        meta = _meta("L0003", "C", "C-CH3", i % 8 - 4, i // 8 - 4)
        at = start + timedelta(hours=26, minutes=i)
        records.append(inspection_record(f"{W03}-D{i:02d}", W03, at, 0, False, meta))
    return records


def seed_fab(root: Path) -> SeededFab:
    """Write the fab's log, feedback, 48 hourly monitor checks and the registry's events."""
    now = datetime.now(UTC).replace(microsecond=0)
    config = bench_config(root, "dieguard-views-tests")
    records = fab_records(now)
    feedback = [(CONFIRMED, "confirm", None), (OVERRIDDEN, "override", 0)]
    record_all(config.log_url, records, feedback)
    seed_history(config.log_url, now - timedelta(hours=48), 48, 40)
    seed_registry(config.tracking_uri, config.model_name, now - timedelta(hours=20))
    return SeededFab(config, records, now)
