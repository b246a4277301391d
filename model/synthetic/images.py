"""Synthetic die microscope images: a periodic circuit layout, optics, and defects.

Each fab makes its own product, so each has its own layout. A die is a crop of its layout
with small misalignment, per-die illumination, colour, blur and noise; defects are drawn
into the metal mask (pattern) or over the picture (particles, scratches, discoloration).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from model.schema import IMAGE_SIZE
from model.synthetic.world import Look

PAD = 8  # layout margin that misalignment shifts into
VIA = np.array([0.18, 0.16, 0.20])
DEMO = Look()


@lru_cache(maxsize=8)
def layout(fab: str, seed: int = 0, periods: tuple[int, ...] = DEMO.periods):
    """The fab's product layout: (metal mask, via mask), float32, at least IMAGE_SIZE + 2*PAD.

    `seed` and `periods` (line pitches in pixels) are the world's (model.synthetic.world).
    """
    rng = np.random.default_rng(sum(map(ord, fab)) * 7919 + seed)
    block = 32
    side = -(-(IMAGE_SIZE + 2 * PAD) // block) * block  # whole blocks covering die and margin
    metal = np.zeros((side, side), np.float32)
    vias = np.zeros((side, side), np.float32)
    for by in range(0, side, block):
        for bx in range(0, side, block):
            kind = rng.choice(["h", "v", "pads", "h", "v"])
            period = int(rng.choice(list(periods)))
            width = int(rng.integers(2, period // 2 + 1))
            tile = metal[by : by + block, bx : bx + block]
            if kind == "h":
                for y in range(1, block, period):
                    tile[y : y + width, :] = 1.0
            elif kind == "v":
                for x in range(1, block, period):
                    tile[:, x : x + width] = 1.0
            else:
                tile[4:12, 4:12] = tile[4:12, 20:28] = tile[20:28, 4:12] = tile[20:28, 20:28] = 1.0
            vt = vias[by : by + block, bx : bx + block]
            for y in range(2, block, 2 * period):
                for x in range(2, block, 2 * period):
                    if tile[y, x] > 0 and rng.random() < 0.5:
                        vt[y : y + 2, x : x + 2] = 1.0
    return metal, vias


def render_die(
    row: dict, illumination: float = 1.0, with_defect: bool = True, look: Look = DEMO
) -> np.ndarray:
    """Render one die as uint8 (IMAGE_SIZE, IMAGE_SIZE, 3) from its plan row.

    Args:
        row: the die's plan row (fab, label, zone, position, hidden causes, die_seed).
        illumination: global light level (1.0 nominal; a drift preset may change it).
        with_defect: False renders the same die without its defect (for the signal audit);
            the defect has its own random stream, so everything else stays identical.
        look: the world's optics and defect looks (default: the demo fab's).
    """
    rng = np.random.default_rng([row["die_seed"], 2])
    defect_rng = np.random.default_rng([row["die_seed"], 3])
    label = row["label"] if with_defect else 0
    discolored = row["discoloration"] and (with_defect or row["label"] == 0)
    metal_full, via_full = layout(row["fab"], look.layout_seed, tuple(look.periods))
    dx, dy = rng.integers(-look.misalignment, look.misalignment + 1, size=2)
    sl = np.s_[PAD + dy : PAD + dy + IMAGE_SIZE, PAD + dx : PAD + dx + IMAGE_SIZE]
    metal, vias = metal_full[sl].copy(), via_full[sl]
    if label == 3:
        _pattern_defect(metal, defect_rng, row["faint"], look)
    metal = gaussian_filter(metal, 0.6)
    substrate = (np.array(look.substrate) + rng.normal(0, 0.025, 3)).astype(np.float32)
    metal_colour = (np.array(look.metal) + rng.normal(0, 0.03, 3)).astype(np.float32)
    img = substrate + metal[..., None] * (metal_colour - substrate)
    img += vias[..., None] * (VIA.astype(np.float32) - img) * np.float32(0.8)
    if discolored:
        _discolor(img, defect_rng if row["label"] == 4 else rng)
    if rng.random() < 0.10:  # faint smudge: cosmetic, any class
        _discolor(img, rng, strength=0.35, tint=np.array([-0.1, -0.1, -0.1]))
    if label == 1:
        _particles(img, defect_rng, row["faint"], look)
    elif label == 2:
        _scratch(img, defect_rng, row["faint"], look)
    img *= _illumination(row, rng, look.gain) * np.float32(illumination)
    img = gaussian_filter(img, (rng.uniform(*look.blur),) * 2 + (0,))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(*look.noise))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


@lru_cache(maxsize=1)
def _grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    return yy, xx


def _illumination(row: dict, rng: np.random.Generator, gain: tuple[float, float]) -> np.ndarray:
    """Gain, a lamp gradient, and a darker ramp towards the wafer edge for edge dies."""
    yy, xx = _grid()
    yy, xx = yy / IMAGE_SIZE - 0.5, xx / IMAGE_SIZE - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(*gain) * (
        1 + rng.uniform(0, 0.12) * (xx * np.cos(theta) + yy * np.sin(theta))
    )
    if row["wafer_zone"] == "edge":
        angle = np.arctan2(row["die_y"], row["die_x"])
        towards_edge = xx * np.cos(angle) + yy * np.sin(angle) + 0.5  # 0..1 across the die
        light *= 1 - rng.uniform(0.10, 0.25) * np.clip(towards_edge, 0, 1) ** 2
    return light[..., None].astype(np.float32)


def _discolor(img: np.ndarray, rng, strength: float = 1.0, tint: np.ndarray | None = None) -> None:
    """A smooth irregular colour cast: the look of both cosmetic and thermal discoloration."""
    yy, xx = _grid()
    field = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    cx, cy = rng.uniform(40, IMAGE_SIZE - 40, 2)
    for _ in range(int(rng.integers(1, 4))):
        ox, oy = cx + rng.normal(0, 20), cy + rng.normal(0, 20)
        rx, ry = rng.uniform(18, 60, 2)
        field += np.exp(-(((xx - ox) / rx) ** 2 + ((yy - oy) / ry) ** 2) / 2)
    field = np.clip(field, 0, 1) * np.float32(rng.uniform(0.25, 0.6) * strength)
    if tint is None:  # brownish to purple casts
        tint = (
            np.array([0.35, -0.05, -0.30]) if rng.random() < 0.6 else np.array([0.2, -0.25, 0.25])
        )
    img *= 1 + field[..., None] * tint.astype(np.float32)


def _particles(img: np.ndarray, rng, faint: bool, look: Look) -> None:
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE))
    draw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, look.particle_count))):
        x, y = rng.uniform(10, IMAGE_SIZE - 10, 2)
        r = rng.uniform(*look.particle_radius)
        ex = rng.uniform(0.7, 1.3)
        draw.ellipse([x - r * ex, y - r / ex, x + r * ex, y + r / ex], fill=255)
    _blend(img, mask, rng, look.faint_contrast if faint else look.contrast, soften=1.0)


def _scratch(img: np.ndarray, rng, faint: bool, look: Look) -> None:
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE))
    draw = ImageDraw.Draw(mask)
    p0, p2 = rng.uniform(10, IMAGE_SIZE - 10, (2, 2))
    while np.linalg.norm(p2 - p0) < 80:
        p2 = rng.uniform(10, IMAGE_SIZE - 10, 2)
    bend = rng.normal(0, 40, 2) if rng.random() < 0.5 else np.zeros(2)
    p1 = (p0 + p2) / 2 + bend
    t = np.linspace(0, 1, 40)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    draw.line([tuple(p) for p in curve], fill=255, width=int(rng.integers(*look.scratch_width)))
    _blend(img, mask, rng, look.faint_contrast if faint else look.contrast, soften=0.7)


def _blend(img: np.ndarray, mask: Image.Image, rng, contrast_range, soften: float) -> None:
    alpha = gaussian_filter(np.asarray(mask, np.float32) / 255.0, soften)
    contrast = rng.uniform(*contrast_range)
    target = np.array([0.95, 0.95, 0.9]) if rng.random() < 0.5 else np.array([0.05, 0.05, 0.06])
    a = (alpha * np.float32(contrast))[..., None]
    img *= 1 - a
    img += a * target.astype(np.float32)


def _pattern_defect(metal: np.ndarray, rng, faint: bool, look: Look = DEMO) -> None:
    """Bridged, missing or shifted lines in one local region of the metal mask."""
    low, high = look.pattern_size
    size = int(rng.integers(14 * low // 22, 24 * low // 22) if faint else rng.integers(low, high))
    y, x = rng.integers(8, IMAGE_SIZE - size - 8, 2)
    region = metal[y : y + size, x : x + size]
    before = region.copy()
    kind = rng.choice(["bridge", "missing", "shift"])
    if kind != "bridge" and region.mean() < 0.2:  # too little metal to lose or shift
        kind = "bridge"
    if kind == "bridge":
        if rng.random() < 0.5:
            region[:, size // 3 : size // 3 + max(3, size // 5)] = 1.0
        else:
            region[size // 3 : size // 3 + max(3, size // 5), :] = 1.0
    elif kind == "missing":
        region[:] = 0.0
    else:
        shift = int(rng.integers(3, 6))
        region[:] = np.roll(region, shift, axis=int(rng.integers(0, 2)))
    if np.array_equal(region, before):  # shifted along its lines or bridged over metal: no-op
        region[:] = 0.0  # the region holds metal here (a bridge on bare substrate shows)
