"""Production on a compressed clock: a die stream with operator labels against a running
service, and the hourly monitor through a drift (rollouts beside such a stream are in
monitoring.simulate_rollout).

One simulated hour is `hour_s` real seconds. Dies leave at even times within each hour
(`rate` per hour); an operator labels each die `feedback_delay` hours after its answer:
confirm when the served class is its true label, else override with the true class. Every
window of the monitor and the rollout is scaled by the same factor, so the seed's rules
(drift sustained for more than 6 hours, the 4-hour escape window) keep their meaning. The
hourly monitor runs with the clock stopped, after the hour's last answer, so each check
judges its own hour's dies however loaded the machine is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from model.contract import read_split
from monitoring.config import MonitorConfig
from service.loadtest import DiePayload, inspect_form

log = logging.getLogger("dieguard.simulate")
HOUR_FIELDS = ("window_hours", "drift_window_hours", "sustained_hours")
DEMO_MINIMUMS = {"min_defective_labels": 10, "min_good_labels": 10, "min_inspections": 20}


@dataclass(frozen=True)
class SimDie:
    """A die of a labelled split, as a station sends it, with its true class."""

    payload: DiePayload
    label: int


def read_stream(split_dir: str | Path) -> list[SimDie]:
    """The dies of a labelled split folder (dataset contract), in die-id order.

    Returns:
        SimDies with the image bytes, the process log (NaN cells left out), the note and
        the metadata columns that are set.
    """
    tables = read_split(split_dir)
    metadata = json.loads(tables.metadata.to_json(orient="index"))
    dies = []
    for i, die_id in enumerate(tables.ids):
        row = tables.process.iloc[i]
        meta = {k: v for k, v in metadata[die_id].items() if v is not None}
        payload = DiePayload(
            die_id=die_id,
            wafer_id=str(meta.pop("wafer_id")),
            image=tables.image_paths[i].read_bytes(),
            process_log={k: float(v) for k, v in row.items() if v == v},  # NaN: absent
            note=tables.notes[i],
            metadata=meta,
        )
        dies.append(SimDie(payload, int(tables.labels[i])))
    return dies


def hour_schedule(
    clean: list[SimDie], drifted: list[SimDie], hours: int, drift_at: int, rate: int, tag: str
) -> list[list[SimDie]]:
    """The dies of each hour: the clean split before `drift_at`, the drifted one from it.

    Each split is cycled; every sent die gets a distinct id `<die id>-<tag><k>`.
    """
    plan, used = [], Counter()
    for h in range(hours):
        source = drifted if h >= drift_at else clean
        dies = []
        for _ in range(rate):
            k = used[id(source)]
            die = source[k % len(source)]
            sent_id = f"{die.payload.die_id}-{tag}{sum(used.values()):05d}"
            used[id(source)] += 1
            payload = DiePayload(**(vars(die.payload) | {"die_id": sent_id}))
            dies.append(SimDie(payload, die.label))
        plan.append(dies)
    return plan


def scaled_thresholds(hour_s: float, overrides: dict | None = None) -> dict:
    """Monitor settings for a compressed hour: the windows and the trigger scaled by
    hour_s / 3600, label and inspection minimums lowered for a short stream; drift
    thresholds unchanged. `overrides` win.

    The gap rule (a silence between two checks breaks a run of flagged checks) keeps its
    real hours: the simulated clock stops while a check runs, so real seconds between two
    checks are not simulated time, and a run is counted in checks (more than 6).
    """
    base, factor = MonitorConfig(), hour_s / 3600.0
    scaled = {name: getattr(base, name) * factor for name in HOUR_FIELDS}
    return scaled | DEMO_MINIMUMS | dict(overrides or {})


async def _until(loop: asyncio.AbstractEventLoop, at: float) -> None:
    if at > loop.time():
        await asyncio.sleep(at - loop.time())


async def _inspect(client: httpx.AsyncClient, key: str, die: DiePayload) -> int | None:
    """Post one die; its served class, or None when the service refused or failed."""
    form, files = inspect_form(die)
    try:
        r = await client.post("/api/v1/inspect", data=form, files=files, headers={"X-API-Key": key})
    except httpx.HTTPError as err:
        log.warning("inspection of %s failed: %s", die.die_id, type(err).__name__)
        return None
    if r.status_code != 200:
        log.warning("inspection of %s refused: %s %s", die.die_id, r.status_code, r.text[:300])
        return None
    return int(r.json()["defect_class"])


async def _label(client: httpx.AsyncClient, key: str, die: SimDie, served: int) -> bool:
    """The operator's verdict on a served die: confirm, or override with the true class."""
    body = {"die_id": die.payload.die_id, "verdict": "confirm"}
    if served != die.label:
        body = body | {"verdict": "override", "true_class": die.label}
    try:
        r = await client.post("/api/v1/feedback", json=body, headers={"X-API-Key": key})
    except httpx.HTTPError:
        return False
    return r.status_code in (200, 201)


