"""The classifiers: the multimodal defect detector, the ResNet-18 vision baseline, and
`build_model`, which picks one from a ModelConfig.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from model.config import ModelConfig
from model.encoders import (
    ImageEncoder,
    ImageNormalize,
    NoteEncoder,
    ProcessEncoder,
    golden_reference,
    shrink,
)
from model.fusion import AttentionPool, GatedCrossAttention
from model.reference import GoldenReference
from model.schema import FABS, GOOD

BASELINE_FROZEN = ("conv1", "bn1", "layer1", "layer2", "layer3")


class MultimodalDefectDetector(nn.Module):
    """Die image + process log + operator note -> defect class, with a region map.

    Visual tokens attend first to process tokens, then to note tokens, each through a
    zero-initialised gate; an attention pool and a linear head give the logits.
    """

    reads_notes = True

    def __init__(
        self,
        img_size: int = 256,
        patch_size: int = 16,
        embed_dim: int = 256,
        process_dim: int = 48,
        vocab_size: int = 10000,
        num_classes: int = 5,
        cfg: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        if cfg is None:
            cfg = ModelConfig(
                img_size=img_size,
                patch_size=patch_size,
                embed_dim=embed_dim,
                process_dim=process_dim,
                vocab_size=vocab_size,
                num_classes=num_classes,
            )
        self.cfg = cfg
        D = cfg.embed_dim
        self.image_encoder = ImageEncoder(cfg)
        self.process_encoder = ProcessEncoder(cfg)
        self.note_encoder = NoteEncoder(cfg)
        self.fuse_process = GatedCrossAttention(D, cfg.fusion_heads, cfg.dropout)
        self.fuse_note = GatedCrossAttention(D, cfg.fusion_heads, cfg.dropout)
        self.image_proj = nn.Linear(D, D)
        self.pool = AttentionPool(D)
        self.norm = nn.LayerNorm(D)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(D, cfg.num_classes)
        # Deep supervision of the process encoder: its tokens carry the defect signal before
        # the zero-initialised gate opens, so the gate has something worth opening for.
        self.process_head = nn.Linear(D, cfg.num_classes)
        # The same for the image alone: a die without a note must be judged on what it shows.
        self.image_pool = AttentionPool(D)
        self.image_head = nn.Linear(D, cfg.num_classes)

    def forward_features(
        self,
        images: torch.Tensor | None,
        process_logs: torch.Tensor,
        note_tokens: torch.Tensor | None = None,
        note_mask: torch.Tensor | None = None,
        process_missing: torch.Tensor | None = None,
        front_end: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Args: as `forward`. Returns: pooled fused vector (B, D) and the aux dict."""
        encoder = self.image_encoder
        h_v = encoder(images) if front_end is None else encoder.encode(*front_end)  # B, K, D
        B, K, _ = h_v.shape  # batch, regions, dim
        h_p, process_embedding = self.process_encoder(process_logs, process_missing)  # B, P, D
        h_v2, process_attention = self.fuse_process(h_v, h_p)  # B, K, D ; B, K, P
        if note_tokens is None:
            h_v3 = h_v2
            text_attention = h_v.new_zeros(B, K, 0)
        else:
            if note_mask is None:
                note_mask = note_tokens != 0
            note_mask = note_mask.bool()  # B, L
            h_t = self.note_encoder(note_tokens, note_mask)  # B, L, D
            h_v3, text_attention = self.fuse_note(
                h_v2, h_t, key_padding_mask=~note_mask, active=note_mask.any(dim=1)
            )  # B, K, D ; B, K, L
        pooled, region_map = self.pool(h_v3)  # B, D ; B, K
        aux = {
            "region_map": region_map,
            "process_attention": process_attention,
            "text_attention": text_attention,
            "image_embedding": self.image_proj(h_v.mean(dim=1)),
            "process_embedding": process_embedding,
            "process_logits": self.process_head(process_embedding),
            "image_logits": self.image_head(self.image_pool(h_v)[0]),
            "fused_embedding": pooled,
        }
        return pooled, aux

    @property
    def keeps_orientation(self) -> bool:
        """True when images are compared with golden dies: no flips or turns in training."""
        return self.image_encoder.keeps_orientation

    def fit_reference(self, images, fabs, labels) -> None:
        """Fit the golden dies from good training dies (no-op without golden_reference).

        Args: images uint8 (N, H, W, 3); fabs (N,) fab names; labels (N,) classes.
        """
        if self.image_encoder.reference is not None:
            fit_golden_dies(self.image_encoder.reference, images, fabs, labels)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Args: pooled (B, D). Returns: logits (B, num_classes)."""
        return self.head(self.head_drop(self.norm(pooled)))

    def forward(
        self,
        images: torch.Tensor | None,
        process_logs: torch.Tensor,
        note_tokens: torch.Tensor | None = None,
        note_mask: torch.Tensor | None = None,
        process_missing: torch.Tensor | None = None,
        front_end: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Args:
            images: (B, 3, H, W) in [0, 1]; None when `front_end` is given.
            process_logs: (B, P) z-scored, NaN allowed where missing.
            note_tokens: (B, L) int64 ids, 0 = padding; None when no sample has a note.
            note_mask: (B, L) bool, True on real tokens; an all-False row means no note.
            process_missing: (B, P) bool, True = missing; derived from NaN when None.
            front_end: `image_encoder.front_end(images)` computed beforehand (training
                computes it once per split), in place of the images.
        Returns:
            logits (B, num_classes) and the aux dict (region_map, process_attention,
            text_attention, image_embedding, process_embedding, fused_embedding).
        """
        pooled, aux = self.forward_features(
            images, process_logs, note_tokens, note_mask, process_missing, front_end
        )
        return self.forward_head(pooled), aux

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the classification head (final norm and linear layer)."""
        return [*self.norm.parameters(), *self.head.parameters()]

    def set_head_trainable(self, flag: bool) -> None:
        """Freeze (False) or unfreeze (True) the classification head."""
        for p in self.head_parameters():
            p.requires_grad_(flag)

    def gates(self) -> dict[str, float]:
        """Current tanh gate values of the two fusion blocks, for logging."""
        return {"process": self.fuse_process.gate(), "note": self.fuse_note.gate()}


def build_vision_baseline(
    num_classes: int = 5, weights_path: str | Path | None = None
) -> nn.Module:
    """A timm ResNet-18, randomly initialised or loaded from a local state dict.

    Args:
        num_classes: output classes.
        weights_path: local state dict (e.g. ImageNet weights). When given, `fc.*` entries of
            another shape are skipped and conv1/bn1/layer1-3 are frozen.
    Returns:
        The ResNet-18 module.
    """
    net = timm.create_model("resnet18", pretrained=False, num_classes=num_classes)
    if weights_path is None:
        return net
    state = _read_state_dict(weights_path)
    own = net.state_dict()
    state = {
        k: v
        for k, v in state.items()
        if not (k.startswith("fc.") and k in own and v.shape != own[k].shape)
    }
    missing, unexpected = net.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith("fc.")] + list(unexpected)
    if bad:
        raise ValueError(f"{weights_path}: keys do not match resnet18: {bad[:5]}")
    for name in BASELINE_FROZEN:
        for p in getattr(net, name).parameters():
            p.requires_grad_(False)
    return net


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def fit_golden_dies(reference: GoldenReference, images, fabs, labels) -> None:
    """Fit one golden die per fab from the good dies among `images` (uint8 (N, H, W, 3))."""
    index = {fab: i for i, fab in enumerate(FABS)}
    groups = np.array([index.get(f, -1) for f in fabs])
    groups[np.asarray(labels) != GOOD] = -1
    reference.fit(images, groups)


class VisionBaseline(nn.Module):
    """Image-only ResNet-18 with the multimodal model's call signature (extra inputs ignored).

    With a golden reference it reads each die's difference from its fab's golden die (three
    channels, so ImageNet weights still fit) instead of the die.
    """

    reads_notes = False

    def __init__(
        self,
        weights_path: str | Path | None = None,
        num_classes: int = 5,
        stride: int = 1,
        reference: GoldenReference | None = None,
    ) -> None:
        super().__init__()
        self.normalize = ImageNormalize()
        self.reference = reference
        self.stride = stride  # input pixels per pixel the network sees, along each side
        self.net = build_vision_baseline(num_classes, weights_path)
        self.net.to(memory_format=torch.channels_last)  # faster convolutions on CPU and GPU

    def forward(
        self,
        images: torch.Tensor,
        process_logs: torch.Tensor | None = None,
        note_tokens: torch.Tensor | None = None,
        note_mask: torch.Tensor | None = None,
        process_missing: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Args: images (B, 3, H, W) in [0, 1]; the rest ignored.

        Returns: logits (B, num_classes) and {"fused_embedding": pooled features (B, 512)}.
        """
        x = self.normalize(images) if self.reference is None else self.reference(images)[:, 3:]
        x = shrink(x, self.stride).contiguous(memory_format=torch.channels_last)
        feats = self.net.forward_features(x)  # B, 512, h, w
        pooled = self.net.forward_head(feats, pre_logits=True)  # B, 512
        return self.net.fc(pooled), {"fused_embedding": pooled}

    @property
    def keeps_orientation(self) -> bool:
        """True when images are compared with golden dies: no flips or turns in training."""
        return self.reference is not None

    def fit_reference(self, images, fabs, labels) -> None:
        """Fit the golden dies from good training dies (no-op without a reference)."""
        if self.reference is not None:
            fit_golden_dies(self.reference, images, fabs, labels)

    def train(self, mode: bool = True) -> VisionBaseline:
        """Sets train mode, keeping batch norms of frozen stages on their running statistics."""
        super().train(mode)
        for m in self.net.modules():
            if isinstance(m, nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
                m.eval()
        return self

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the final linear layer."""
        return list(self.net.fc.parameters())

    def set_head_trainable(self, flag: bool) -> None:
        """Freeze (False) or unfreeze (True) the final linear layer."""
        for p in self.head_parameters():
            p.requires_grad_(flag)


def build_model(cfg: ModelConfig, kind: str = "multimodal") -> nn.Module:
    """Args: cfg the model config; kind "multimodal" or "baseline". Returns: the model."""
    if kind == "multimodal":
        return MultimodalDefectDetector(cfg=cfg)
    if kind == "baseline":
        reference = golden_reference(cfg) if cfg.baseline_golden else None
        return VisionBaseline(cfg.baseline_weights, cfg.num_classes, cfg.encoder_stride, reference)
    raise ValueError(f"unknown model kind {kind!r}; expected 'multimodal' or 'baseline'")
