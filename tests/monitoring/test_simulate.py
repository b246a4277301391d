"""The compressed-clock simulation against the real service on loopback: a recipe drift is
flagged after its onset and not before, and a challenger that passes every die is rolled
back by the 4-hour escape rule."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness

from model.synthetic.generate import generate_dataset
from monitoring.simulate import SimDie, read_stream, simulate_drift
from monitoring.simulate_rollout import defect_rich, simulate_bad_challenger
from tests.service.conftest import (
    KEYS,
    MODEL_NAME,
    live_config,
    register_bundle,
    service_bundle,  # noqa: F401 (a fixture)
    start_service,
)

HOUR_S = 4.0
# sample sizes only (the drift thresholds stay): a smaller reference sample costs less CPU per
# check; a window is judged from 20 dies, as the service, the stream and the monitor share
# one process and two cores here, so some dies arrive late, in the next hour's window
FAST = {"max_reference_dies": 150, "min_drift_dies": 20}


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def recipe_split(tmp_path_factory):
    """The test split of a data set whose process ran on a changed recipe."""
    out = tmp_path_factory.mktemp("recipe")
    generate_dataset(out, n=200, seed=3, drift="recipe", workers=1)
    return out / "test"


@pytest.fixture
def service(service_bundle, tmp_path):  # noqa: F811
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_bundle(uri, service_bundle)
    live, stop = start_service(live_config(uri, tmp_path / "state"), uri)
    yield live
    stop()


@pytest.mark.slow
def test_drift_is_flagged_after_its_onset_and_a_bad_challenger_rolls_back(
    prefect_server, service, tiny_data, recipe_split, tmp_path
):
    keys = service.url, KEYS["station"], KEYS["operator"]
    timeline = simulate_drift(
        *keys, tiny_data / "test", recipe_split, service.config.log_url, tiny_data / "train",
        image_store=service.config.state_dir / "images", report_dir=tmp_path / "reports",
        hours=5, drift_at=2, rate=40, hour_s=HOUR_S, thresholds=FAST,
    )  # fmt: skip
    print(timeline.format())
    assert [r["sent"] for r in timeline.rows] == [40] * 5
    # The service, the stream and the monitor share one process on two cores here: a post can
    # time out while a check runs (each failure is logged with its cause). More than one in
    # a hundred is a fault.
    assert sum(r["errors"] for r in timeline.rows) <= 2
    assert timeline.summary()[0] == "drift began at hour 2"
    flagged = [r["hour"] for r in timeline.rows if "process" in r["drifted"]]
    assert flagged and min(flagged) >= 2, flagged
    assert all("process" not in r["skipped"] for r in timeline.rows[:2])  # the clean hours judged
    assert timeline.first("drifted", "process") in (2, 3)  # the onset hour, or the next

    result = simulate_bad_challenger(
        *keys, tiny_data / "test", service.tracking_uri, MODEL_NAME, service.config.log_url,
        tmp_path / "bundles", hours=8, rate=40, hour_s=HOUR_S,
    )  # fmt: skip
    assert result["outcome"] == "rolled-back", result
    assert "escape rate" in result["reason"]
    assert any(e["kind"] == "rollback" for e in result["events"]), result["events"]


def test_a_defect_rich_stream_alternates_defective_and_good_dies(tiny_data):
    dies = read_stream(tiny_data / "test")
    rich = defect_rich(dies)
    defective = [d for d in dies if d.label != 0]
    assert 0 < len(defective) < len(dies) / 4  # the split itself is mostly good
    assert [d.label != 0 for d in rich[:6]] == [True, False] * 3
    assert {d.payload.die_id for d in rich} == {d.payload.die_id for d in dies}
    assert len(rich) == 2 * (len(dies) - len(defective))  # the defective ones cycled
    only_good = [d for d in dies if d.label == 0]
    assert defect_rich(only_good) == only_good
    assert all(isinstance(d, SimDie) for d in rich)
