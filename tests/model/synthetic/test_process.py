"""Synthetic process logs: layout, determinism, correlations and the defect-linked deviations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.schema import PROCESS_LOGS_FILE, SPLITS, parameter_names, process_parameters
from model.synthetic.generate import TRUTH_FILE
from model.synthetic.plan import SplitSizes, plan_dies
from model.synthetic.process import DROPOUT, TEMPERATURE_ZONES, draw_process_logs

NAMES = list(parameter_names())
NOMINAL = np.array([p.nominal for p in process_parameters()])
SIGMA = np.array([p.sigma for p in process_parameters()])

CAUSES = {
    1: {"particle_count", "chamber_pressure"},
    2: {"cmp_vibration_rms", "cmp_down_force"},
    3: {"focus_offset", "exposure_dose", "overlay_x", "overlay_y"},
}
CLASS4_CAUSES = {
    *((z,) for z in TEMPERATURE_ZONES),
    ("etch_duration", "etch_endpoint_time"),
    ("deposition_temp", "film_thickness"),
}


def sigmas(values: pd.DataFrame) -> pd.DataFrame:
    """Each value's distance from its nominal in sigma units."""
    return (values[NAMES] - NOMINAL) / SIGMA


@pytest.fixture(scope="module")
def big() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    plan = plan_dies(SplitSizes.from_total(20_000), seed=4)
    values, causes = draw_process_logs(plan, seed=5)
    return plan, values, causes


def test_layout(big):
    plan, values, causes = big
    assert list(values.columns) == ["die_id", *NAMES]
    assert values["die_id"].tolist() == plan["die_id"].tolist()
    assert causes.index.equals(plan.index)
    assert all(values[n].dtype == np.float64 for n in NAMES)


def test_deterministic():
    plan = plan_dies(SplitSizes(60, 20, 20), seed=1)
    a, ca = draw_process_logs(plan, seed=2)
    b, cb = draw_process_logs(plan, seed=2)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_series_equal(ca, cb)
    c, _ = draw_process_logs(plan, seed=3)
    assert not a[NAMES].fillna(0).equals(c[NAMES].fillna(0))


def test_good_dies_are_nominal(big):
    plan, values, causes = big
    z = sigmas(values)[plan["label"] == 0]
    assert causes[plan["label"] == 0].eq("").all()
    assert z.abs().median().max() < 1.2
    assert z.mean().abs().max() < 0.5
    assert 0.8 < np.nanstd(z.to_numpy()) < 1.4


def test_dropouts_are_rare(big):
    _, values, _ = big
    rate = values[NAMES].isna().to_numpy().mean()
    assert DROPOUT / 2 < rate < DROPOUT * 2


def test_steps_are_correlated(big):
    plan, values, _ = big
    z = sigmas(values)[plan["label"] == 0]
    corr = z.corr()
    same_step = corr.loc["rf_power", "bias_voltage"]  # both etch
    other_step = corr.loc["rf_power", "cmp_platen_speed"]  # etch and CMP
    assert same_step > 0.15
    assert abs(other_step) < same_step / 2


def test_humidity_follows_the_season(big):
    plan, values, _ = big
    month = pd.to_datetime(plan["timestamp"]).dt.month
    humidity = sigmas(values)["humidity"]
    assert humidity[month.isin([6, 7, 8])].mean() > humidity[month.isin([12, 1, 2])].mean() + 1


def test_causes_name_the_contract_parameters(big):
    plan, _, causes = big
    for label, allowed in CAUSES.items():
        named = causes[plan["label"] == label]
        assert (named != "").mean() > 0.5
        assert {p for c in named for p in c.split(";") if p} <= allowed
    class4 = causes[plan["label"] == 4]
    assert {tuple(c.split(";")) for c in class4} <= CLASS4_CAUSES


UPWARD = {"particle_count", "chamber_pressure", "cmp_vibration_rms"}  # drift up only


def test_defect_parameters_move(big):
    plan, values, causes = big
    z = sigmas(values)
    good = z[plan["label"] == 0]
    for label, allowed in CAUSES.items():
        for name in allowed:
            moved = z.loc[(plan["label"] == label) & causes.str.contains(name), name]
            assert len(moved) > 20
            if name in UPWARD:  # the weakest move is chamber_pressure, +0.5..1.5 sigma
                assert moved.mean() > good[name].mean() + 0.7, (label, name)
            else:  # either direction, 1.5..4 sigma
                assert moved.abs().mean() > good[name].abs().mean() + 1.0, (label, name)


def _check_class4(z: pd.DataFrame, labels: pd.Series, causes: pd.Series) -> int:
    """Assert every class-4 die has a named parameter beyond 3 sigma; return dropped dies."""
    dropped = 0
    ids = labels.index[labels == 4]
    assert len(ids) > 0
    for die in ids:
        named = causes[die].split(";")
        assert named and all(n in NAMES for n in named), (die, causes[die])
        logged = z.loc[die, named].dropna()
        if logged.empty:  # every named sensor dropped out: allowed by the contract
            dropped += 1
            continue
        assert (logged.abs() > 3).any(), (die, logged.to_dict())
    return dropped


def test_every_class4_die_has_a_named_parameter_beyond_3_sigma(big):
    plan, values, causes = big
    z = sigmas(values).set_axis(plan["die_id"])
    dropped = _check_class4(z, plan.set_index("die_id")["label"], causes.set_axis(plan["die_id"]))
    assert dropped <= 0.01 * (plan["label"] == 4).sum()


def test_class4_on_written_data(tiny_data):
    truth = pd.read_csv(tiny_data / TRUTH_FILE, keep_default_na=False).set_index("die_id")
    logs = pd.concat(pd.read_csv(tiny_data / s / PROCESS_LOGS_FILE) for s in SPLITS)
    z = sigmas(logs.set_index("die_id"))
    _check_class4(z, truth["label"], truth["process_cause"])


def test_temperature_spike_spreads_to_neighbours(big):
    plan, values, causes = big
    z = sigmas(values)
    spikes = causes[(plan["label"] == 4) & (causes == "temperature_zone_4")].index
    assert len(spikes) > 3
    zones = z.loc[spikes, ["temperature_zone_3", "temperature_zone_5", "temperature_zone_7"]]
    good = z.loc[plan["label"] == 0, "temperature_zone_3"].mean()
    assert zones["temperature_zone_3"].mean() > good + 0.5
    assert zones["temperature_zone_5"].mean() > good + 0.5
    assert zones["temperature_zone_7"].mean() < zones["temperature_zone_5"].mean()


def test_shift_moves_only_the_named_parameter():
    plan = plan_dies(SplitSizes(200, 20, 20), seed=8)
    base, causes = draw_process_logs(plan, seed=9)
    shifted, causes2 = draw_process_logs(plan, seed=9, shift={"humidity": 2.0})
    pd.testing.assert_series_equal(causes, causes2)
    others = [n for n in NAMES if n != "humidity"]
    pd.testing.assert_frame_equal(base[others], shifted[others])
    delta = (shifted["humidity"] - base["humidity"]).dropna()
    sigma = SIGMA[NAMES.index("humidity")]
    np.testing.assert_allclose(delta, 2.0 * sigma, atol=1e-4)


def test_unknown_shift_parameter_is_an_error():
    plan = plan_dies(SplitSizes(20, 5, 5), seed=0)
    with pytest.raises(KeyError):
        draw_process_logs(plan, seed=1, shift={"no_such_sensor": 1.0})
