"""What flows through the service: a validated inspection request and one model's verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np


@dataclass(frozen=True)
class DieInput:
    """One validated inspection request."""

    die_id: str
    wafer_id: str
    image: np.ndarray  # uint8 (256, 256, 3)
    image_bytes: bytes  # the upload as received
    image_format: str  # "png" | "jpeg"
    process: dict[str, float]  # the given parameters, raw units, finite
    missing_parameters: tuple[str, ...]  # names not given, in schema order
    note: str = ""  # "" when none
    metadata: dict = field(default_factory=dict)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Decision:
    """One model's verdict on one die."""

    role: str  # "champion" | "candidate"
    model_version: str
    model_kind: str  # "multimodal" | "baseline"
    defect_class: int
    class_name: str
    confidence: float  # probability of the returned class
    defect_probability: float  # 1 - P(good)
    flagged: bool  # defect_probability >= the model's threshold
    probabilities: dict[str, float]
    latency_ms: float  # model time of the batch this die ran in

    def as_dict(self) -> dict:
        return asdict(self)
