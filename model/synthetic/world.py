"""What a synthetic fab is like: the looks of its dies and the process story of each class.

`World()` is the fixed fab of the demo data. `draw_world(seed)` draws another one, so that a
model trained on one synthetic fab can be evaluated on fabs it has never seen: which
parameters each defect class moves and how far, how often a visible defect leaves a process
trace, the fabs' layouts and colours, defect shapes, sizes and contrast, illumination, blur,
noise, misalignment, the operators' wording and typo rate. The contract's per-class story
holds in every world: a process deviation always moves at least one thermal, etch,
deposition or film parameter beyond 3 sigma; particles, scratches and pattern defects move
only their own steps' parameters, and only sometimes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from model.schema import process_parameters

WORLD_FILE = "synth_world.json"  # the drawn world, beside the splits (a randomized set only)

# Where each class's process trace may come from (process_step names of the parameter table).
CAUSE_STEPS = {1: ("vacuum",), 2: ("cmp",), 3: ("lithography",)}
DEVIATION_STEPS = ("diffusion", "etch", "deposition")


@dataclass(frozen=True)
class Trace:
    """How a visible defect class shows in the process log."""

    parameters: tuple[str, ...]  # the parameters it may move
    chance: float  # probability that a die of the class moves each of them
    low: float  # sigma range of one move
    high: float


@dataclass(frozen=True)
class Look:
    """The optics and defect looks of one world; the defaults are the demo fab's."""

    layout_seed: int = 0
    periods: tuple[int, ...] = (6, 8, 8, 10)
    substrate: tuple[float, float, float] = (0.30, 0.34, 0.32)
    metal: tuple[float, float, float] = (0.78, 0.74, 0.62)
    misalignment: int = 3
    particle_count: int = 5  # at most this many particles
    particle_radius: tuple[float, float] = (3.0, 7.5)
    scratch_width: tuple[int, int] = (2, 4)
    pattern_size: tuple[int, int] = (22, 48)
    contrast: tuple[float, float] = (0.45, 0.85)
    faint_contrast: tuple[float, float] = (0.25, 0.4)
    gain: tuple[float, float] = (0.88, 1.12)
    blur: tuple[float, float] = (0.3, 0.9)
    noise: tuple[float, float] = (0.008, 0.02)


@dataclass(frozen=True)
class Wording:
    """How operators write; the defaults are the demo fab's."""

    typo: float = 0.15
    phrases: int = 0  # phrases kept of each class's list (0: all)
    phrase_seed: int = 0


@dataclass(frozen=True)
class World:
    """One synthetic fab. `traces` and `deviations` None: the demo fab's process story."""

    look: Look = field(default_factory=Look)
    wording: Wording = field(default_factory=Wording)
    traces: dict[int, Trace] | None = None
    deviations: tuple[tuple[str, ...], ...] | None = None  # each: a cause, then what it drags
    deviation_size: tuple[float, float] = (3.2, 6.0)
    drag: float = 0.6  # share of the cause's move that its companions follow
    holdout: bool = False  # test dies deviate by the second half of `deviations`, others the first

    def root_causes(self, split: str) -> tuple[tuple[str, ...], ...]:
        """The deviations a split's process-deviation dies draw from."""
        if not self.holdout:
            return self.deviations
        half = len(self.deviations) // 2
        return self.deviations[half:] if split == "test" else self.deviations[:half]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> World:
        raw = json.loads(Path(path).read_text())
        traces = raw["traces"] and {
            int(k): Trace(tuple(v["parameters"]), v["chance"], v["low"], v["high"])
            for k, v in raw["traces"].items()
        }
        deviations = raw["deviations"] and tuple(tuple(d) for d in raw["deviations"])
        look = {k: tuple(v) if isinstance(v, list) else v for k, v in raw["look"].items()}
        return cls(
            look=Look(**look),
            wording=Wording(**raw["wording"]),
            traces=traces,
            deviations=deviations,
            deviation_size=tuple(raw["deviation_size"]),
            drag=raw["drag"],
            holdout=raw.get("holdout", False),
        )


