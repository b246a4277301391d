"""The die plan: split sizes, lot separation, metadata consistency and the designed rates."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from model.schema import FABS, LABELS_FILE, SHIFTS, SPLITS, WAFER_ZONES
from model.synthetic.plan import (
    DEFECT_CLASS_SHARE,
    SPAN_DAYS,
    START,
    WAFER_RADIUS,
    SplitSizes,
    plan_dies,
    wafer_positions,
)


@pytest.fixture(scope="module")
def big_plan() -> pd.DataFrame:
    """Plan only (no images): cheap, and large enough for the designed rates."""
    return plan_dies(SplitSizes.from_total(20_000), seed=11)


def test_split_sizes_default_and_explicit():
    assert SplitSizes.from_total(600) == SplitSizes(train=360, val=120, test=120)
    assert SplitSizes.from_total(100, val_n=7, test_n=13) == SplitSizes(80, 7, 13)
    assert SplitSizes.from_total(10, val_n=0, test_n=0) == SplitSizes(10, 0, 0)


@pytest.mark.parametrize(("val_n", "test_n"), [(50, 50), (60, 45), (-1, 10), (10, -1)])
def test_split_sizes_must_leave_training_dies(val_n, test_n):
    with pytest.raises(ValueError, match="split sizes"):
        SplitSizes.from_total(100, val_n, test_n)


@pytest.mark.parametrize("sizes", [SplitSizes(150, 31, 17), SplitSizes(40, 0, 9)])
def test_plan_sizes_are_exact(sizes):
    plan = plan_dies(sizes, seed=2)
    counts = plan["split"].value_counts().to_dict()
    expected = {s: getattr(sizes, s) for s in SPLITS if getattr(sizes, s)}
    assert counts == expected
    assert plan["die_id"].is_unique


def test_lots_and_wafers_never_span_splits(big_plan):
    for key in ("lot_id", "wafer_id"):
        splits_per = big_plan.groupby(key)["split"].nunique()
        assert (splits_per == 1).all(), splits_per[splits_per > 1].index.tolist()[:5]


def test_plan_is_deterministic():
    sizes = SplitSizes(200, 40, 40)
    pd.testing.assert_frame_equal(plan_dies(sizes, 5), plan_dies(sizes, 5))
    assert not plan_dies(sizes, 5)["die_id"].equals(plan_dies(sizes, 6)["die_id"])


def test_metadata_is_consistent(big_plan):
    p = big_plan
    assert p["die_id"].str.fullmatch(r"[ABC]-L\d{4}-W\d{2}-D\d{3}").all()
    assert (p["die_id"].str.rsplit("-", n=1).str[0] == p["wafer_id"]).all()
    assert (p["wafer_id"].str.split("-").str[1] == p["lot_id"]).all()
    assert (p["wafer_id"].str[0] == p["fab"]).all()
    assert p.groupby("lot_id")["fab"].nunique().max() == 1
    assert (p["chamber"].str.split("-CH").str[0] == p["fab"]).all()
    assert set(p["fab"]) == set(FABS)
    assert set(p["shift"]) == set(SHIFTS)
    assert set(p["wafer_zone"]) == set(WAFER_ZONES)
    t = pd.to_datetime(p["timestamp"], format="%Y-%m-%dT%H:%M:%SZ", utc=True)
    assert t.min() >= START and t.max() <= START + timedelta(days=SPAN_DAYS + 1)
    day = (t.dt.hour >= 7) & (t.dt.hour < 19)
    assert ((p["shift"] == "day") == day).all()
    radius = np.sqrt(p["die_x"] ** 2 + p["die_y"] ** 2)
    assert radius.max() <= WAFER_RADIUS
    assert (radius[p["wafer_zone"] == "center"] < radius[p["wafer_zone"] == "edge"].min()).all()
    assert p["label"].between(0, 4).all()


def test_wafer_positions():
    x, y, zone = wafer_positions()
    assert len(x) == len(y) == len(zone)
    assert len(set(zip(x, y))) == len(x)
    assert (x**2 + y**2 <= WAFER_RADIUS**2).all()
    assert set(zone) == set(WAFER_ZONES)


def test_label_shares_on_tiny_data(tiny_data):
    labels = pd.concat(pd.read_csv(tiny_data / s / LABELS_FILE) for s in SPLITS)["label"]
    good = (labels == 0).mean()
    assert 0.85 <= good <= 0.97  # about 92% good


def test_label_shares_on_large_plan(big_plan):
    label = big_plan["label"]
    assert 0.06 <= (label > 0).mean() <= 0.11
    shares = label[label > 0].value_counts(normalize=True).sort_index().to_numpy()
    np.testing.assert_allclose(shares, DEFECT_CLASS_SHARE, atol=0.05)


def test_edge_dies_fail_more_often(big_plan):
    rate = big_plan.groupby("wafer_zone")["label"].apply(lambda s: (s > 0).mean())
    assert rate["edge"] > 1.5 * rate["center"]
    assert rate["edge"] > rate["middle"] > rate["center"]


def test_note_missing_rates(big_plan):
    missing = ~big_plan["has_note"]
    assert 0.36 <= missing.mean() <= 0.46  # about 40%
    by_shift = missing.groupby(big_plan["shift"]).mean()
    assert by_shift["night"] > by_shift["day"] + 0.1


def test_hidden_causes(big_plan):
    p = big_plan
    good, class4 = p["label"] == 0, p["label"] == 4
    assert 0.15 <= p.loc[good, "discoloration"].mean() <= 0.20  # benign cosmetic share
    assert 0.5 <= p.loc[class4, "discoloration"].mean() <= 0.7
    assert not p.loc[p["label"].between(1, 3), "discoloration"].any()
    assert (p["image_visible"] == (~class4 | p["discoloration"])).all()
    faint = p["faint"]
    assert not faint[good | class4].any()
    assert 0.15 <= faint[p["label"].between(1, 3)].mean() <= 0.35
    assert p["die_seed"].between(0, 2**31 - 2).all()
