"""Occlusion attribution: the decided class's log-odds without each candidate's value."""

from __future__ import annotations

import numpy as np
import pytest

from model.attribution import occlusion_attribution

P = 6


def _linear(weights: np.ndarray):
    """A model whose logits are `process @ weights.T`, recording the batches it ran."""
    seen = []

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        seen.append({k: v.copy() for k, v in inputs.items()})
        return inputs["process"] @ weights.T

    return run, seen


def _log_odds(logits: np.ndarray, target: int) -> float:
    p = np.exp(logits - logits.max())
    p = p / p.sum()
    return float(np.log(p[target] / (1 - p[target])))


def test_the_parameter_that_drives_the_decided_class_carries_it():
    weights = np.zeros((2, P))
    weights[1, 2] = 1.5  # class 1 reads parameter 2, class 0 reads nothing
    process = np.array([[0.5, 0.0, 4.0, 3.0, -3.0, 0.0]], np.float32)
    run, _ = _linear(weights)
    shares = occlusion_attribution(run, {"process": process}, [2, 3, 4], target=1)
    assert np.argmax(shares) == 0
    assert shares[1] == pytest.approx(0.0) and shares[2] == pytest.approx(0.0)
    reset = process.copy()
    reset[0, 2] = 0.0
    expected = _log_odds(process[0] @ weights.T, 1) - _log_odds(reset[0] @ weights.T, 1)
    assert shares[0] == pytest.approx(expected, rel=1e-6)


def test_a_value_that_argues_against_the_decision_has_a_negative_share():
    weights = np.zeros((2, P))
    weights[1, 0] = -1.0
    process = np.array([[2.0, 0, 0, 0, 0, 0]], np.float32)
    run, _ = _linear(weights)
    assert occlusion_attribution(run, {"process": process}, [0], target=1)[0] < 0


def test_one_batch_holds_the_die_and_one_variant_per_candidate_with_other_inputs_kept():
    run, seen = _linear(np.ones((3, P)))
    process = np.arange(1, P + 1, dtype=np.float32)[None]
    image = np.full((1, 3, 4, 4), 0.25, np.float32)
    occlusion_attribution(run, {"process": process, "image": image}, [1, 4], target=2)
    assert len(seen) == 1
    batch = seen[0]
    assert batch["process"].shape == (3, P) and batch["image"].shape == (3, 3, 4, 4)
    np.testing.assert_array_equal(batch["process"][0], process[0])
    assert batch["process"][1, 1] == 0 and batch["process"][2, 4] == 0
    assert np.count_nonzero(batch["process"][1] != process[0]) == 1
    assert np.count_nonzero(batch["process"][2] != process[0]) == 1
    np.testing.assert_array_equal(batch["image"], np.repeat(image, 3, axis=0))
    assert process[0, 1] == 2  # the caller's inputs are not changed


def test_no_candidates_runs_nothing():
    run, seen = _linear(np.ones((2, P)))
    assert occlusion_attribution(run, {"process": np.ones((1, P))}, [], 1).shape == (0,)
    assert seen == []


@pytest.mark.parametrize(
    "process, candidates, target, match",
    [
        (np.ones((2, P)), [0], 1, "one die"),
        (np.ones(P), [0], 1, "one die"),
        (np.ones((1, P)), [P], 1, "candidate columns"),
        (np.ones((1, P)), [-1], 1, "candidate columns"),
        (np.ones((1, P)), [0], 2, "do not fit"),
    ],
)
def test_bad_calls_are_refused(process, candidates, target, match):
    run, _ = _linear(np.ones((2, P)))
    with pytest.raises(ValueError, match=match):
        occlusion_attribution(run, {"process": process}, candidates, target)


def test_a_confident_call_still_tells_the_carrier_from_the_rest():
    weights = np.zeros((3, P))
    weights[2, 0], weights[2, 1] = 10.0, 0.5  # p(class 2) ~ 1 with or without parameter 1
    process = np.array([[3.0, 3.0, 0, 0, 0, 0]], np.float32)
    run, _ = _linear(weights)
    shares = occlusion_attribution(run, {"process": process}, [0, 1], target=2)
    assert shares[0] == pytest.approx(30.0, rel=1e-3) and shares[1] == pytest.approx(1.5, rel=1e-3)