def step_parameters(*steps: str) -> list[str]:
    """Names of the parameters of the given process steps, in table order."""
    return [p.name for p in process_parameters() if p.process_step in steps]


def draw_world(seed: int, holdout: bool = False) -> World:
    """A randomized fab, a function of `seed` alone.

    With `holdout`, its process deviations have 6 root causes: the training and validation
    dies deviate by three of them, the test dies by the other three (no parameter shared).
    """
    rng = np.random.default_rng([seed, 77])
    traces = {
        label: _draw_trace(rng, step_parameters(*steps)) for label, steps in CAUSE_STEPS.items()
    }
    low = float(rng.uniform(3.1, 3.8))
    return World(
        look=_draw_look(rng),
        wording=Wording(
            typo=float(rng.uniform(0.05, 0.35)),
            phrases=int(rng.integers(2, 5)),
            phrase_seed=int(rng.integers(0, 2**31 - 1)),
        ),
        traces=traces,
        deviations=_draw_deviations(rng, holdout),
        deviation_size=(low, low + float(rng.uniform(1.5, 3.5))),
        drag=float(rng.uniform(0.3, 0.8)),
        holdout=holdout,
    )


def _draw_trace(rng: np.random.Generator, candidates: list[str]) -> Trace:
    k = int(rng.integers(1, 4))
    low = float(rng.uniform(0.8, 2.2))
    return Trace(
        parameters=tuple(str(p) for p in rng.choice(candidates, size=k, replace=False)),
        chance=float(rng.uniform(0.35, 0.85)),
        low=low,
        high=low + float(rng.uniform(0.8, 2.5)),
    )


def _draw_deviations(rng: np.random.Generator, holdout: bool) -> tuple[tuple[str, ...], ...]:
    """3 to 6 root causes (6 for a hold-out) among the thermal, etch and deposition
    parameters, each dragging up to one parameter of its step that no other cause moves."""
    free = step_parameters(*DEVIATION_STEPS)
    count = 6 if holdout else int(rng.integers(3, 7))
    causes = [str(c) for c in rng.choice(free, size=count, replace=False)]
    free = [p for p in free if p not in causes]
    out = []
    for cause in causes:
        mates = [p for p in free if _step(p) == _step(cause)]
        size = min(len(mates), int(rng.integers(0, 2)))
        drags = [str(d) for d in rng.choice(mates, size=size, replace=False)] if size else []
        free = [p for p in free if p not in drags]
        out.append((cause, *drags))
    return tuple(out)


def _step(name: str) -> str:
    return next(p.process_step for p in process_parameters() if p.name == name)


def _draw_look(rng: np.random.Generator) -> Look:
    def span(lo: float, hi: float, width: float) -> tuple[float, float]:
        a = float(rng.uniform(lo, hi - width))
        return a, a + width

    period = int(rng.integers(5, 9))
    return Look(
        layout_seed=int(rng.integers(1, 2**31 - 1)),
        periods=(period, period + 2, period + 2, period + 4),
        substrate=tuple(float(v) for v in rng.uniform(0.2, 0.42, 3)),
        metal=tuple(float(v) for v in rng.uniform(0.6, 0.88, 3)),
        misalignment=int(rng.integers(1, 7)),
        particle_count=int(rng.integers(2, 7)),
        particle_radius=span(2.0, 10.0, float(rng.uniform(2.5, 5.0))),
        scratch_width=(int(rng.integers(1, 3)), int(rng.integers(3, 6))),
        pattern_size=(int(rng.integers(16, 26)), int(rng.integers(36, 56))),
        contrast=span(0.35, 0.95, float(rng.uniform(0.25, 0.45))),
        faint_contrast=span(0.18, 0.45, 0.12),
        gain=span(0.8, 1.2, float(rng.uniform(0.15, 0.3))),
        blur=span(0.2, 1.3, float(rng.uniform(0.4, 0.7))),
        noise=span(0.005, 0.035, float(rng.uniform(0.008, 0.015))),
    )