@dataclass
class _Stream:
    """Where a stream posts, its keys, its label delay and what it counted per hour."""

    client: httpx.AsyncClient
    station_key: str
    operator_key: str
    delay_s: float
    counts: Counter = field(default_factory=Counter)
    labels: list[asyncio.Task] = field(default_factory=list)

    async def inspect(self, die: SimDie, hour: int, due: float) -> None:
        """Post the die at `due`; once served, its label is due `delay_s` later."""
        await _until(asyncio.get_running_loop(), due)
        served = await _inspect(self.client, self.station_key, die.payload)
        self.counts[hour, "sent"] += 1
        if served is None:
            self.counts[hour, "errors"] += 1
            return
        self.labels.append(asyncio.create_task(self.label(die, served, hour)))

    async def label(self, die: SimDie, served: int, hour: int) -> None:
        await asyncio.sleep(self.delay_s)
        if await _label(self.client, self.operator_key, die, served):
            self.counts[hour, "labelled"] += 1


async def run_stream(url, station_key, operator_key, schedule, hour_s, feedback_delay,
                     on_hour=None, stop=None) -> list[dict]:  # fmt: skip
    """Send the schedule's dies and their labels, an hour at a time.

    With `on_hour`, the clock stops at each hour's end: once every die of the hour has its
    answer, `on_hour` runs, and the next hour starts when it returns. Each check thus
    judges its own hour's dies however long the service or the check take on a loaded
    machine. Without it, the hours follow each other on the wall clock.

    Args:
        url: the service's base URL.
        schedule: the dies of each simulated hour (hour_schedule).
        hour_s: real seconds per simulated hour; feedback_delay: hours from a die's answer
            to its label.
        on_hour: on_hour(hour, now) -> dict, run in a thread at each hour's end, `now` being
            the wall clock then; its dict joins the hour's row.
        stop: a callable asked after each hour; True ends the stream (labels still due
            are dropped).
    Returns:
        One row per hour run: hour, sent, errors, labelled (labels of the hour's dies sent
        before the stream ended), and on_hour's fields.
    """
    loop = asyncio.get_running_loop()
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=30.0, trust_env=False) as client:
        s = _Stream(client, station_key, operator_key, feedback_delay * hour_s)
        start, sent = loop.time() + 0.5, []
        for h, dies in enumerate(schedule):
            sends = [
                asyncio.create_task(s.inspect(die, h, start + i / len(dies) * hour_s))
                for i, die in enumerate(dies)
            ]
            sent += sends
            await _until(loop, start + hour_s)
            if on_hour is None:
                row = {}
            else:
                await asyncio.gather(*sends)
                row = await asyncio.to_thread(on_hour, h, datetime.now(UTC))
            rows.append({"hour": h} | {k: s.counts[h, k] for k in ("sent", "errors")} | row)
            start = max(start + hour_s, loop.time())
            if stop is not None and stop():
                break
        for task in sent + s.labels:
            task.cancel()
        await asyncio.gather(*sent, *s.labels, return_exceptions=True)
    for row in rows:
        row["labelled"] = s.counts[row["hour"], "labelled"]
    return rows


