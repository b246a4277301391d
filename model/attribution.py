"""Which process parameter a decision rests on: occlusion over the model's process inputs.

Attention weights say where a region looked, not what moved the decision. Here each candidate
parameter of one die is set back to its training mean (z = 0) on its own, the model is run
again on those variants in one batch, and the parameter whose reset lowers the decided
class's log-odds most is the one the decision rests on (log-odds, not probability: a
confident call saturates its probability, not its log-odds). It needs only the model's
logits, so it works the same on a PyTorch model and on an ONNX Runtime session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

PROCESS_INPUT = "process"  # the z-scored process values among the model's inputs (B, P)


def occlusion_attribution(
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    inputs: dict[str, np.ndarray],
    candidates: Sequence[int],
    target: int,
) -> np.ndarray:
    """How much of one die's decision each candidate parameter carries.

    Args:
        run: maps model inputs (batch first, names as in `inputs`) to logits (B, C).
        inputs: one die's model inputs, batch of 1; `inputs["process"]` holds z-scores (1, P).
        candidates: process column indices to test, each in [0, P).
        target: the decided class index.
    Returns:
        (len(candidates),) the drop in the target's log-odds, log p / (1 - p), when that
        parameter alone is reset to its training mean; positive = the value supports the
        decision.
    """
    process = np.asarray(inputs[PROCESS_INPUT])
    if process.ndim != 2 or process.shape[0] != 1:
        raise ValueError(f"inputs must hold one die, got process of shape {process.shape}")
    columns = np.asarray(list(candidates), dtype=np.int64)
    if columns.size == 0:
        return np.zeros(0)
    if columns.min() < 0 or columns.max() >= process.shape[1]:
        raise ValueError(f"candidate columns must be in [0, {process.shape[1]}), got {columns}")
    n = columns.size + 1  # the die as it is, then one variant per candidate
    batch = {name: np.repeat(np.asarray(value), n, axis=0) for name, value in inputs.items()}
    batch[PROCESS_INPUT][np.arange(1, n), columns] = 0.0
    logits = np.asarray(run(batch), np.float64)
    if logits.ndim != 2 or logits.shape[0] != n or not 0 <= target < logits.shape[1]:
        raise ValueError(f"logits of shape {logits.shape} do not fit {n} dies and class {target}")
    return log_odds_drops(logits, target)


def log_odds_drops(logits: np.ndarray, target: int) -> np.ndarray:
    """(n - 1,) row 0's log-odds of class `target` less each other row's: logits (n, C) of a
    die as it is, then of its occluded variants."""
    odds = _log_odds(np.asarray(logits, np.float64), target)
    return odds[0] - odds[1:]


def _log_odds(logits: np.ndarray, target: int) -> np.ndarray:
    """log p / (1 - p) of class `target` per row: its logit less the others' logsumexp."""
    others = np.delete(logits, target, axis=1)
    peak = others.max(axis=1, keepdims=True)
    rest = peak[:, 0] + np.log(np.exp(others - peak).sum(axis=1))
    return logits[:, target] - rest
