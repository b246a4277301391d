import numpy as np
import pytest
from scipy.stats import beta

from model.metrics import (
    clopper_pearson,
    confusion,
    decide,
    escape_rate,
    false_positive_rate,
    macro_f1,
    per_class,
    summarize,
)


def test_escape_rate_and_fpr_on_a_hand_computed_case():
    y_true = np.array([0, 0, 0, 0, 1, 2, 3, 4, 4, 4])
    y_pred = np.array([0, 1, 0, 0, 0, 2, 1, 0, 4, 4])
    # defective: 6, predicted good among them: die 4 (class 1) and die 7 (class 4) -> 2/6
    esc = escape_rate(y_true, y_pred)
    assert (esc["k"], esc["n"]) == (2, 6)
    assert esc["rate"] == pytest.approx(1 / 3)
    # good: 4, flagged: one -> 1/4; a wrong defect class is not an escape
    fpr = false_positive_rate(y_true, y_pred)
    assert (fpr["k"], fpr["n"], fpr["rate"]) == (1, 4, 0.25)


def test_empty_classes_give_nan_rates_and_no_crash():
    only_good = np.zeros(5, int)
    assert np.isnan(escape_rate(only_good, only_good)["rate"])
    only_bad = np.full(5, 3)
    fpr = false_positive_rate(only_bad, only_bad)
    assert fpr["n"] == 0 and np.isnan(fpr["rate"])
    assert np.isnan(clopper_pearson(0, 0)[0])


@pytest.mark.parametrize("k,n", [(0, 10), (1, 320), (3, 300), (10, 10), (5, 4000), (150, 300)])
def test_clopper_pearson_matches_scipy(k, n):
    lo, hi = clopper_pearson(k, n)
    expected_lo = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    expected_hi = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    assert lo == pytest.approx(expected_lo, abs=1e-9)
    assert hi == pytest.approx(expected_hi, abs=1e-9)


def test_decide_flags_by_defect_probability_then_takes_the_top_defect_class():
    probs = np.array(
        [
            [0.90, 0.02, 0.03, 0.03, 0.02],  # defect prob 0.10 -> good
            [0.60, 0.05, 0.30, 0.03, 0.02],  # 0.40 >= 0.3 -> flagged, class 2
            [0.30, 0.10, 0.10, 0.10, 0.40],  # flagged, class 4
        ]
    )
    assert decide(probs, 0.3).tolist() == [0, 2, 4]
    assert decide(probs, 0.5).tolist() == [0, 0, 4]


def test_per_class_and_macro_f1():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    m = confusion(y_true, y_pred)
    assert m[0, 1] == 1 and m[1, 1] == 2 and m[2, 0] == 1
    stats = per_class(y_true, y_pred)
    assert stats["precision"][1] == pytest.approx(2 / 3)
    assert stats["recall"][0] == pytest.approx(0.5)
    # classes present: 0 (F1 0.5), 1 (F1 0.8), 2 (F1 0)
    assert macro_f1(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_summarize_reports_counts_and_bounds():
    probs = np.tile([0.2, 0.8, 0, 0, 0], (4, 1))
    s = summarize(np.array([0, 0, 1, 1]), probs, 0.5)
    assert s["fpr"]["rate"] == 1.0 and s["escape"]["rate"] == 0.0
    assert s["escape"]["hi"] == pytest.approx(clopper_pearson(0, 2)[1])
