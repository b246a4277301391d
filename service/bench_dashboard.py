"""Load times of the dashboard's views over a seeded log: `python -m service.bench_dashboard`.

Seeds a throw-away SQLite log with inspections spread over wafers, lots, fabs and chambers
(with operator feedback, hourly monitor checks and registry events), serves the dashboard
under uvicorn on loopback, and times every view and filter over HTTP: the median and the
slowest of `--repeat` requests after one warm-up. The dashboard runs without models (the
views read only the log, the monitor's history and the registry).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI

from model.schema import CLASS_NAMES
from monitoring.history import Check, History
from registry import install_first, open_store, promote, record_approval
from registry.rollout_state import clear_rollout, set_rollout
from registry.servable import GATE_TAG
from service.config import ServiceConfig, parse_keys
from service.dashboard import router as dashboard_router
from service.embedded import serve_in_thread
from service.inspection_log import InspectionLog
from service.state import ServiceState

OPERATOR_KEY = "bench-operator-key"
DRIFT_FAMILIES = ("process", "images", "embeddings", "notes")


def inspection_record(die_id: str, wafer_id: str, at: datetime, defect_class: int,
                      flagged: bool, metadata: dict, latency_ms: float = 5.0) -> dict:  # fmt: skip
    """A complete inspection record as the service logs it, decided by a champion v1."""
    decision = {"role": "champion", "model_version": "1", "model_kind": "multimodal"}
    decision |= {"defect_class": defect_class, "flagged": flagged, "confidence": 0.9}
    return {
        "inspection_id": f"{die_id}@{at.isoformat()}",
        "die_id": die_id,
        "wafer_id": wafer_id,
        "received_at": at,
        "image_ref": f"{die_id}.png",
        "process_log": {"etch_rate": 100.0},
        "metadata": metadata,
        "route": "off",
        "served_by": "champion",
        "defect_class": defect_class,
        "class_name": CLASS_NAMES[defect_class],
        "confidence": 0.9,
        "flagged": flagged,
        "model_version": "1",
        "model_kind": "multimodal",
        "latency_ms": latency_ms,
        "decisions": [decision],
    }


def record_all(url: str, records: list[dict], feedback: list[tuple]) -> None:
    """Write the records to the log at `url`, then the feedback (die, verdict, true class)."""
    with InspectionLog(url, capacity=len(records) + 1, batch_size=500) as log:
        for record in records:
            log.record(record)
        if not log.flush(timeout=120):
            raise RuntimeError(f"the seeded log was not written: {log.status()}")
        for die_id, verdict, true_class in feedback:
            log.add_feedback(die_id, verdict, "bench", true_class)


@dataclass
class _Checked:
    """One monitor check (its window's end and start, and its rows) for History.append."""

    checked_at: datetime
    start: datetime
    rows: list[Check]

    def checks(self) -> list[Check]:
        return self.rows


def seed_history(url: str, start: datetime, hours: int, drifted_from: int) -> None:
    """Hourly monitor checks: escape rate, FPR with their labelled counts, and drift per
    family (the process family drifting from hour `drifted_from` on)."""
    history = History(url)
    rng = np.random.default_rng(1)
    for h in range(1, hours + 1):
        at = start + timedelta(hours=h)
        rows = [
            Check("escape_rate", float(rng.uniform(0.0, 0.1)), 0.05, False),
            Check("defective_labelled", 40, 30, False),
            Check("fpr", float(rng.uniform(0.0, 0.05)), 0.05, False),
            Check("good_labelled", 120, 30, False),
        ]
        rows += [Check(f"drift_{f}", 0.1, 0.5, f == "process" and h >= drifted_from)
                 for f in DRIFT_FAMILIES]  # fmt: skip
        history.append(_Checked(at, at - timedelta(hours=1), rows))
    history.close()


def seed_registry(tracking_uri: str, model_name: str, rollout_at: datetime) -> None:
    """Two versions: v2 shadowed, canaried and promoted (its events on the time axis)."""
    client = open_store(tracking_uri).client
    client.create_registered_model(model_name)
    for _ in range(2):
        client.create_model_version(
            model_name,
            source=str(Path(tracking_uri.removeprefix("sqlite:///")).parent / "bench-model"),
        )
    install_first(client, model_name, "1", "first champion")
    client.set_model_version_tag(model_name, "2", GATE_TAG, '{"passed":true}')
    record_approval(client, model_name, "2", True, "bench", "seeded", False, {})
    set_rollout(client, model_name, "2", "shadow", 0.0, "shadow", "bench", now=rollout_at)
    later = rollout_at + timedelta(hours=6)
    set_rollout(client, model_name, "2", "canary", 0.1, "10%", "bench", now=later)
    clear_rollout(client, model_name, "promoted", now=later + timedelta(hours=6))
    promote(client, model_name, "2", "rollout passed", over="1")


def seed_fab(inspections: int, wafers: int, now: datetime) -> list[dict]:
    """`inspections` records over `wafers` wafers (5 to a lot) in the 7 days before `now`,
    about 8% flagged, a twentieth of them given feedback. Returns the records."""
    rng = np.random.default_rng(0)
    span = timedelta(days=7)
    xs, ys = np.meshgrid(np.arange(-12, 13), np.arange(-12, 13))
    inside = xs**2 + ys**2 <= 144
    positions = list(zip(xs[inside].tolist(), ys[inside].tolist(), strict=True))
    positions = [positions[k] for k in rng.permutation(len(positions))]  # sampled dies
    records = []
    for i in range(inspections):
        w = i % wafers
        lot, fab = f"L{w // 5:04d}", "ABC"[w // 5 % 3]
        x, y = positions[(i // wafers) % len(positions)]
        defective = rng.random() < 0.08
        defect_class = int(rng.integers(1, 5)) if defective else 0
        metadata = {"lot_id": lot, "fab": fab, "chamber": f"{fab}-CH{w % 4 + 1}",
                    "die_x": x, "die_y": y}  # fmt: skip
        at = now - span + span * (i / inspections)
        die_id = f"{fab}-{lot}-W{w:02d}-D{i // wafers:04d}"
        latency = float(rng.lognormal(1.5, 0.4))
        records.append(inspection_record(die_id, f"{fab}-{lot}-W{w:02d}", at, defect_class,
                                         defective, metadata, latency))  # fmt: skip
    return records


def views_app(config: ServiceConfig) -> FastAPI:
    """The dashboard over the service state of `config`, without loading any model."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.service = ServiceState.build(config)
        app.state.service.log.start()
        app.state.monitor_history = History(config.log_url, create=False)
        yield
        app.state.service.log.close()
        app.state.monitor_history.close()

    app = FastAPI(lifespan=lifespan)
    app.include_router(dashboard_router)
    app.get("/readyz")(lambda: {"ready": True})
    return app


def bench_config(root: Path, model_name: str = "dieguard-bench") -> ServiceConfig:
    """Service settings over a state folder and a SQLite registry in `root`."""
    keys = parse_keys(f"operator:bench:{OPERATOR_KEY}")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return ServiceConfig(model_name=model_name, tracking_uri=uri, state_dir=root, keys=keys)


def views_to_time(records: list[dict]) -> dict[str, str]:
    """Every view and filter of the dashboard, by name, as paths with their queries."""
    die = records[len(records) // 2]
    meta, day = die["metadata"], die["received_at"].strftime("%Y-%m-%d")
    return {
        "lots": "/dashboard/lots",
        "lot view": f"/dashboard/lots/{meta['lot_id']}",
        "wafer map": f"/dashboard/wafers/{die['wafer_id']}",
        "trends: 7 days by hour": "/dashboard/trends?bucket=hour",
        "trends: 7 days by day": "/dashboard/trends?bucket=day",
        "trends: 1 day by hour": f"/dashboard/trends?start={day}&end={day}T23:59",
        "find: no filter": "/dashboard/find",
        "find: wafer": f"/dashboard/find?wafer={die['wafer_id']}",
        "find: lot": f"/dashboard/find?lot={meta['lot_id']}",
        "find: fab": f"/dashboard/find?fab={meta['fab']}",
        "find: chamber": f"/dashboard/find?chamber={meta['chamber']}",
        "find: class": "/dashboard/find?class=scratch",
        "find: flagged": "/dashboard/find?flagged=yes",
        "find: feedback": "/dashboard/find?feedback=overridden",
        "find: time range": f"/dashboard/find?start={day}T00:00&end={day}T12:00",
        "find: die id search": f"/dashboard/find?die={die['die_id'][-9:]}",
        "find: page 40": "/dashboard/find?page=40",
        "find: all filters": f"/dashboard/find?fab={meta['fab']}&flagged=no&class=good&start={day}",
        "CSV export: no filter": "/dashboard/find.csv",
        "CSV export: fab": f"/dashboard/find.csv?fab={meta['fab']}",
    }


def time_views(url: str, views: dict[str, str], repeat: int) -> list[tuple[str, float, float]]:
    """(name, median ms, slowest ms) of each view, after one warm-up request."""
    out = []
    with httpx.Client(base_url=url, auth=("bench", OPERATOR_KEY), timeout=60) as client:
        for name, path in views.items():
            client.get(path).raise_for_status()
            times = []
            for _ in range(repeat):
                began = time.perf_counter()
                client.get(path).raise_for_status()
                times.append((time.perf_counter() - began) * 1000)
            out.append((name, statistics.median(times), max(times)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inspections", type=int, default=6000)
    parser.add_argument("--wafers", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="dieguard-bench-") as folder:
        config = bench_config(Path(folder))
        records = seed_fab(args.inspections, args.wafers, now)
        flagged = [r["die_id"] for r in records if r["flagged"]]
        feedback = [(d, "confirm", None) for d in flagged[::10]]
        feedback += [(d, "override", 0) for d in flagged[5::10]]
        record_all(config.log_url, records, feedback)
        seed_history(config.log_url, now - timedelta(days=7), 7 * 24, 6 * 24)
        seed_registry(config.tracking_uri, config.model_name, now - timedelta(days=2))
        url, stop = serve_in_thread(views_app(config))
        try:
            timings = time_views(url, views_to_time(records), args.repeat)
        finally:
            stop()
    print(f"{args.inspections} inspections, {args.wafers} wafers, {len(feedback)} feedback")
    print(f"{'view':<32} {'median ms':>10} {'slowest ms':>11}")
    for name, median, slowest in timings:
        print(f"{name:<32} {median:>10.1f} {slowest:>11.1f}")


if __name__ == "__main__":
    main()
