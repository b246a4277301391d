"""Region names, the heatmap overlay, out-of-range parameters and the explanation text."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from model.data import ProcessScaler
from model.schema import parameter_names, process_parameters
from service.explain import (
    anomalous_parameters,
    explain,
    heatmap_png,
    overlay_base64,
    overlay_png,
    region_grid,
    region_name,
)

NAMES = parameter_names()
P = len(NAMES)


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
    layer = np.asarray(Image.open(io.BytesIO(base64.b64decode(overlay_base64(weights, 32)))))
    assert layer.shape == (32, 32, 4)
    a = layer[..., 3:].astype(np.float64) / 255.0
    drawn = image * (1 - a) + layer[..., :3] * a
    composite = np.asarray(Image.open(io.BytesIO(heatmap_png(image, weights))), np.float64)
    assert np.abs(drawn - composite).max() <= 3.0  # rounding of colours and alpha


def test_a_vision_only_overlay_is_transparent():
    layer = np.asarray(Image.open(io.BytesIO(overlay_png(np.ones(1), 32))))
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


def _attention(k: int, region: int, parameter: str) -> tuple[np.ndarray, np.ndarray]:
    """A region map peaked on `region` whose row reads `parameter` most."""
    region_map = np.full(k, 0.5 / (k - 1))
    region_map[region] = 0.5
    process_attention = np.full((k, P), 1.0 / P)
    process_attention[region] = 0.5 / (P - 1)
    process_attention[region, NAMES.index(parameter)] = 0.5
    return region_map, process_attention


def _baseline() -> tuple[np.ndarray, np.ndarray]:
    return np.ones(1), np.zeros((1, P))


VIBRATION = {"name": "cmp_vibration_rms", "value": 0.0692, "unit": "g", "z": 2.4, "step": "cmp"}
TEMPERATURE = {"name": "temperature_zone_3", "value": 997, "unit": "degC", "z": -2.13, "step": ""}


def test_defect_names_the_region_and_the_linked_parameter_with_its_sigma():
    region_map, attention = _attention(16, 1 * 4 + 2, "cmp_vibration_rms")
    text = explain("scratch", True, 0.87, region_map, attention, [VIBRATION], True, NAMES)
    assert text == (
        "Scratch suspected in region B3 (confidence 0.87); the model links that region most"
        " to cmp_vibration_rms, which is +2.4 sigma from its training mean."
    )


def test_linked_parameter_in_range_falls_back_to_the_largest_deviation():
    region_map, attention = _attention(16, 5, "rf_power")
    text = explain(
        "process_deviation", True, 0.9, region_map, attention, [TEMPERATURE], True, NAMES
    )
    assert text.startswith("Process deviation suspected in region B2 (confidence 0.90)")
    assert "rf_power" in text and "temperature_zone_3 at -2.1 sigma" in text


def test_defect_without_deviations_says_the_process_log_is_in_range():
    region_map, attention = _attention(16, 15, "focus_offset")
    text = explain("pattern", True, 0.8, region_map, attention, [], True, NAMES)
    assert "region D4" in text and "focus_offset" in text and "out of range" in text


def test_missing_note_is_mentioned_only_for_an_unsure_call():
    region_map, attention = _attention(16, 0, "particle_count")
    unsure = explain("particle", True, 0.55, region_map, attention, [], False, NAMES)
    sure = explain("particle", True, 0.95, region_map, attention, [], False, NAMES)
    noted = explain("particle", True, 0.55, region_map, attention, [], True, NAMES)
    assert "note" in unsure and "note" not in sure and "note" not in noted


def test_good_die_wording():
    region_map, attention = _attention(16, 3, "rf_power")
    assert (
        explain("good", False, 0.96, region_map, attention, [], False, NAMES)
        == "No defect found (confidence 0.96)."
    )
    text = explain("good", False, 0.96, region_map, attention, [TEMPERATURE], True, NAMES)
    assert text == (
        "No defect found (confidence 0.96); temperature_zone_3 is -2.1 sigma from its"
        " training mean but the image looks clean."
    )


def test_baseline_rests_on_the_image_and_names_no_region():
    region_map, attention = _baseline()
    defect = explain("scratch", True, 0.81, region_map, attention, [VIBRATION], False, NAMES)
    good = explain("good", False, 0.99, region_map, attention, [], True, NAMES)
    assert defect.startswith("Scratch suspected (confidence 0.81); the decision rests on the")
    assert "image alone" in defect and "cmp_vibration_rms at +2.4 sigma" in defect
    assert "region" not in defect and "region" not in good
    assert good == "No defect found (confidence 0.99); the decision rests on the image alone."


@pytest.mark.parametrize(
    "args",
    [
        ("crack", True, 0.9),  # unknown class
        ("good", True, 0.9),  # flagged but good
        ("scratch", False, 0.9),  # a defect class not flagged
        ("scratch", True, 1.2),  # confidence out of range
    ],
)
def test_explain_rejects_inconsistent_decisions(args):
    region_map, attention = _attention(16, 0, "rf_power")
    with pytest.raises(ValueError):
        explain(*args, region_map, attention, [], True, NAMES)


def test_explain_rejects_mismatched_shapes():
    region_map, attention = _attention(16, 0, "rf_power")
    with pytest.raises(ValueError, match="process attention"):
        explain("scratch", True, 0.9, region_map, attention[:, :10], [], True, NAMES)
    with pytest.raises(ValueError, match="square"):
        explain("scratch", True, 0.9, np.ones(12), np.zeros((12, P)), [], True, NAMES)
