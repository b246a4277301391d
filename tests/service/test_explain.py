"""Region names, the heatmap overlay, out-of-range parameters and the explanation text."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from model.data import ProcessScaler
from model.schema import process_parameters
from service.explain import (
    anomalous_parameters,
    explain,
    heatmap_png,
    overlay_base64,
    overlay_png,
    region_grid,
    region_name,
    rests_on,
)


@pytest.fixture
def scaler() -> ProcessScaler:
    params = process_parameters()
    return ProcessScaler(
        mean=np.array([p.nominal for p in params]), std=np.array([p.sigma for p in params])
    )


def _decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def _die(size: int = 64) -> np.ndarray:
    """A mid-grey die with faint lines, uint8 (size, size, 3)."""
    image = np.full((size, size, 3), 110, np.uint8)
    image[::8] = 130
    return image


# Region naming


def test_region_grid_is_the_side_of_a_square():
    assert region_grid(1) == 1
    assert region_grid(16) == 4
    assert region_grid(256) == 16


@pytest.mark.parametrize("k", [0, -4, 12, 255, 2.0, True])
def test_region_grid_rejects_non_squares(k):
    with pytest.raises(ValueError):
        region_grid(k)


def test_region_names_are_row_letter_and_column_number():
    assert region_name(0, 4) == "A1"
    assert region_name(1 * 4 + 2, 4) == "B3"
    assert region_name(15, 4) == "D4"
    assert region_name(255, 16) == "P16"
    assert region_name(0, 1) == "A1"
    assert region_name(26 * 27, 27) == "AA1"


@pytest.mark.parametrize("index, grid", [(16, 4), (-1, 4), (0, 0), (1.0, 4)])
def test_region_name_rejects_cells_outside_the_grid(index, grid):
    with pytest.raises(ValueError):
        region_name(index, grid)


# Heatmap


def test_heatmap_is_a_png_of_the_image_size():
    image = _die(96)
    out = _decode(heatmap_png(image, np.full(16, 1 / 16)))
    assert out.shape == (96, 96, 3)


def test_hot_region_is_brighter_and_redder_than_a_cold_one():
    image = _die(64)
    weights = np.zeros(16)
    weights[0] = 0.9  # A1, top-left
    weights[1] = 0.1
    out = _decode(heatmap_png(image, weights)).astype(int)
    hot, cold = out[2:10, 2:10], out[50:62, 50:62]  # inside A1 / inside D4
    assert hot.sum(axis=2).mean() > cold.sum(axis=2).mean() + 30
    assert (hot[..., 0] - hot[..., 2]).mean() > (cold[..., 0] - cold[..., 2]).mean() + 20
    np.testing.assert_array_equal(cold, image[50:62, 50:62])  # unattended: the die shows


def test_overlay_follows_the_region_layout():
    image = _die(64)
    weights = np.zeros(16)
    weights[1 * 4 + 2] = 1.0  # B3: row 1, column 2
    out = _decode(heatmap_png(image, weights)).astype(int)
    changed = np.abs(out - image.astype(int)).sum(axis=2)
    y, x = np.unravel_index(np.argmax(changed), changed.shape)
    assert 16 <= y < 32 and 32 <= x < 48


def test_single_region_gives_the_image_back_unchanged():
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_decode(heatmap_png(image, np.ones(1))), image)
    np.testing.assert_array_equal(_decode(heatmap_png(image, np.zeros(16))), image)


def test_alpha_zero_leaves_the_die():
    image = _die(32)
    np.testing.assert_array_equal(_decode(heatmap_png(image, np.eye(1, 16)[0], 0.0)), image)


def test_the_overlay_drawn_over_the_image_is_the_heatmap():
    image, weights = _die(32), np.linspace(0, 1, 16)
    png = Image.open(io.BytesIO(base64.b64decode(overlay_base64(weights, 32))))
    layer = np.asarray(png.convert("RGBA"))
    assert png.format == "PNG" and png.size == (32, 32) and layer.shape == (32, 32, 4)
    a = layer[..., 3:].astype(np.float64) / 255.0
    drawn = image * (1 - a) + layer[..., :3] * a
    composite = np.asarray(Image.open(io.BytesIO(heatmap_png(image, weights))), np.float64)
    assert np.abs(drawn - composite).max() <= 3.0  # rounding of colours and alpha


def test_a_vision_only_overlay_is_transparent():
    layer = np.asarray(Image.open(io.BytesIO(overlay_png(np.ones(1), 32))).convert("RGBA"))
    assert layer.shape == (32, 32, 4) and not layer[..., 3].any()


@pytest.mark.parametrize(
    "image, weights, alpha",
    [
        (np.zeros((32, 32), np.uint8), np.ones(16), 0.45),  # no channels
        (np.zeros((32, 32, 4), np.uint8), np.ones(16), 0.45),  # RGBA
        (np.zeros((32, 32, 3), np.float32), np.ones(16), 0.45),  # not uint8
        (np.zeros((32, 32, 3), np.uint8), np.ones(12), 0.45),  # K not a square
        (np.zeros((32, 32, 3), np.uint8), np.ones((4, 4)), 0.45),  # map not (K,)
        (np.zeros((32, 32, 3), np.uint8), -np.ones(16), 0.45),  # negative weights
        (np.zeros((32, 32, 3), np.uint8), np.full(16, np.nan), 0.45),
        (np.zeros((32, 32, 3), np.uint8), np.ones(16), 1.5),  # alpha out of range
    ],
)
def test_heatmap_rejects_bad_input(image, weights, alpha):
    with pytest.raises(ValueError):
        heatmap_png(image, weights, alpha)


# Anomalous parameters


def test_anomalies_are_thresholded_signed_and_sorted(scaler):
    process = {
        "temperature_zone_3": 1000.0 + 2.1 * 1.5,  # +2.1 sigma
        "etch_duration": 120.0 - 3.5 * 1.5,  # -3.5 sigma
        "cmp_vibration_rms": 0.05 + 2.5 * 0.008,  # +2.5 sigma
        "rf_power": 500.0 + 1.9 * 4.0,  # within
        "focus_offset": 0.0,
    }
    found = anomalous_parameters(process, scaler)
    assert [a["name"] for a in found] == [
        "etch_duration",
        "cmp_vibration_rms",
        "temperature_zone_3",
    ]
    assert [a["z"] for a in found] == [-3.5, 2.5, 2.1]
    assert found[0] == {
        "name": "etch_duration",
        "value": pytest.approx(114.75),
        "unit": "s",
        "z": -3.5,
        "step": "etch",
    }
    assert found[1]["unit"] == "g" and found[1]["step"] == "cmp"
    assert [a["name"] for a in anomalous_parameters(process, scaler, threshold=3.0)] == [
        "etch_duration"
    ]


def test_z_is_rounded_to_two_decimals(scaler):
    found = anomalous_parameters({"temperature_zone_1": 1000.0 + 2.34567 * 1.5}, scaler)
    assert found[0]["z"] == 2.35


def test_missing_parameters_are_not_anomalous(scaler):
    assert anomalous_parameters({}, scaler) == []
    assert anomalous_parameters({"rf_power": 500.0}, scaler) == []


def test_unknown_or_non_finite_parameters_are_rejected(scaler):
    with pytest.raises(ValueError, match="unknown process parameter"):
        anomalous_parameters({"rf_powr": 500.0}, scaler)
    with pytest.raises(ValueError, match="finite"):
        anomalous_parameters({"rf_power": float("nan")}, scaler)


def test_scaler_of_the_wrong_size_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        anomalous_parameters({}, ProcessScaler(mean=np.zeros(3), std=np.ones(3)))


# Explanation


def _region_map(k: int, region: int) -> np.ndarray:
    """A region map peaked on `region`."""
    region_map = np.full(k, 0.5 / (k - 1))
    region_map[region] = 0.5
    return region_map


VIBRATION = {"name": "cmp_vibration_rms", "value": 0.0692, "unit": "g", "z": 2.4, "step": "cmp"}
TEMPERATURE = {"name": "temperature_zone_3", "value": 997, "unit": "degC", "z": -2.13, "step": ""}
ETCH = {"name": "etch_duration", "value": 127.2, "unit": "s", "z": 4.8, "step": "etch"}
CF4 = {"name": "gas_flow_cf4", "value": 47.0, "unit": "sccm", "z": -2.0, "step": "etch"}


def test_defect_names_the_region_and_the_parameter_the_decision_rests_on():
    text = explain(
        "scratch", True, 0.87, _region_map(16, 6), [VIBRATION], True, {"cmp_vibration_rms": 1.2}
    )
    assert text == (
        "Scratch suspected in region B3 (confidence 0.87); the decision rests most on"
        " cmp_vibration_rms, which is +2.4 sigma from its training mean."
    )


def test_the_named_parameter_is_the_largest_share_not_the_largest_deviation():
    shares = {"etch_duration": 0.3, "gas_flow_cf4": 2.5}
    text = explain("process_deviation", True, 0.9, _region_map(16, 0), [ETCH, CF4], True, shares)
    assert "rests most on gas_flow_cf4, which is -2.0 sigma" in text
    shares = {"etch_duration": 3.1, "gas_flow_cf4": 0.2}
    text = explain("process_deviation", True, 0.9, _region_map(16, 0), [ETCH, CF4], True, shares)
    assert "rests most on etch_duration, which is +4.8 sigma" in text


def test_deviations_the_decision_does_not_rest_on_are_reported_as_such():
    for shares in ({}, {"etch_duration": -0.4, "gas_flow_cf4": 0.0}):
        text = explain("particle", True, 0.9, _region_map(16, 5), [ETCH, CF4], True, shares)
        assert text == (
            "Particle suspected in region B2 (confidence 0.90); etch_duration is +4.8 sigma"
            " from its training mean, but the decision does not rest on it."
        )


def test_rests_on_picks_the_largest_positive_share_of_an_anomaly():
    assert rests_on([ETCH, CF4], {"etch_duration": 0.1, "gas_flow_cf4": 0.4}) is CF4
    assert rests_on([ETCH], {"etch_duration": 0.1, "gas_flow_cf4": 9.0}) is ETCH
    assert rests_on([ETCH, CF4], {"etch_duration": -1.0}) is None
    assert rests_on([], {"etch_duration": 1.0}) is None
    with pytest.raises(ValueError, match="finite"):
        rests_on([ETCH], {"etch_duration": float("nan")})


def test_defect_without_deviations_says_the_process_log_is_in_range():
    text = explain("pattern", True, 0.8, _region_map(16, 0), [], True, {})
    assert text.endswith("; no process value is out of range.")


def test_missing_note_is_mentioned_only_for_an_unsure_call():
    region_map = _region_map(16, 0)
    unsure = explain("particle", True, 0.55, region_map, [], False, {})
    sure = explain("particle", True, 0.95, region_map, [], False, {})
    noted = explain("particle", True, 0.55, region_map, [], True, {})
    assert "No operator note" in unsure and "note" not in sure and "note" not in noted


def test_good_die_wording():
    region_map = _region_map(16, 0)
    assert (
        explain("good", False, 0.96, region_map, [], False, {})
        == "No defect found (confidence 0.96)."
    )
    text = explain("good", False, 0.96, region_map, [TEMPERATURE], True, {})
    assert text == (
        "No defect found (confidence 0.96); temperature_zone_3 is -2.1 sigma from its"
        " training mean but the image looks clean."
    )


def test_baseline_rests_on_the_image_and_names_no_region():
    defect = explain("scratch", True, 0.81, np.ones(1), [VIBRATION], False, {})
    good = explain("good", False, 0.99, np.ones(1), [], True, {})
    assert defect == (
        "Scratch suspected (confidence 0.81); the decision rests on the image alone. The"
        " process log shows cmp_vibration_rms at +2.4 sigma, but this model does not read it."
    )
    assert good == "No defect found (confidence 0.99); the decision rests on the image alone."


@pytest.mark.parametrize(
    "args",
    [
        ("good", True, 0.9),
        ("scratch", False, 0.9),
        ("crack", True, 0.9),
        ("scratch", True, 1.2),
        ("scratch", True, float("nan")),
    ],
)
def test_explain_rejects_inconsistent_decisions(args):
    with pytest.raises(ValueError):
        explain(*args, _region_map(16, 0), [], True, {})


def test_explain_rejects_a_region_map_that_is_not_a_square_grid():
    with pytest.raises(ValueError):
        explain("scratch", True, 0.9, np.ones(12), [], True, {})
    with pytest.raises(ValueError):
        explain("scratch", True, 0.9, -np.ones(16), [], True, {})
