"""What an operator reads about one die: the region heatmap, out-of-range parameters, the
one-line explanation.

Pure functions over one die's model outputs (numpy and Pillow only). The region map is the
model's attention over K = g * g image regions in row-major order; rows are named A, B, ...
from the top and columns 1, 2, ... from the left, so region "B3" is row 1, column 2.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from model.schema import CLASS_NAMES, GOOD, parameter_names, process_parameters

if TYPE_CHECKING:
    from model.data import ProcessScaler

UNSURE_BELOW = 0.6  # a defect call under this confidence is worth confirming with a note

# Five stops of an inferno-like ramp (black, purple, red, orange, pale yellow), RGB 0-255.
_RAMP_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_RAMP_COLORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64
)


def region_grid(k: int) -> int:
    """The side of the square region grid.

    Args:
        k: number of regions K (1 for the vision-only baseline's single region).
    Returns:
        g with g * g == k.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"region count must be a positive integer, got {k!r}")
    g = math.isqrt(int(k))
    if g * g != k:
        raise ValueError(f"region count {k} is not a square grid")
    return g


def region_name(index: int, grid: int) -> str:
    """Row letter(s) and column number of one region, e.g. 0 -> "A1", row 1 col 2 -> "B3".

    Args:
        index: row-major region index in [0, grid * grid).
        grid: the grid side g.
    Returns:
        the name; rows past Z continue AA, AB, ... as spreadsheet columns do.
    """
    if isinstance(grid, bool) or not isinstance(grid, int | np.integer) or grid < 1:
        raise ValueError(f"grid side must be a positive integer, got {grid!r}")
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise ValueError(f"region index must be an integer, got {index!r}")
    if not 0 <= index < grid * grid:
        raise ValueError(f"region index {index} is outside a {grid}x{grid} grid")
    row, col = divmod(int(index), int(grid))
    return f"{_row_letters(row)}{col + 1}"


