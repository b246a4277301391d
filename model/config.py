"""One run's configuration: dataclasses loaded from YAML with `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class DataConfig:
    """Where decoded images are cached and how batches are loaded."""

    cache_dir: str = ".cache/dieguard"
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class ModelConfig:
    """Shapes of the multimodal network and of the vision-only baseline."""

    img_size: int = 256  # images are resized to this once, when cached
    encoder_size: int = 0  # side the image encoders work at (0: img_size); the golden-die
    # comparison runs at img_size first, so a smaller encoder still sees full-resolution residuals
    patch_size: int = 16
    embed_dim: int = 256
    vit_dim: int = 192
    vit_depth: int = 12
    vit_heads: int = 3
    conv_stem: bool = True  # convolutional patch embedding (False: the plain linear one)
    golden_reference: bool = False  # add each die's difference from its fab's golden die
    # with a golden die, the image encoder reads only the difference, not the die itself: the
    # layout, which differs from fab to fab, is then nothing the model can learn
    residual_only: bool = False
    # stage misalignment the golden-die match searches, in pixels of the contract's 256 px
    # images (a randomized fab misaligns by up to 6)
    reference_shift: int = 8
    process_dim: int = 48
    process_tokens: str = "per_parameter"  # or "single" (one projected token, as in the seed)
    vocab_size: int = 2000  # note tokenizer vocabulary (at most 10,000)
    max_note_len: int = 48
    text_layers: int = 2
    text_heads: int = 4
    fusion_heads: int = 4
    dropout: float = 0.1
    num_classes: int = 5
    baseline_weights: str | None = None  # local ResNet-18 weights; random init when absent
    # the CNN reads each die's difference from its fab's golden die instead of the die, as an
    # inspection tool's die-to-reference comparison does (still image only)
    baseline_golden: bool = False

    def __post_init__(self) -> None:
        if self.encoder_size and self.img_size % self.encoder_size:
            raise ValueError(
                f"model.encoder_size {self.encoder_size} must divide model.img_size {self.img_size}"
            )

    @property
    def encoder_stride(self) -> int:
        """How many input pixels, along each side, make one pixel the image encoders see."""
        return self.img_size // (self.encoder_size or self.img_size)

    @property
    def num_regions(self) -> int:
        """Visual tokens per die: the cells of the region map."""
        return ((self.encoder_size or self.img_size) // self.patch_size) ** 2


@dataclass
class TrainConfig:
    """Optimisation of both stages, losses and the operating point."""

    seed: int = 0
    batch_size: int = 64
    lr: float = 3e-4
    gate_lr: float = 0.02  # the zero-initialised fusion gates would open slowly at lr
    weight_decay: float = 0.05
    stage1_epochs: int = 1
    stage2_epochs: int = 10
    baseline_epochs: int = 10
    focal_gamma: float = 2.0
    lambda_contrastive: float = 0.1
    lambda_entropy: float = 0.01
    lambda_process: float = 0.5  # focal loss on the process embedding alone (deep supervision)
    lambda_image: float = 0.5  # focal loss on the image tokens alone (deep supervision)
    temperature: float = 0.1
    note_dropout: float = 0.2
    # share of training dies whose process parameters are shuffled among themselves
    # (model.data.shuffle_parameters): deviations are then learnt by size, not only by name
    process_shuffle: float = 0.0
    # strength (0 to 1) of the training dies' optics jitter: focus, sub-pixel offset, noise
    # (model.data.jitter_optics), so that another tool's optics do not look like defects
    optics_jitter: float = 0.0
    # stage2_epochs and baseline_epochs are maxima: training stops `patience` epochs after the
    # validation FPR at the escape target last fell by at least `min_delta`, and after every
    # `lr_patience` of them it restarts from the best weights at `lr_decay` times the rate.
    patience: int = 6
    lr_patience: int = 2
    lr_decay: float = 0.3
    min_delta: float = 0.01
    # Stage 2 validates and keeps an exponential moving average of the weights over about this
    # many epochs (0: the raw weights): the calibrated FPR then moves less from epoch to epoch.
    average_epochs: float = 1.0
    escape_target: float = 0.005
    # share of good dies the fab's review can absorb: the final threshold goes further down,
    # catching more, until the validation FPR reaches it (0: the escape target's threshold)
    fpr_budget: float = 0.0
    device: str = "auto"  # auto, cpu, cuda
    bf16: bool = True  # on CUDA only
    compile: bool = False  # torch.compile on CUDA
    threads: int = 0  # torch intra-op threads on CPU; 0 keeps the default
    max_batches_per_epoch: int = 0  # 0: the whole split
    # 0: the multimodal model's parameter-free image front end (the golden-die comparison at
    # full resolution, the shrink) runs in every step, on freshly augmented dies. n > 0: it runs
    # before training over n augmented views of each train die (epoch e trains on view e mod n)
    # and once over the val dies. On a CPU that front end costs more than the learned layers.
    # Memory: n x train dies x front-end size in float16, plus val dies in float32.
    front_end_views: int = 0


@dataclass
class GateConfig:
    """The release gates a candidate must pass before it is registered (rates on test)."""

    max_escape: float = 0.01  # defect escape rate, strictly below
    max_fpr: float = 0.15  # false-positive rate, strictly below
    max_flip_rate: float = 0.005  # INT8 vs FP32 decisions that differ, at most
    # May exceed the champion's escape rate by this. With a few hundred defective test dies one
    # die moves the rate by 0.3 points, and a champion that flags nearly every die (the CNN
    # early on) may miss none: a candidate one or two dies behind it is not shown to be worse.
    champion_escape_margin: float = 0.005
    champion_fpr_margin: float = 0.0  # may exceed the champion's FPR by this


@dataclass
class RunConfig:
    """Everything one training run needs; logged whole with the run."""

    name: str = "dieguard"
    data_dir: str = "data/default"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gates: GateConfig = field(default_factory=GateConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (for YAML, JSON and MLflow params)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys to values, e.g. ``{"train.lr": 3e-4}``."""
        return _flatten(self.to_dict())


class ConfigError(ValueError):
    """A config file or override names an unknown key or a value of the wrong type."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config and apply ``key=value`` overrides (dotted keys, YAML values).

    Args:
        path: YAML file; defaults only when None.
        overrides: e.g. ``["data_dir=/data/x", "train.lr=1e-3"]``.
    Returns:
        The validated RunConfig.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value")
        _set_dotted(raw, key.strip(), yaml.safe_load(value))
    return _build(RunConfig, raw, prefix="")


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig saved with `to_dict`."""
    return _build(RunConfig, json.loads(json.dumps(raw)), prefix="")


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(prefix + k for k in unknown)}")
    kwargs = {}
    for name, value in raw.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name} must be a mapping")
            kwargs[name] = _build(type(default), value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, default, prefix + name)
    try:
        return cls(**kwargs)
    except ValueError as err:  # a check across fields (see __post_init__)
        raise ConfigError(str(err)) from err


def _coerce(value: Any, default: Any, key: str) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, str):
        try:  # YAML reads "3e-4" (no dot) as text
            return float(value)
        except ValueError:
            pass
    if (
        isinstance(default, float)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        return float(value)
    if isinstance(value, type(default)) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{key} must be {type(default).__name__}, got {value!r}")


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
