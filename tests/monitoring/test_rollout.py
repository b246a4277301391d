"""The rollout's rules on constructed outcomes: promote, hold, the 4-hour rule, the gates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from monitoring.rollout import (
    Outcome,
    RolloutConfig,
    Stage,
    challenger_outcomes,
    decide_stage,
    judge_check,
    load_rollout_config,
    stage_plan,
)
from monitoring.simulate_sequential import outcome_rates

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
CONFIG = RolloutConfig()


def die(i: int, at: datetime, label: int, flagged: bool) -> Outcome:
    return Outcome(f"A-L0001-W01-D{i:05d}", f"insp-{i}", at, label, flagged)


def spread(n: int, hours: float, label: int, start: datetime = T0, first: int = 0) -> list:
    """n dies of one label, evenly over `hours`, all judged right."""
    step = timedelta(hours=hours) / n
    return [die(first + i, start + i * step, label, label != 0) for i in range(n)]


def escape(outcomes: list[Outcome], indices) -> list[Outcome]:
    """The same dies with the ones at `indices` passed by the challenger (escapes)."""
    out = list(outcomes)
    for i in indices:
        out[i] = Outcome(*[getattr(out[i], k) for k in ("die_id", "inspection_id", "at")], 2, False)
    return out


def flag(outcomes: list[Outcome], count: int) -> list[Outcome]:
    """The same good dies with the first `count` flagged (false positives)."""
    return [Outcome(o.die_id, o.inspection_id, o.at, 0, i < count) for i, o in enumerate(outcomes)]


def good(n: int, hours: float = 24.0) -> list[Outcome]:
    return spread(n, hours, 0, first=100_000)


NOW = T0 + timedelta(days=2)


def test_enough_clean_labels_promote():
    outcomes = spread(400, 24, 3) + flag(good(200), 10)  # 0/400 escapes, 10/200 FP
    decision = decide_stage(outcomes, CONFIG, NOW)
    assert decision.action == "promote", decision.reason
    figures = decision.figures
    assert figures["escape"]["k"] == 0 and figures["escape"]["n"] == 400
    assert figures["escape"]["hi"] < 0.01 and figures["fpr"]["hi"] < 0.15
    assert figures["labelled"] == 600 and figures["worst_window"]["rate"] == 0.0
    json.dumps(decision.as_dict())  # JSON-ready for events and artifacts


def test_too_few_labels_hold():
    decision = decide_stage(spread(20, 4, 1) + good(80), CONFIG, NOW)
    assert decision.action == "hold" and "too few labels" in decision.reason
    decision = decide_stage(spread(10, 4, 1) + good(300), CONFIG, NOW)  # defective too few
    assert decision.action == "hold" and "10 defective" in decision.reason


def test_enough_labels_but_wide_bounds_hold():
    decision = decide_stage(spread(50, 24, 1) + good(200), CONFIG, NOW)
    assert decision.action == "hold" and decision.reason.startswith("undecided")
    assert decision.figures["escape"]["hi"] > 0.01  # 0/50 escapes: upper bound 7.1%


def test_escapes_crowded_into_four_hours_roll_back():
    defective = escape(spread(720, 24, 1), [300, 310, 320])  # three escapes within an hour
    decision = decide_stage(defective + good(300), CONFIG, NOW)
    assert decision.action == "rollback", decision.reason
    window = decision.figures["worst_window"]
    assert window["k"] == 3 and window["n"] == 120 and window["rate"] == pytest.approx(0.025)
    assert decision.figures["escape"]["lo"] < 0.01  # the window rule alone fired


def test_the_same_escapes_spread_over_more_than_four_hours_do_not():
    defective = escape(spread(720, 24, 1), [30, 270, 510])  # hours 1, 9 and 17
    decision = decide_stage(defective + good(300), CONFIG, NOW)
    assert decision.action == "hold", decision.reason
    assert decision.figures["worst_window"]["k"] == 1


def test_one_escape_cannot_fire_the_four_hour_rule():
    defective = escape(spread(50, 1, 1), [0])  # 1/50 = 2.0%: not over 2%
    decision = decide_stage(defective + good(300), CONFIG, NOW)
    assert decision.action != "rollback" and decision.figures["worst_window"]["n"] == 50
    few = escape(spread(49, 1, 1), [0, 1])  # 2/49, but fewer than 50 defective dies
    decision = decide_stage(few + good(100), CONFIG, NOW)
    assert decision.action == "hold" and decision.figures["worst_window"] is None


def test_a_lower_bound_over_the_escape_gate_rolls_back():
    defective = escape(spread(60, 24, 4), [5, 15, 25, 35, 45])  # 5/60, ~10 per 4 hours
    decision = decide_stage(defective + good(240), CONFIG, NOW)
    assert decision.action == "rollback" and "lower bound" in decision.reason
    assert decision.figures["worst_window"] is None
    assert decision.figures["escape"]["lo"] > 0.01


def test_a_lower_bound_over_the_fpr_gate_rolls_back():
    outcomes = spread(50, 24, 1) + flag(good(200), 60)  # FPR 30%, lower bound ~24%
    decision = decide_stage(outcomes, CONFIG, NOW)
    assert decision.action == "rollback" and decision.reason.startswith("FPR")


def test_dies_after_now_are_not_counted():
    outcomes = spread(400, 24, 3) + flag(good(200), 10)
    decision = decide_stage(outcomes, CONFIG, T0 + timedelta(hours=12, seconds=-1))
    assert decision.figures["defective"] == 200 and decision.action == "hold"


def test_config_checks_and_loading(tmp_path):
    with pytest.raises(ValueError, match="end at 1.0"):
        RolloutConfig(stages=(0.1, 0.5))
    with pytest.raises(ValueError, match="rise strictly"):
        RolloutConfig(stages=(0.5, 0.25, 1.0))
    with pytest.raises(ValueError, match="max_escape"):
        RolloutConfig(max_escape=0.0)
    path = tmp_path / "rollout.yaml"
    path.write_text("stage_window_s: 60\nstages: [0.5, 1.0]\ncanary: true\n")
    cfg = load_rollout_config(path, ["min_labels=20", "max_fpr=0.2"])
    assert cfg.stages == (0.5, 1.0) and cfg.stage_window_s == 60 and cfg.min_labels == 20
    assert [(s.name, s.mode, s.share) for s in stage_plan(cfg)] == [
        ("shadow", "shadow", 0.0),
        ("canary", "canary", 0.05),
        ("50%", "canary", 0.5),
        ("100%", "canary", 1.0),
    ]
    with pytest.raises(ValueError, match="unknown rollout config keys: stage_window"):
        load_rollout_config(None, ["stage_window=5"])


def record(i: int, served_by: str, candidate_flags: bool, version: str = "4") -> dict:
    decisions = [
        {"role": "champion", "model_version": "3", "flagged": True},
        {"role": "candidate", "model_version": version, "flagged": candidate_flags},
    ]
    at = T0 + timedelta(minutes=10 - i)
    return {"inspection_id": f"insp-{i}", "die_id": f"D{i}", "received_at": at} | {
        "served_by": served_by,
        "decisions": decisions,
    }


def test_challenger_outcomes_join_decisions_and_labels():
    records = [
        record(0, "candidate", False),  # decided by the challenger, labelled defective: escape
        record(1, "champion", True),  # shadowed only
        record(2, "candidate", True),  # decided, never labelled
        record(3, "candidate", True, version="5"),  # another version
        record(4, "candidate", True),
    ]
    labels = [{"inspection_id": f"insp-{i}", "label": 2} for i in (0, 1, 3)]
    labels.append({"inspection_id": "insp-4", "label": 0})
    decided = challenger_outcomes(records, labels, "4")
    assert [o.inspection_id for o in decided] == ["insp-4", "insp-0"]  # oldest first
    assert decided[1].escaped and not decided[0].defective and decided[0].flagged
    judged = challenger_outcomes(records, labels, "4", decided_only=False)
    assert [o.inspection_id for o in judged] == ["insp-4", "insp-1", "insp-0"]


def decided(outcomes: list[Outcome]) -> list[Outcome]:
    """The same dies, decided by the challenger (a canary stage's share)."""
    return [Outcome(o.die_id, o.inspection_id, o.at, o.label, o.flagged, True) for o in outcomes]


STAGE = Stage("10%", "canary", 0.1, 6 * 3600.0)


def test_a_stage_advances_on_all_scored_dies_once_it_decided_its_own():
    shadow = spread(400, 24, 3) + flag(good(200), 10)  # scored in shadow, decided by none
    entered = T0 + timedelta(hours=30)
    held = judge_check(STAGE, shadow, entered, entered + timedelta(hours=1), CONFIG)
    assert held.action == "hold" and "100 decided in the stage needed" in held.reason
    own = decided(spread(100, 1, 0, start=entered, first=200_000))
    advanced = judge_check(STAGE, shadow + own, entered, entered + timedelta(hours=1), CONFIG)
    assert advanced.action == "promote" and advanced.figures["decided_in_stage"] == 100


def test_a_stage_without_evidence_stops_past_its_window_and_shadow_waits_out_its_own():
    few = spread(10, 1, 3)
    late = T0 + timedelta(seconds=STAGE.window_s + CONFIG.max_holds * CONFIG.check_interval_s + 1)
    assert judge_check(STAGE, few, T0, T0 + timedelta(hours=1), CONFIG).action == "hold"
    stopped = judge_check(STAGE, few, T0, late, CONFIG)
    assert stopped.action == "stop" and "past the window: too few labels" in stopped.reason
    shadow = stage_plan(CONFIG)[0]
    clean = spread(400, 24, 3) + flag(good(200), 10)
    assert judge_check(shadow, clean, T0, NOW, CONFIG).action == "hold"  # 4 weeks of shadow
    later = T0 + timedelta(seconds=shadow.window_s)
    assert judge_check(shadow, clean, T0, later, CONFIG).action == "promote"


def test_the_sequential_rule_promotes_sound_challengers_and_not_bad_ones():
    sound = outcome_rates(0.002, 0.08, CONFIG, trials=100)
    assert sound["promoted"] > 0.8 and sound["rolled_back"] < 0.05
    bad = outcome_rates(0.03, 0.08, CONFIG, trials=100)
    assert bad["promoted"] == 0.0 and bad["rolled_back"] > 0.8