def _row_letters(row: int) -> str:
    letters = ""
    n = row + 1
    while n:
        n, rest = divmod(n - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def heatmap_png(image: np.ndarray, region_map: np.ndarray, alpha: float = 0.45) -> bytes:
    """The die image with the region attention laid over it, as PNG.

    Args:
        image: uint8 (H, W, 3) die image.
        region_map: (K,) non-negative attention over the K = g * g regions, row-major.
        alpha: opacity of the overlay where attention is highest, in [0, 1].
    Returns:
        PNG bytes of size (H, W); the image itself when K == 1 or the map is all zero.
    """
    image = _check_image(image)
    level = _attention_levels(region_map, image.shape[0], image.shape[1], alpha)
    if level is None:
        return _encode_png(image)
    weight = (alpha / 255.0) * level[..., None].astype(np.float32)  # H, W, 1
    blended = image * (1.0 - weight) + _LUT[level] * weight
    return _encode_png(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def overlay_png(region_map: np.ndarray, size: int, alpha: float = 0.45) -> bytes:
    """The region attention alone as a transparent layer of side `size`, as PNG.

    Drawn over the die image it gives `heatmap_png`; it is a few KB where the composite is
    ~100 KB, so it is what the API returns for every die. Colour and opacity are both a
    function of the attention level, so the layer is stored as an indexed PNG whose 256
    palette entries carry their alpha (PLTE and tRNS): a reader decodes it to RGBA, and it
    is a quarter of the pixels to compress. Fully transparent when K == 1.
    """
    level = _attention_levels(region_map, size, size, alpha)
    if level is None:
        level = np.zeros((size, size), np.uint8)
    palette = np.empty((256, 4), np.uint8)
    palette[:, :3] = np.rint(_LUT).astype(np.uint8)
    palette[:, 3] = np.rint(np.arange(256) * alpha).astype(np.uint8)
    layer = Image.fromarray(level, "P")
    layer.putpalette(palette.tobytes(), rawmode="RGBA")
    return _encode_png(layer)


def overlay_base64(region_map: np.ndarray, size: int, alpha: float = 0.45) -> str:
    """`overlay_png` as base64 text (for JSON)."""
    return base64.b64encode(overlay_png(region_map, size, alpha)).decode("ascii")


def _attention_levels(region_map, H: int, W: int, alpha: float) -> np.ndarray | None:
    """Attention upsampled to (H, W) as uint8 levels 0-255 of its peak; None when flat."""
    weights = _check_region_map(region_map)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    g = region_grid(weights.size)
    peak = float(weights.max())
    if g == 1 or peak <= 0.0:
        return None
    grid = Image.fromarray((weights / peak).reshape(g, g).astype(np.float32))
    heat = np.asarray(grid.resize((W, H), Image.Resampling.BILINEAR), np.float32)
    return np.rint(np.clip(heat, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("image must be a uint8 numpy array")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
    return np.ascontiguousarray(image)


def _check_region_map(region_map: np.ndarray) -> np.ndarray:
    weights = np.asarray(region_map, np.float64)
    if weights.ndim != 1 or weights.size < 1:
        raise ValueError(f"region map must have shape (K,), got {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("region map must hold finite, non-negative weights")
    return weights


def _colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) to RGB floats in [0, 255] (shape + (3,))."""
    channels = [np.interp(values, _RAMP_STOPS, _RAMP_COLORS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1)


_LUT = _colormap(np.linspace(0.0, 1.0, 256)).astype(np.float32)  # 256, 3


def _encode_png(image: np.ndarray | Image.Image) -> bytes:
    """Fast PNG (level 1): the heatmap is made for every inspected die."""
    buffer = io.BytesIO()
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def anomalous_parameters(
    process: dict[str, float], scaler: ProcessScaler, threshold: float = 2.0
) -> list[dict]:
    """The given process parameters that sit more than `threshold` sigma from training.

    Args:
        process: raw values by parameter name; absent names are not anomalous.
        scaler: the training statistics (mean, std in parameter_names() order).
        threshold: |z| above which a value is reported.
    Returns:
        [{name, value, unit, z, step}, ...] with z rounded to 2 decimals, largest |z| first.
    """
    names = parameter_names()
    mean = np.asarray(scaler.mean, np.float64)
    std = np.asarray(scaler.std, np.float64)
    if mean.shape != (len(names),) or std.shape != (len(names),):
        raise ValueError(f"scaler statistics must have shape ({len(names)},)")
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    index = {name: i for i, name in enumerate(names)}
    params = process_parameters()
    found = []
    for name, value in process.items():
        if name not in index:
            raise ValueError(f"unknown process parameter {name!r}")
        if not math.isfinite(value):
            raise ValueError(f"process parameter {name!r} is not a finite number: {value}")
        i = index[name]
        z = (float(value) - mean[i]) / std[i]
        if abs(z) > threshold:
            p = params[i]
            found.append(
                (
                    i,
                    z,
                    {
                        "name": name,
                        "value": float(value),
                        "unit": p.unit,
                        "z": round(float(z), 2),
                        "step": p.process_step,
                    },
                )
            )
    found.sort(key=lambda item: (-abs(item[1]), item[0]))
    return [entry for _, _, entry in found]


def explain(
    class_name: str,
    flagged: bool,
    confidence: float,
    region_map: np.ndarray,
    anomalies: list[dict],
    note_present: bool,
    attribution: Mapping[str, float],
) -> str:
    """One or two plain sentences on why the model decided as it did.

    Args:
        class_name: the returned class (a model.schema.CLASS_NAMES entry).
        flagged: whether the die was flagged (a defect class when True, "good" when False).
        confidence: probability of the returned class.
        region_map: (K,) attention over the image regions (K == 1: vision-only baseline).
        anomalies: `anomalous_parameters` output for this die, largest |z| first.
        note_present: whether the operator gave a note.
        attribution: how much of the decision each out-of-range parameter carries
            (model.attribution.occlusion_attribution by name); absent names carry none.
    Returns:
        the explanation text.
    """
    _check_decision(class_name, flagged, confidence)
    weights = _check_region_map(region_map)
    region_grid(weights.size)
    for anomaly in anomalies:
        _check_anomaly(anomaly)
    largest = anomalies[0] if anomalies else None
    verdict = f"{_display(class_name)} suspected" if flagged else "No defect found"
    score = f"(confidence {confidence:.2f})"
    if weights.size == 1:
        text = f"{verdict} {score}; the decision rests on the image alone."
        if largest is not None:
            text += f" The process log shows {_at(largest)}, but this model does not read it."
        return text
    if not flagged:
        if largest is None:
            return f"{verdict} {score}."
        return f"{verdict} {score}; {_is(largest)} but the image looks clean."
    name = region_name(int(np.argmax(weights)), region_grid(weights.size))
    text = f"{verdict} in region {name} {score}; " + _link(anomalies, attribution)
    if not note_present and confidence < UNSURE_BELOW:
        text += " No operator note was given to confirm it."
    return text


def rests_on(anomalies: list[dict], attribution: Mapping[str, float]) -> dict | None:
    """The out-of-range parameter that carries most of the decision, if any carries some.

    Args:
        anomalies: `anomalous_parameters` output for the die.
        attribution: decision share by parameter name (positive = supports the decision).
    Returns:
        that anomaly entry, or None when no out-of-range value supports the decision.
    """
    for name, share in attribution.items():
        if not math.isfinite(share):
            raise ValueError(f"the attribution of {name!r} is not a finite number: {share}")
    supported = [a for a in anomalies if attribution.get(a["name"], 0.0) > 0.0]
    return max(supported, key=lambda a: attribution[a["name"]], default=None)


def _link(anomalies: list[dict], attribution: Mapping[str, float]) -> str:
    """The clause on the process value the decision rests on most."""
    if not anomalies:
        return "no process value is out of range."
    carrier = rests_on(anomalies, attribution)
    if carrier is None:
        return f"{_is(anomalies[0])}, but the decision does not rest on it."
    return f"the decision rests most on {_which(carrier)}."


def _check_decision(class_name: str, flagged: bool, confidence: float) -> None:
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASS_NAMES}")
    if bool(flagged) == (class_name == CLASS_NAMES[GOOD]):
        state = "flagged" if flagged else "not flagged"
        raise ValueError(f"a {state} die cannot have class {class_name!r}")
    if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        raise ValueError(f"confidence must be in [0, 1], got {confidence}")


def _check_anomaly(anomaly: dict) -> None:
    if "name" not in anomaly or "z" not in anomaly:
        raise ValueError(f"an anomaly needs 'name' and 'z', got keys {sorted(anomaly)}")


def _display(class_name: str) -> str:
    """'process_deviation' -> 'Process deviation'."""
    return class_name.replace("_", " ").capitalize()


def _sigma(anomaly: dict) -> str:
    return f"{float(anomaly['z']):+.1f} sigma"


def _is(anomaly: dict) -> str:
    """'temperature_zone_3 is +2.1 sigma from its training mean'."""
    return f"{anomaly['name']} is {_sigma(anomaly)} from its training mean"


def _which(anomaly: dict) -> str:
    """'cmp_vibration_rms, which is +2.4 sigma from its training mean'."""
    return f"{anomaly['name']}, which is {_sigma(anomaly)} from its training mean"


def _at(anomaly: dict) -> str:
    """'etch_duration at -2.3 sigma'."""
    return f"{anomaly['name']} at {_sigma(anomaly)}"
