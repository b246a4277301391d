"""A bad challenger on a compressed clock: a version that passes every die is rolled out
beside a clean stream, and the rollout's automatic rollback is what the run shows."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

from monitoring.simulate import hour_schedule, read_stream, run_stream


def rollout_overrides(hour_s: float) -> list[str]:
    """Rollout settings for a compressed hour: 5 hours of shadow, 3-hour stages, the 4-hour
    escape window, a check every 0.2 h. A short stream of a split with few defects (the tiny
    test split: 5%) labels a handful of defective dies in 4 hours, not the seed's 50, so a
    window counts from 5 (one escape among them is 20%: a demo setting, never production's).
    """
    return [
        f"shadow_window_s={5 * hour_s}", f"stage_window_s={3 * hour_s}",
        f"rollback_window_s={4 * hour_s}", f"check_interval_s={0.2 * hour_s}",
        "min_labels=20", "min_defective=5", "rollback_min_defective=5",
    ]  # fmt: skip


def register_bad_challenger(tracking_uri: str, model_name: str, workdir: str | Path) -> str:
    """Register the champion's bundle at threshold 1.0 (it passes every die) as challenger.

    Returns:
        The new version.
    """
    from model.onnx_runtime import operating_point_path
    from registry import audit, download_bundle, log_bundle, open_store, register
    from registry.bundle_run import BUNDLE_FILES

    store = open_store(tracking_uri)
    champion = download_bundle(store.client, model_name, "champion", Path(workdir) / "champion")
    record = json.loads((champion / "registered_version.json").read_text())
    kind = record.get("kind") or audit(store.client, model_name, record["version"])["kind"]
    bad = Path(workdir) / "passes-everything"
    bad.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_FILES:
        shutil.copy2(champion / name, bad / name)
    point_file = operating_point_path(bad / "model.onnx")
    point_file.write_text(json.dumps(json.loads(point_file.read_text()) | {"threshold": 1.0}))
    logged = log_bundle(store, f"{model_name}-simulate", bad, kind)
    lineage = {"simulation": "bad challenger: champion bundle at threshold 1.0"}
    return register(store.client, model_name, logged.serving[kind], lineage)


def simulate_bad_challenger(url, station_key, operator_key, clean_dir, tracking_uri, model_name,
                            log_url, workdir, hours=12, rate=40, hour_s=5.0,
                            feedback_delay=1.0, overrides=None, tag=None) -> dict:  # fmt: skip
    """Roll a challenger that passes every die out while the clean split streams.

    Args:
        tracking_uri, model_name: the registry whose champion the service serves.
        log_url: the service's inspection log; workdir: for the downloaded bundles.
        overrides: rollout `key=value` settings over rollout_overrides(hour_s).
        Others as for simulate_drift; the stream ends when the rollout does.
    Returns:
        version, outcome, reason, hours (the stream's rows) and events (the version's
        audit events, oldest first).
    """
    from flows.rollout import rollout
    from registry import audit, open_store

    version = register_bad_challenger(tracking_uri, model_name, workdir)
    settings = rollout_overrides(hour_s) + list(overrides or [])
    result: dict = {}

    def run() -> None:
        try:
            where = {"tracking_uri": tracking_uri, "log_url": log_url}
            result.update(rollout(model_name, version=version, overrides=settings, **where))
        except Exception as err:  # reported by the caller's thread
            result["error"] = err

    tag = tag or f"c{int(time.time()) % 100000}-"
    stream = read_stream(clean_dir)  # before the rollout's clock starts: it takes a while
    schedule = hour_schedule(stream, stream, hours, hours, rate, tag)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    rows = asyncio.run(run_stream(url, station_key, operator_key, schedule, hour_s,
                                  feedback_delay, stop=lambda: not thread.is_alive()))  # fmt: skip
    thread.join(timeout=max(60.0, 10 * hour_s))
    if "error" in result:
        raise result["error"]
    events = audit(open_store(tracking_uri).client, model_name, version)["events"]
    outcome = result.get("outcome", "still running")
    return {"version": version, "outcome": outcome, "reason": result.get("reason"),
            "hours": rows, "events": events}  # fmt: skip


def format_events(events: list[dict]) -> str:
    """One line per audit event: time, kind, stage and reason when given."""
    lines = []
    for e in events:
        d = e.get("detail") or {}
        what = " ".join(f"{k}={d[k]}" for k in ("stage", "mode", "action") if k in d)
        lines.append(f"  {e['seq']:04d} {e['time']} {e['kind']:<10} {what} {d.get('reason', '')}")
    return "\n".join(lines)
