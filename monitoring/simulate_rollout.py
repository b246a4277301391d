"""Rollouts on a compressed clock beside a stream of labelled dies: an approved challenger
earning its promotion stage by stage, and a bad challenger rolled back on its own."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

from model.schema import GOOD
from monitoring.simulate import SimDie, hour_schedule, read_stream, run_stream


def rollout_overrides(hour_s: float) -> list[str]:
    """Rollout settings for a compressed hour: 5 hours of shadow, 3-hour stages, the 4-hour
    escape window, a check every 0.2 h, a lease of 4 h. A short stream of a split with few
    defects (the tiny test split: 5%) labels a handful of defective dies in 4 hours, not the
    seed's 50, so a window counts from 5 (one escape among them is 20%: a demo setting,
    never production's), and a stage advances after 5 labelled dies of its own.
    """
    return [
        f"shadow_window_s={5 * hour_s}", f"stage_window_s={3 * hour_s}",
        f"rollback_window_s={4 * hour_s}", f"check_interval_s={0.2 * hour_s}",
        f"lease_s={4 * hour_s}", "min_labels=20", "min_defective=5",
        "rollback_min_defective=5", "min_decided=5",
    ]  # fmt: skip


def promotion_overrides(hour_s: float) -> list[str]:
    """rollout_overrides with gates a sound challenger can pass within a day's stream.

    Every labelled die the challenger scored counts, shadow or deciding: a defect-rich
    stream labels about 100 defective and 100 good dies during the shadow hours, so a
    challenger with no escape there has an escape upper bound of 3.6% (5% gate here) and
    one at a 6% FPR an upper bound near 12% (25% gate). The escape window counts from the
    seed's 50 defective dies, so one escape alone never rolls back a sound challenger. The
    seed's 1% / 15% gates need about 300 defective dies without an escape: days of a line.
    """
    demo = ["min_labels=100", "min_defective=50", "rollback_min_defective=50"]
    return rollout_overrides(hour_s) + demo + ["max_escape=0.05", "max_fpr=0.25"]


def defect_rich(dies: list[SimDie]) -> list[SimDie]:
    """The split's dies with defective and good ones taking turns (each side cycled).

    Escape rate and FPR are rates within a class, so they do not depend on the mix; a
    stream that is half defective gives a short stage enough defective labels.
    """
    defective = [d for d in dies if d.label != GOOD]
    good = [d for d in dies if d.label == GOOD]
    if not defective or not good:
        return list(dies)
    n = max(len(defective), len(good))
    return [side[i % len(side)] for i in range(n) for side in (defective, good)]


def approved_challenger(tracking_uri: str | None, model_name: str) -> str | None:
    """The `challenger` version when the serving rule allows it and it is not champion yet,
    else None."""
    from registry import CHALLENGER, CHAMPION, NotServable, open_store, require_servable
    from registry.aliases import alias_version

    client = open_store(tracking_uri).client
    version = alias_version(client, model_name, CHALLENGER)
    if version is None or version == alias_version(client, model_name, CHAMPION):
        return None
    try:
        require_servable(client, model_name, version)
    except NotServable:
        return None
    return version


def register_bad_challenger(tracking_uri: str, model_name: str, workdir: str | Path) -> str:
    """Register the champion's bundle at threshold 1.0 (it passes every die) as challenger.

    Tagged as a simulation artifact, with a gate verdict and an automatic approval that say
    so: it stands for a candidate whose flaw only production shows, which the rollout's own
    rules must catch.

    Returns:
        The new version.
    """
    from model.onnx_runtime import operating_point_path
    from registry import audit, download_bundle, log_bundle, open_store, record_approval, register
    from registry.bundle_run import BUNDLE_FILES
    from registry.model_card import write_model_card

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
    what = "bad challenger: the champion's bundle at threshold 1.0, it passes every die"
    gate = {"passed": True, "reason": f"simulation: no gates run for the {what}"}
    version = register(store.client, model_name, logged.serving[kind],
                       {"simulation": what, "gate": gate})  # fmt: skip
    why = "simulation: approved so that the rollout's rules must catch it"
    record_approval(store.client, model_name, version, True, "simulation", why, True, {})
    write_model_card(store.client, model_name, version)
    return version


def simulate_rollout(url, station_key, operator_key, clean_dir, tracking_uri, model_name,
                     log_url, version, hours=12, rate=40, hour_s=5.0, feedback_delay=1.0,
                     overrides=None, rich=False, tag=None) -> dict:  # fmt: skip
    """Roll `version` out while the clean split streams; the stream ends with the rollout.
    A rollout still in progress (an earlier simulation's) is stopped first.

    Args:
        url, station_key, operator_key: the running service and its keys.
        clean_dir: a labelled split folder (dataset contract).
        tracking_uri, model_name: the registry whose champion the service serves.
        log_url: the service's inspection log.
        version: the challenger to roll out.
        hours, rate, hour_s, feedback_delay: the stream (monitoring.simulate).
        overrides: rollout `key=value` settings (default: rollout_overrides(hour_s)).
        rich: stream defective and good dies in turn (defect_rich).
    Returns:
        version, outcome, reason, hours (the stream's rows) and events (the version's
        audit events, oldest first).
    """
    from flows.rollout import rollout
    from registry import audit, open_store
    from registry.rollout_state import clear_rollout

    settings = rollout_overrides(hour_s) if overrides is None else list(overrides)
    result: dict = {}
    why = f"simulation: version {version} is rolled out next"  # one left by an earlier run
    clear_rollout(open_store(tracking_uri).client, model_name, why)

    def run() -> None:
        try:
            where = {"tracking_uri": tracking_uri, "log_url": log_url}
            result.update(rollout(model_name, version=version, overrides=settings, **where))
        except Exception as err:  # reported by the caller's thread
            result["error"] = err

    tag = tag or f"r{int(time.time()) % 100000}-"
    stream = read_stream(clean_dir)  # before the rollout's clock starts: it takes a while
    stream = defect_rich(stream) if rich else stream
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


def simulate_bad_challenger(url, station_key, operator_key, clean_dir, tracking_uri, model_name,
                            log_url, workdir, hours=12, rate=40, hour_s=5.0,
                            feedback_delay=1.0, overrides=None, tag=None) -> dict:  # fmt: skip
    """Register a challenger that passes every die and roll it out on a defect-rich stream.

    Half the dies defective: the escape-rate rule sees its minimum of defective labels within
    about an hour of labels, even when a slow machine sends fewer dies an hour than asked.

    Args:
        workdir: for the downloaded bundles; overrides: over rollout_overrides(hour_s).
        Others as for simulate_rollout.
    """
    version = register_bad_challenger(tracking_uri, model_name, workdir)
    settings = rollout_overrides(hour_s) + list(overrides or [])
    return simulate_rollout(url, station_key, operator_key, clean_dir, tracking_uri, model_name,
                            log_url, version, hours, rate, hour_s, feedback_delay, settings,
                            rich=True, tag=tag or f"c{int(time.time()) % 100000}-")  # fmt: skip


def format_events(events: list[dict]) -> str:
    """One line per audit event: time, kind, stage and reason when given."""
    lines = []
    for e in events:
        d = e.get("detail") or {}
        what = " ".join(f"{k}={d[k]}" for k in ("stage", "mode", "action") if k in d)
        lines.append(f"  {e['seq']:04d} {e['time']} {e['kind']:<10} {what} {d.get('reason', '')}")
    return "\n".join(lines)
