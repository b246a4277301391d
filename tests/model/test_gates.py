"""The release gates judge escape, FPR, INT8 flips and the champion comparison."""

import numpy as np
import pytest

from model.config import GateConfig
from model.gates import failed_checks, release_gates
from model.metrics import summarize


def figures(escapes: int, false_alarms: int, n_defective: int = 400, n_good: int = 3600) -> dict:
    """metrics.summarize of a model with the given misses and false alarms."""
    labels = np.r_[np.ones(n_defective, int), np.zeros(n_good, int)]
    probs = np.zeros((len(labels), 5))
    flagged = np.r_[np.arange(n_defective) >= escapes, np.arange(n_good) < false_alarms]
    probs[flagged, 1], probs[~flagged, 0] = 1.0, 1.0
    return summarize(labels, probs, 0.5)


def int8_verdict(fig: dict, flips: float) -> dict:
    gate = {"escape": fig["escape"], "fpr": fig["fpr"], "flip_rate": {"rate": flips}}
    return {"chosen": "static_qdq", "gates": {"static_qdq": gate}}


def test_a_good_candidate_passes_every_gate():
    good = figures(escapes=2, false_alarms=300)
    verdict = release_gates(good, int8_verdict(good, 0.002), GateConfig(), figures(3, 3500))
    assert verdict["passed"] and verdict["champion_compared"]
    assert set(verdict["checks"]) >= {"fp32_escape", "int8_flip_rate", "champion_fpr"}
    assert failed_checks(verdict) == []


@pytest.mark.parametrize(
    ("escapes", "false_alarms", "flips", "failed"),
    [
        (4, 300, 0.0, "fp32_escape"),  # 1.0% is not below 1%
        (2, 540, 0.0, "fp32_fpr"),  # 15.0% is not below 15%
        (2, 300, 0.006, "int8_flip_rate"),
    ],
)
def test_each_limit_fails_its_own_gate(escapes, false_alarms, flips, failed):
    fig = figures(escapes, false_alarms)
    verdict = release_gates(fig, int8_verdict(fig, flips), GateConfig())
    assert not verdict["passed"]
    assert [line.split(":")[0] for line in failed_checks(verdict)] == [failed] + (
        [failed.replace("fp32", "int8")] if failed.startswith("fp32") else []
    )


def test_worse_than_the_champion_fails_even_under_the_limits():
    candidate, champion = figures(3, 400), figures(0, 300)  # 0.75% vs 0% escapes: 3 dies behind
    verdict = release_gates(candidate, int8_verdict(candidate, 0.0), GateConfig(), champion)
    assert not verdict["passed"]
    assert {"champion_escape", "champion_fpr"} == {
        name for name, c in verdict["checks"].items() if not c["passed"]
    }
    margins = GateConfig(champion_escape_margin=0.01, champion_fpr_margin=0.05)
    assert release_gates(candidate, int8_verdict(candidate, 0.0), margins, champion)["passed"]


def test_no_defective_dies_fails_rather_than_passes():
    fig = figures(0, 0, n_defective=0)
    assert np.isnan(fig["escape"]["rate"])
    assert not release_gates(fig, int8_verdict(fig, 0.0), GateConfig())["checks"]["fp32_escape"][
        "passed"
    ]
