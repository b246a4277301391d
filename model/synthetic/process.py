"""Synthetic process logs: 48 parameters with step correlation, tool offsets, seasons and causes.

Values are drawn in sigma units (z) and written as physical values
``nominal + sigma * z``. Defect-linked deviations follow the dataset contract's table.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from model.schema import parameter_names, process_parameters, process_steps
from model.synthetic.world import World

STEP_SHARE = 0.55  # weight of the shared per-step factor (correlation inside a step)
DIE_SHARE = 0.75  # weight of the die's own noise
WAFER_SHARE = 0.25  # weight of the wafer's shared offset
FAB_SPREAD = 0.20  # sigma of each fab's per-parameter offset
CHAMBER_SPREAD = 0.15  # sigma of each chamber's offset on chamber-driven steps
CHAMBER_STEPS = ("vacuum", "etch", "deposition", "diffusion")
BENIGN_EXCURSION = 0.02  # share of good dies with one harmless out-of-family value
DROPOUT = 0.002  # share of empty cells (sensor dropouts)

TEMPERATURE_ZONES = [f"temperature_zone_{i}" for i in range(1, 9)]


def draw_process_logs(
    plan: pd.DataFrame,
    seed: int,
    shift: dict[str, float] | None = None,
    world: World | None = None,
):
    """Process logs for every planned die.

    Args:
        plan: the die plan (metadata, labels, hidden causes).
        seed: random seed of this stream.
        shift: optional drift, parameter name to a mean shift in sigma units.
        world: the fab's process story (default: the demo fab's).
    Returns:
        (values DataFrame with die_id + 48 columns, causes Series naming each die's
        defect-linked parameters).
    """
    rng = np.random.default_rng(seed)
    names = list(parameter_names())
    col = {name: i for i, name in enumerate(names)}
    n, p = len(plan), len(names)
    z = DIE_SHARE * rng.standard_normal((n, p))
    for cols in process_steps().values():
        z[:, cols] += STEP_SHARE * rng.standard_normal((n, 1))
    wafer_codes, wafers = pd.factorize(plan["wafer_id"])
    z += WAFER_SHARE * rng.standard_normal((len(wafers), p))[wafer_codes]
    z += FAB_SPREAD * _tool_offsets(plan["fab"], p)
    chamber_cols = [
        i for i, q in enumerate(process_parameters()) if q.process_step in CHAMBER_STEPS
    ]
    z[:, chamber_cols] += CHAMBER_SPREAD * _tool_offsets(plan["chamber"], p)[:, chamber_cols]
    z[:, col["humidity"]] += 1.2 * _season(plan["timestamp"])
    z[:, col["cleanroom_temp"]] += 0.3 * _season(plan["timestamp"])
    causes = _defect_deviations(rng, z, plan, col, world or World())
    for name, delta in (shift or {}).items():
        z[:, col[name]] += delta
    z[rng.random((n, p)) < DROPOUT] = np.nan
    nominal = np.array([q.nominal for q in process_parameters()])
    sigma = np.array([q.sigma for q in process_parameters()])
    raw = nominal + sigma * z
    raw = np.where(nominal > 0, np.maximum(raw, 0.0), raw)  # counts, rates, pressures: never < 0
    values = pd.DataFrame(np.round(raw, 5), columns=names)
    values.insert(0, "die_id", plan["die_id"].to_numpy())
    return values, pd.Series(causes, index=plan.index, name="process_cause")


def _tool_offsets(tools: pd.Series, p: int) -> np.ndarray:
    """Per-tool offsets seeded by the tool's name: a fab or chamber keeps its signature."""
    codes, uniques = pd.factorize(tools, sort=True)
    table = np.stack(
        [np.random.default_rng(_stable_hash(str(u))).standard_normal(p) for u in uniques]
    )
    return table[codes]


def _stable_hash(text: str) -> int:
    return int(hashlib.blake2b(text.encode(), digest_size=8).hexdigest(), 16)


def _season(timestamps: pd.Series) -> np.ndarray:
    """+1 in high summer, -1 in winter."""
    doy = pd.to_datetime(timestamps).dt.dayofyear.to_numpy()
    return np.sin(2 * np.pi * (doy - 105) / 365.0)


