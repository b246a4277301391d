"""Release gates: what a candidate must reach on test before it may be registered.

Escape rate and FPR of the FP32 model and of its INT8 artifact under the configured limits,
the INT8 decision flip rate, and not worse than the current champion on the same test dies.
"""

from __future__ import annotations

from model.config import GateConfig


def release_gates(fp32: dict, int8: dict, limits: GateConfig, champion: dict | None = None) -> dict:
    """Every gate's verdict with its figure and limit.

    Args:
        fp32: `metrics.summarize` of the FP32 model on test.
        int8: the deployment verdict (int8_gate.json): its chosen variant's gate figures.
        limits: the configured limits.
        champion: `metrics.summarize` of the champion on the same test dies; None when
            there is no champion yet (the comparison is then skipped, and says so).
    Returns:
        {"passed": bool, "checks": {name: {"passed", "value", "limit", "rule"}}}.
    """
    chosen = int8["gates"][int8["chosen"]]
    checks = {
        "fp32_escape": _below(fp32["escape"]["rate"], limits.max_escape, "<"),
        "fp32_fpr": _below(fp32["fpr"]["rate"], limits.max_fpr, "<"),
        "int8_escape": _below(chosen["escape"]["rate"], limits.max_escape, "<"),
        "int8_fpr": _below(chosen["fpr"]["rate"], limits.max_fpr, "<"),
        "int8_flip_rate": _below(chosen["flip_rate"]["rate"], limits.max_flip_rate, "<="),
    }
    if champion is not None:
        escape = champion["escape"]["rate"] + limits.champion_escape_margin
        fpr = champion["fpr"]["rate"] + limits.champion_fpr_margin
        checks["champion_escape"] = _below(fp32["escape"]["rate"], escape, "<=")
        checks["champion_fpr"] = _below(fp32["fpr"]["rate"], fpr, "<=")
    return {
        "passed": all(c["passed"] for c in checks.values()),
        "checks": checks,
        "champion_compared": champion is not None,
    }


def failed_checks(verdict: dict) -> list[str]:
    """The failed checks as readable lines, e.g. 'fp32_fpr: 0.62 (limit < 0.15)'."""
    return [
        f"{name}: {c['value']:.4g} (limit {c['rule']} {c['limit']:.4g})"
        for name, c in verdict["checks"].items()
        if not c["passed"]
    ]


def _below(value: float, limit: float, rule: str) -> dict:
    passed = value < limit if rule == "<" else value <= limit  # NaN fails both
    return {"passed": bool(passed), "value": float(value), "limit": float(limit), "rule": rule}