@dataclass
class Timeline:
    """The drift scenario's hours and when the drift began, was flagged and was sustained."""

    rows: list[dict]
    drift_at: int

    def first(self, key: str, family: str | None = None) -> int | None:
        """The first hour whose `key` list is non-empty (or holds `family`)."""
        for row in self.rows:
            found = row.get(key) or []
            if (family in found) if family else found:
                return row["hour"]
        return None

    def summary(self) -> list[str]:
        began = self.drift_at if self.drift_at < len(self.rows) else None
        first = self.first("drifted")
        return [
            _at("drift began", began),
            _at("first flagged", first)
            + (f" ({_names(self.rows[first]['drifted'])})" if first is not None else ""),
            _at("sustained (retrain trigger)", self.first("sustained")),
        ]

    def format(self) -> str:
        """The table, one row per hour, then the summary lines."""
        lines = [f"{'hour':>4} {'phase':8} {'sent':>5} {'err':>4} {'labels':>6}  "
                 f"{'drifted':24} {'alerts':20} sustained"]  # fmt: skip
        for r in self.rows:
            phase = "drifted" if r["hour"] >= self.drift_at else "clean"
            lines.append(
                f"{r['hour']:>4} {phase:8} {r['sent']:>5} {r['errors']:>4} {r['labelled']:>6}  "
                f"{_names(r.get('drifted')):24} {_names(r.get('alerts')):20} "
                f"{_names(r.get('sustained'))}"
            )
        return "\n".join(lines + self.summary())


def _at(what: str, hour: int | None) -> str:
    return f"{what} at hour {hour}" if hour is not None else f"{what}: not reached"


def _names(items) -> str:
    return ",".join(items) if items else "-"


def simulate_drift(url, station_key, operator_key, clean_dir, drifted_dir, log_url,
                   reference_dir, image_store=None, report_dir="runs/simulate", hours=12,
                   drift_at=4, rate=40, hour_s=5.0, feedback_delay=1.0, thresholds=None,
                   retrain_deployment="", tag=None, model_name="dieguard",
                   tracking_uri=None) -> Timeline:  # fmt: skip
    """Stream the clean split, then the drifted one, and run the monitor every hour.

    Args:
        url, station_key, operator_key: the running service and its keys.
        clean_dir, drifted_dir: labelled split folders (dataset contract).
        log_url, reference_dir, image_store, report_dir: as for the monitor flow
            (reference_dir None: the champion's training split, from `model_name` in the
            registry at `tracking_uri`).
        hours, drift_at, rate, hour_s, feedback_delay: the stream (see the module).
        thresholds: monitor settings over scaled_thresholds(hour_s).
        retrain_deployment: "" reports sustained drift only; else the deployment to start.
        tag: die-id suffix of this run (default: from the clock).
    Returns:
        The Timeline: per hour sent, errors, labelled, drifted families, alerts, sustained.
    """
    from flows.monitor import monitor

    tag = tag or f"s{int(time.time()) % 100000}-"
    schedule = hour_schedule(read_stream(clean_dir), read_stream(drifted_dir), hours,
                             drift_at, rate, tag)  # fmt: skip
    settings = scaled_thresholds(hour_s, thresholds)

    def check(hour: int, now: datetime) -> dict:
        result = monitor(
            log_url=log_url, image_store=image_store and str(image_store),
            reference_dir=reference_dir and str(reference_dir), model_name=model_name,
            tracking_uri=tracking_uri, report_dir=str(report_dir), now=now,
            thresholds=settings, retrain_deployment=retrain_deployment,
        )  # fmt: skip
        families = result["drift"]["families"].values()
        skipped = [f["name"] for f in families if f["skipped"]]
        return {k: result[k] for k in ("drifted", "alerts", "sustained", "retrain")} | {
            "skipped": skipped, "dies": result["drift"]["dies"]}  # fmt: skip

    rows = asyncio.run(run_stream(url, station_key, operator_key, schedule, hour_s,
                                  feedback_delay, on_hour=check))  # fmt: skip
    return Timeline(rows, drift_at)