def _defect_deviations(rng, z: np.ndarray, plan: pd.DataFrame, col: dict, world: World) -> list:
    """Add the contract's defect-linked deviations in place; name the parameters moved."""
    causes = []
    for i, (label, split) in enumerate(zip(plan["label"].to_numpy(), plan["split"])):
        if world.traces is None:
            moved = _DEVIATIONS[label](rng, z[i], col)
        else:
            moved = _world_deviation(rng, z[i], col, world.root_causes(split), world, int(label))
        causes.append(";".join(moved))
    return causes


def _world_deviation(rng, row, col, causes: tuple, world: World, label: int) -> list[str]:
    """A drawn world's story: its traces for visible classes, one of `causes` for class 4."""
    if label == 0:
        return _good(rng, row, col)
    if label == 4:
        cause, *drags = causes[int(rng.integers(len(causes)))]
        sign, size = rng.choice([-1, 1]), rng.uniform(*world.deviation_size)
        _push(row, col[cause], sign, size)
        for name in drags:
            row[col[name]] += sign * world.drag * size
        return [cause, *drags]
    trace = world.traces[label]
    moved = [p for p in trace.parameters if rng.random() < trace.chance]
    for name in moved:
        row[col[name]] += rng.choice([-1, 1]) * rng.uniform(trace.low, trace.high)
    return moved


def _particle(rng, row, col) -> list[str]:
    moved = []
    if rng.random() < 0.7:  # weak: particle counts drift up
        row[col["particle_count"]] += rng.uniform(1.0, 3.0)
        moved.append("particle_count")
    if rng.random() < 0.5:
        row[col["chamber_pressure"]] += rng.uniform(0.5, 1.5)
        moved.append("chamber_pressure")
    return moved


def _scratch(rng, row, col) -> list[str]:
    moved = []
    if rng.random() < 0.75:
        row[col["cmp_vibration_rms"]] += rng.uniform(2.0, 5.0)
        moved.append("cmp_vibration_rms")
    if rng.random() < 0.5:
        row[col["cmp_down_force"]] += rng.choice([-1, 1]) * rng.uniform(1.5, 3.0)
        moved.append("cmp_down_force")
    return moved


def _pattern(rng, row, col) -> list[str]:
    if rng.random() >= 0.8:
        return []
    options = ["focus_offset", "exposure_dose", "overlay_x", "overlay_y"]
    moved = list(rng.choice(options, size=int(rng.integers(1, 3)), replace=False))
    for name in moved:
        row[col[name]] += rng.choice([-1, 1]) * rng.uniform(2.0, 4.0)
    return moved


def _process_deviation(rng, row, col) -> list[str]:
    """Always at least one parameter beyond 3 sigma: thermal, etch or deposition."""
    kind = rng.choice(["thermal", "etch", "deposition"], p=[0.6, 0.2, 0.2])
    size = rng.uniform(3.2, 6.0)
    if kind == "thermal":
        zone = 3 if rng.random() < 0.4 else int(rng.integers(1, 9))
        _push(row, col[f"temperature_zone_{zone}"], 1, size)
        for nb in (zone - 1, zone + 1):  # heat spreads a little to the neighbours
            if 1 <= nb <= 8:
                row[col[f"temperature_zone_{nb}"]] += 0.3 * size
        return [f"temperature_zone_{zone}"]
    sign = rng.choice([-1, 1])
    first, second = (
        ("etch_duration", "etch_endpoint_time")
        if kind == "etch"
        else ("deposition_temp", "film_thickness")
    )
    _push(row, col[first], sign, size)
    row[col[second]] += sign * 0.6 * size
    return [first, second]


def _push(row, j: int, sign: int, size: float) -> None:
    """Move row[j] by `size` in the direction `sign`, landing at least `size` from nominal.

    A plain shift can be eaten by the die's own noise (e.g. -0.5 + 3.2 = 2.7 sigma); the
    defect-linked parameter must end up beyond `size` sigma whatever the noise was.
    """
    row[j] = sign * max(sign * row[j] + size, size)


def _good(rng, row, col) -> list[str]:
    if rng.random() < BENIGN_EXCURSION:  # a harmless one-off reading
        j = int(rng.integers(0, len(row)))
        row[j] += rng.choice([-1, 1]) * rng.uniform(2.0, 3.5)
    return []


_DEVIATIONS = {0: _good, 1: _particle, 2: _scratch, 3: _pattern, 4: _process_deviation}
