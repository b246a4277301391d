"""The operating point: the defect threshold chosen on validation dies.

Defect probability is 1 - P(good). The threshold keeps the validation escape rate under a
target (a margin under the 1% gate) at the lowest false-positive rate: it is the target
quantile of the defective dies' scores, interpolated in logit space so that no single die
decides it, and never above the score that the target's count of misses allows.

An escape costs more than a false flag, and a few hundred validation defects place the
target's quantile on one or two dies. With an FPR budget (the share of good dies the fab's
review can absorb) the threshold goes further down, catching more, until the validation FPR
reaches the budget; it never goes up for it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model.metrics import decide, escape_rate, false_positive_rate
from model.schema import GOOD


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold with what it cost on validation."""

    threshold: float
    escape_target: float
    val_escape: float
    val_fpr: float
    val_defective: int
    val_good: int
    fpr_budget: float = 0.0

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> OperatingPoint:
        return cls(**json.loads(Path(path).read_text()))


def choose_threshold(
    probs: np.ndarray, labels: np.ndarray, escape_target: float, fpr_budget: float = 0.0
) -> OperatingPoint:
    """Pick the defect threshold on validation.

    Args:
        probs: (N, 5) softmax probabilities on validation dies.
        labels: (N,) true classes.
        escape_target: the escape rate to stay under, e.g. 0.005.
        fpr_budget: lower the threshold while at most this share of good dies is flagged
            (0: the escape target's threshold).
    Returns:
        The operating point (threshold and its validation escape rate and FPR).
    """
    defect_prob = 1.0 - probs[:, GOOD]
    scores = np.sort(defect_prob[labels != GOOD])
    if len(scores) == 0:
        threshold = 0.5
    else:
        logits = np.log(np.clip(scores, 1e-7, 1 - 1e-7) / np.clip(1 - scores, 1e-7, 1))
        q = float(np.quantile(logits, escape_target, method="linear"))
        threshold = float(1.0 / (1.0 + np.exp(-q)))
        allowed = int(np.floor(escape_target * len(scores)))  # misses the target permits
        threshold = min(threshold, float(scores[allowed]))
    good = np.sort(defect_prob[labels == GOOD])
    if fpr_budget > 0 and len(good):  # just above the good score past which the budget ends
        over_budget = good[len(good) - int(np.floor(fpr_budget * len(good))) - 1]
        threshold = min(threshold, float(np.nextafter(over_budget, np.float32(1.0))))
    y_pred = decide(probs, threshold)
    return OperatingPoint(
        threshold=threshold,
        escape_target=escape_target,
        val_escape=escape_rate(labels, y_pred)["rate"],
        val_fpr=false_positive_rate(labels, y_pred)["rate"],
        val_defective=int((labels != GOOD).sum()),
        val_good=int((labels == GOOD).sum()),
        fpr_budget=fpr_budget,
    )
