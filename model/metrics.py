"""The platform's metric definitions: decisions, escape rate, false-positive rate, bounds, F1.

Escape rate: defective dies predicted good, over all defective dies.
False-positive rate: good dies flagged as defective, over all good dies.
"""

from __future__ import annotations

import numpy as np

from model.schema import GOOD, NUM_CLASSES


def decide(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Classes from softmax probabilities at a defect threshold.

    A die is flagged when its defect probability 1 - P(good) reaches `threshold`; a
    flagged die gets the most probable defect class, any other die is good.

    Args:
        probs: (N, 5) softmax probabilities.
        threshold: defect-probability threshold in [0, 1].
    Returns:
        (N,) int64 predicted classes.
    """
    defect_prob = 1.0 - probs[:, GOOD]
    defect_class = 1 + np.argmax(probs[:, 1:], axis=1)
    return np.where(defect_prob >= threshold, defect_class, GOOD).astype(np.int64)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes in n trials (nan, nan when n=0).

    Solved by bisection on the binomial tail, so it needs numpy only.
    """
    if n == 0:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    lo = 0.0 if k == 0 else _solve(lambda p: 1 - _binom_cdf(k - 1, n, p, log_fact), a)
    hi = 1.0 if k == n else _solve(lambda p: _binom_cdf(k, n, p, log_fact), a, falling=True)
    return lo, hi


def _binom_cdf(k: int, n: int, p: float, log_fact: np.ndarray) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    i = np.arange(k + 1)
    log_terms = log_fact[n] - log_fact[i] - log_fact[n - i] + i * np.log(p) + (n - i) * np.log1p(-p)
    return float(np.exp(log_terms).sum())


def _solve(f, target: float, falling: bool = False) -> float:
    """p in (0, 1) with f(p) = target, for f monotone (rising unless `falling`)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        above = f(mid) > target
        if above != falling:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def rate(k: int, n: int) -> dict:
    """A proportion with its counts and 95% Clopper-Pearson interval."""
    lo, hi = clopper_pearson(k, n)
    return {"rate": k / n if n else float("nan"), "k": int(k), "n": int(n), "lo": lo, "hi": hi}


def escape_rate(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Defective dies predicted good, over defective dies."""
    defective = y_true != GOOD
    return rate(int((defective & (y_pred == GOOD)).sum()), int(defective.sum()))


def false_positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Good dies flagged defective, over good dies."""
    good = y_true == GOOD
    return rate(int((good & (y_pred != GOOD)).sum()), int(good.sum()))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES):
    """(num_classes, num_classes) counts, rows true, columns predicted."""
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def per_class(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> dict:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    m = confusion(y_true, y_pred, num_classes)
    tp = np.diag(m).astype(float)
    predicted, support = m.sum(0), m.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> float:
    """Mean F1 over the classes present in y_true."""
    stats = per_class(y_true, y_pred, num_classes)
    present = stats["support"] > 0
    return float(stats["f1"][present].mean()) if present.any() else float("nan")


def summarize(y_true: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """The headline figures of one model on one set of dies at its threshold."""
    y_pred = decide(probs, threshold)
    return {
        "n": int(len(y_true)),
        "threshold": float(threshold),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "escape": escape_rate(y_true, y_pred),
        "fpr": false_positive_rate(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
    }
