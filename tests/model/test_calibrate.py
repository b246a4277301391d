import numpy as np
import pytest

from model.calibrate import OperatingPoint, choose_threshold


def _probs(defect_prob: np.ndarray) -> np.ndarray:
    probs = np.zeros((len(defect_prob), 5))
    probs[:, 0] = 1 - defect_prob
    probs[:, 1] = defect_prob
    return probs


def test_threshold_keeps_escape_under_target_at_the_lowest_fpr():
    rng = np.random.default_rng(0)
    good = rng.beta(1, 8, 3000)
    bad = rng.beta(8, 1, 400)
    labels = np.r_[np.zeros(3000, int), np.ones(400, int)]
    point = choose_threshold(_probs(np.r_[good, bad]), labels, 0.005)
    assert point.val_escape <= 0.005
    # a lower threshold could only add false positives; a higher one breaks the target
    misses = (bad < point.threshold).sum()
    assert misses <= 2
    assert point.val_fpr == pytest.approx((good >= point.threshold).mean())
    assert (point.val_defective, point.val_good) == (400, 3000)


def test_one_extreme_die_does_not_drag_the_threshold_to_zero():
    bad = np.r_[0.001, np.linspace(0.6, 0.99, 399)]  # one defective die the model misses badly
    good = np.linspace(0.0, 0.5, 3000)
    labels = np.r_[np.zeros(3000, int), np.ones(400, int)]
    point = choose_threshold(_probs(np.r_[good, bad]), labels, 0.005)
    assert point.threshold > 0.5  # two misses are allowed: the outlier escapes, no good die pays
    assert point.val_fpr == 0.0


def test_no_defective_dies_gives_a_neutral_threshold():
    point = choose_threshold(_probs(np.full(10, 0.2)), np.zeros(10, int), 0.005)
    assert point.threshold == 0.5


def test_operating_point_round_trips(tmp_path):
    point = OperatingPoint(0.3, 0.005, 0.002, 0.1, 400, 3000)
    point.save(tmp_path / "op.json")
    assert OperatingPoint.load(tmp_path / "op.json") == point


def test_an_fpr_budget_spends_the_good_dies_margin_on_fewer_escapes():
    good = np.linspace(0.0, 0.5, 3000)
    bad = np.r_[0.3, 0.35, np.linspace(0.6, 0.99, 398)]  # two misses the target allows
    labels = np.r_[np.zeros(3000, int), np.ones(400, int)]
    at_target = choose_threshold(_probs(np.r_[good, bad]), labels, 0.005)
    point = choose_threshold(_probs(np.r_[good, bad]), labels, 0.005, fpr_budget=0.5)
    assert at_target.val_escape == 2 / 400 and at_target.val_fpr == 0.0
    assert point.val_escape == 0.0 and 0.3 < point.val_fpr <= 0.5  # both caught, in budget
    assert point.fpr_budget == 0.5


def test_an_fpr_budget_never_raises_the_threshold():
    good = np.linspace(0.0, 0.9, 3000)
    bad = np.linspace(0.5, 0.99, 400)
    labels = np.r_[np.zeros(3000, int), np.ones(400, int)]
    at_target = choose_threshold(_probs(np.r_[good, bad]), labels, 0.005)
    assert at_target.val_fpr > 0.05
    point = choose_threshold(_probs(np.r_[good, bad]), labels, 0.005, fpr_budget=0.05)
    assert point.threshold == at_target.threshold and point.val_fpr == at_target.val_fpr
