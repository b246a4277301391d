"""The staged rollout's rules: its configuration, its stages, and each stage's verdict.

A challenger runs in shadow first, then decides a growing share of the dies (optionally a
5% canary for 48 h first, then 10%, 25%, 50%, 100%). `decide_stage` weighs the evidence:
every labelled die the challenger scored since the rollout began, shadow or deciding, with
Clopper-Pearson bounds checked at every check (a sequential rule). `judge_check` turns it
into one check's move for a stage: advance, hold, roll back or stop. Pure: the caller gives
the time, so a simulation can run on a compressed clock.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from model.metrics import clopper_pearson
from model.schema import GOOD

CHAMPION_ROLE, CANDIDATE_ROLE = "champion", "candidate"  # decision roles in the log
HOUR = 3600.0


@dataclass(frozen=True)
class RolloutConfig:
    """Stages, windows, label minimums, gates and the rollback rule (the seed's values).

    Windows are seconds of the clock the flow is given (production hours; a demo's seconds).
    `rollback_min_defective` = 50 is the smallest count at which one escape is not over 2%
    (1/50 = 2%): a single die can never fire the 4-hour rule, two escapes among 50-99 can.
    """

    stages: tuple[float, ...] = (0.10, 0.25, 0.50, 1.00)
    stage_window_s: float = 6 * HOUR
    shadow_window_s: float = 28 * 24 * HOUR  # the seed's 4 weeks of shadow mode
    canary: bool = False  # a 5% canary for 48 h before the stages
    canary_share: float = 0.05
    canary_window_s: float = 48 * HOUR
    min_labels: int = 200  # labelled dies (good or defective) per stage before any verdict
    min_defective: int = 30  # of them defective, for the escape rate
    max_escape: float = 0.01  # gate: 95% upper bound under this to promote
    max_fpr: float = 0.15
    confidence: float = 0.95  # of the two-sided Clopper-Pearson intervals
    rollback_escape: float = 0.02  # escape rate over this in any window rolls back
    rollback_window_s: float = 4 * HOUR
    rollback_min_defective: int = 50  # defective labelled dies a window needs to count
    check_interval_s: float = 900.0  # how often a running stage is judged
    max_holds: int = 12  # check intervals past a stage's window before the rollout stops
    min_decided: int = 100  # labelled dies the challenger decided in a stage to advance it
    lease_s: float = 3600.0  # the rollout's lease: every check renews it

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(float(s) for s in self.stages))
        shares = (*self.stages, self.canary_share)
        if not self.stages or any(not 0.0 < s <= 1.0 for s in shares):
            raise ValueError(f"stage shares must lie in (0, 1], got {shares}")
        if list(self.stages) != sorted(set(self.stages)) or self.stages[-1] != 1.0:
            raise ValueError(f"stages must rise strictly and end at 1.0, got {self.stages}")
        for name in ("max_escape", "max_fpr", "confidence", "rollback_escape"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        for name in ("stage_window_s", "shadow_window_s", "canary_window_s", "check_interval_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.lease_s <= self.check_interval_s:
            raise ValueError(f"lease_s must exceed check_interval_s, got {self.lease_s}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_rollout_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> RolloutConfig:
    """A RolloutConfig from a YAML file of its fields and ``key=value`` overrides.

    Args:
        path: YAML file; defaults only when None.
        overrides: e.g. ``["stage_window_s=5", "stages=[0.5, 1.0]"]`` (YAML values).
    Raises:
        ValueError: an unknown key, a malformed override or a value out of range.
    """
    raw: dict[str, Any] = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        raw[key.strip()] = yaml.safe_load(value)
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(RolloutConfig)})
    if unknown:
        raise ValueError(f"unknown rollout config keys: {', '.join(unknown)}")
    return RolloutConfig(**raw)


@dataclass(frozen=True)
class Stage:
    """One step of the rollout: its name (a tag value), routing mode, share and window."""

    name: str
    mode: str
    share: float
    window_s: float


def stage_plan(config: RolloutConfig) -> list[Stage]:
    """The rollout's stages in order: shadow, the optional canary, then each share."""
    plan = [Stage("shadow", "shadow", 0.0, config.shadow_window_s)]
    if config.canary:
        plan.append(Stage("canary", "canary", config.canary_share, config.canary_window_s))
    plan += [Stage(f"{s:.0%}", "canary", s, config.stage_window_s) for s in config.stages]
    return plan


@dataclass(frozen=True)
class Outcome:
    """One die the challenger judged, with the operator's label (0 = good)."""

    die_id: str
    inspection_id: str
    at: datetime
    label: int
    flagged: bool
    decided: bool = False  # the challenger's decision was the one served

    @property
    def defective(self) -> bool:
        return self.label != GOOD

    @property
    def escaped(self) -> bool:
        return self.defective and not self.flagged


def challenger_outcomes(
    inspections: list[dict], labels: list[dict], version: str, decided_only: bool = True
) -> list[Outcome]:
    """The challenger's labelled decisions, oldest first (a join of the log's records).

    Args:
        inspections: log records with `served_by` and `decisions` (InspectionLog.recent).
        labels: operator feedback with `inspection_id` and `label` (InspectionLog.feedback).
        version: the challenger's model version.
        decided_only: only dies the challenger decided (canary); False: every die it judged.
    """
    label_of = {f["inspection_id"]: int(f["label"]) for f in labels}
    found = []
    for record in inspections:
        label = label_of.get(record["inspection_id"])
        if label is None or (decided_only and record["served_by"] != CANDIDATE_ROLE):
            continue
        mine = [d for d in record["decisions"] if _is_challenger(d, version)]
        if mine:
            ids = record["die_id"], record["inspection_id"], record["received_at"]
            decided = record["served_by"] == CANDIDATE_ROLE
            found.append(Outcome(*ids, label, bool(mine[-1]["flagged"]), decided))
    return sorted(found, key=lambda o: o.at)


def _is_challenger(decision: dict, version: str) -> bool:
    return decision["role"] == CANDIDATE_ROLE and str(decision["model_version"]) == str(version)


@dataclass(frozen=True)
class StageDecision:
    """A stage's verdict: "promote", "hold" or "rollback", why, and the figures behind it."""

    action: str
    reason: str
    figures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"action": self.action, "reason": self.reason, "figures": _finite(self.figures)}


def decide_stage(outcomes: list[Outcome], config: RolloutConfig, now: datetime) -> StageDecision:
    """Judge a stage from its challenger-decided, labelled dies received up to `now`.

    Rollback: the escape rate exceeds `rollback_escape` in a `rollback_window_s` window
    holding at least `rollback_min_defective` defective dies; or, once the stage has its
    minimum labels, a lower confidence bound (escape or FPR) is over its gate. Promote: the
    minimum labels and both upper bounds under the gates. Hold: anything else.

    Returns:
        The StageDecision; figures: labelled, defective, good, escape and fpr (k, n, rate,
        lo, hi), worst_window (the highest-rate window that counts, or None), as_of.
    """
    seen = [o for o in outcomes if o.at <= now]
    defective = [o for o in seen if o.defective]
    good = [o for o in seen if not o.defective]
    escape = rate(sum(o.escaped for o in defective), len(defective), config.confidence)
    fpr = rate(sum(o.flagged for o in good), len(good), config.confidence)
    window = worst_window(defective, config)
    figures = {"labelled": len(seen), "defective": len(defective), "good": len(good)}
    figures |= {"escape": escape, "fpr": fpr, "worst_window": window, "as_of": now.isoformat()}
    if window is not None and window["rate"] > config.rollback_escape:
        why = f"escape rate {_share(window)} in the window {window['start']} - {window['end']}"
        return StageDecision("rollback", f"{why} is over {config.rollback_escape:.1%}", figures)
    action, why = bounds_verdict(escape, fpr, len(seen), config)
    return StageDecision(action, why, figures)


def bounds_verdict(escape: dict, fpr: dict, labelled: int, config: RolloutConfig) -> tuple:
    """The sequential rule on the counts so far: (action, why). Hold below the label
    minimums; roll back when a lower bound is over its gate; promote when both upper bounds
    are under theirs; hold otherwise."""
    if labelled < config.min_labels or escape["n"] < config.min_defective:
        why = f"too few labels: {labelled} labelled dies ({escape['n']} defective), "
        return "hold", why + f"{config.min_labels} ({config.min_defective} defective) needed"
    for name, r, limit in (("escape", escape, config.max_escape), ("FPR", fpr, config.max_fpr)):
        if r["lo"] > limit:
            return (
                "rollback",
                f"{name} {_share(r)}: its lower bound {r['lo']:.2%} is over {limit:.1%}",
            )
    if escape["hi"] < config.max_escape and fpr["hi"] < config.max_fpr:
        why = f"escape {_share(escape)} (upper {escape['hi']:.2%}), FPR {_share(fpr)} (upper "
        return "promote", why + f"{fpr['hi']:.2%}): under the gates"
    why = f"undecided: upper bounds escape {escape['hi']:.2%} (gate {config.max_escape:.1%}), "
    return "hold", why + f"FPR {fpr['hi']:.2%} (gate {config.max_fpr:.1%})"


def judge_check(
    stage: Stage, outcomes: list[Outcome], entered: datetime, now: datetime, cfg: RolloutConfig
) -> StageDecision:
    """One check of a stage entered at `entered`, on every labelled die the challenger scored.

    Rollback as soon as the evidence says so (decide_stage). Shadow advances ("promote")
    once its window has passed. A deciding stage advances as soon as the evidence clears both
    gates and the challenger itself decided `min_decided` labelled dies in it (what only real
    traffic shows); it stops ("stop") when still undecided `max_holds` check intervals past
    its window. Anything else holds.
    """
    decision = decide_stage(outcomes, cfg, now)
    if decision.action == "rollback":
        return decision
    elapsed, figures = (now - entered).total_seconds(), decision.figures
    if stage.mode == "shadow":
        if elapsed < stage.window_s:
            return StageDecision("hold", f"shadow for {stage.window_s:.0f} s", figures)
        return StageDecision("promote", f"shadow: {decision.reason}", figures)
    decided = sum(o.decided and entered <= o.at <= now for o in outcomes)
    figures = figures | {"decided_in_stage": decided}
    if decision.action == "promote" and decided >= cfg.min_decided:
        return StageDecision("promote", decision.reason, figures)
    why = decision.reason if decision.action == "hold" else f"{decided} dies decided here"
    why += f" ({cfg.min_decided} decided in the stage needed)" if decided < cfg.min_decided else ""
    overdue = elapsed - stage.window_s
    if overdue > cfg.max_holds * cfg.check_interval_s:
        return StageDecision("stop", f"undecided {overdue:.0f} s past the window: {why}", figures)
    return StageDecision("hold", why, figures)


def worst_window(defective: list[Outcome], config: RolloutConfig) -> dict | None:
    """The highest escape rate over trailing windows that end at each defective die.

    A window (end - rollback_window_s, end] counts when it holds at least
    `rollback_min_defective` defective dies: what a live check on each new label sees.

    Returns:
        {start, end, k, n, rate} (ISO times), or None when no window counts.
    """
    times = [o.at.timestamp() for o in defective]
    escapes = [0]
    for o in defective:
        escapes.append(escapes[-1] + o.escaped)
    best = None
    for j, end in enumerate(times):
        i = bisect.bisect_right(times, end - config.rollback_window_s)
        n, k = j - i + 1, escapes[j + 1] - escapes[i]
        if n >= config.rollback_min_defective and (best is None or k / n > best[0]):
            best = (k / n, k, n, defective[j].at)
    if best is None:
        return None
    value, k, n, end = best
    start = end - timedelta(seconds=config.rollback_window_s)
    return {"start": start.isoformat(), "end": end.isoformat(), "k": k, "n": n, "rate": value}


def rate(k: int, n: int, confidence: float = 0.95) -> dict:
    """A proportion with its counts and two-sided Clopper-Pearson interval (nan when n = 0)."""
    lo, hi = clopper_pearson(k, n, confidence)
    return {"k": int(k), "n": int(n), "rate": k / n if n else math.nan, "lo": lo, "hi": hi}


def _share(r: dict) -> str:
    return f"{r['rate']:.2%} ({r['k']}/{r['n']})"


def _finite(value: Any) -> Any:
    """JSON-ready: nan as None, recursively."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
