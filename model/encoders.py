"""Modality encoders: a ViT over die images, process-log tokens and operator-note tokens.

Each encoder maps its raw input to a sequence of `embed_dim` tokens; fusion happens elsewhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from model.config import ModelConfig
from model.reference import GoldenReference
from model.schema import FABS, IMAGE_SIZE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNormalize(nn.Module):
    """Maps images in [0, 1] to ImageNet-normalised values (kept inside the network for export)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class ImageEncoder(nn.Module):
    """A patch ViT (no class token, randomly initialised) followed by a projection to embed_dim.

    With a golden die, each token also carries its region's residual peaks (ResidualPeaks).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.normalize = ImageNormalize()
        self.reference = self.peaks = None
        channels = 3
        if cfg.golden_reference:
            self.reference = golden_reference(cfg)
            self.peaks = ResidualPeaks(cfg.patch_size * cfg.encoder_stride, cfg.embed_dim)
            # the standardised image and its difference from the golden die, or the latter
            channels = 3 if cfg.residual_only else 6
        self.residual_only = cfg.golden_reference and cfg.residual_only
        self.stride = cfg.encoder_stride
        self.vit = VisionTransformer(
            img_size=cfg.img_size // self.stride,
            patch_size=cfg.patch_size,
            in_chans=channels,
            embed_dim=cfg.vit_dim,
            depth=cfg.vit_depth,
            num_heads=cfg.vit_heads,
            num_classes=0,
            class_token=False,
            global_pool="",
        )
        if cfg.conv_stem:
            self.vit.patch_embed.proj = conv_stem(cfg.patch_size, cfg.vit_dim, channels)
        self.proj = nn.Linear(cfg.vit_dim, cfg.embed_dim)
        self.num_regions = cfg.num_regions

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images (B, 3, H, W) in [0, 1]. Returns: visual tokens (B, K, D)."""
        return self.encode(*self.front_end(images))

    @property
    def keeps_orientation(self) -> bool:
        """True when images are compared with golden dies: no flips or turns in training."""
        return self.reference is not None

    def front_end(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The parameter-free first steps: normalisation or the golden-die comparison, then
        the shrink to encoder size, and each region's residual peaks.

        Args: images (B, 3, H, W) in [0, 1].
        Returns: the ViT's input (B, C, H / stride, W / stride) and the peaks (B, K, 3), or
            None without a golden die.
        """
        x = self.normalize(images) if self.reference is None else self.reference(images)
        peaks = None if self.peaks is None else self.peaks.pool(x[:, 3:])
        if self.residual_only:
            x = x[:, 3:]
        return shrink(x, self.stride), peaks

    def encode(self, pixels: torch.Tensor, peaks: torch.Tensor | None) -> torch.Tensor:
        """Args: the output of `front_end`. Returns: visual tokens (B, K, D)."""
        tokens = self.proj(self.vit.forward_features(pixels))  # B, K, D
        return tokens if peaks is None else tokens + self.peaks(peaks)


class ResidualPeaks(nn.Module):
    """Each region's peak golden-die residual, per channel, embedded as a token feature.

    A scratch one pixel wide barely moves a region's average, so it fades in a patch
    embedding; its peak, taken over 2x2 pixel blocks (the block mean tames the noise of
    single pixels and keeps half of a one-pixel line), stands out.
    """

    def __init__(self, region_px: int, dim: int) -> None:
        super().__init__()
        if region_px % 2:
            raise ValueError(f"residual peaks need an even region size, got {region_px}")
        self.region_px = region_px
        self.embed = nn.Sequential(nn.Linear(3, dim), nn.GELU(), nn.Linear(dim, dim))

    def pool(self, residual: torch.Tensor) -> torch.Tensor:
        """Args: residual (B, 3, H, W). Returns: peaks (B, K, 3), regions in row-major order."""
        blocks = F.avg_pool2d(residual, 2).abs()
        peaks = F.max_pool2d(blocks, self.region_px // 2)  # B, 3, H / region, W / region
        return peaks.flatten(2).transpose(1, 2)

    def forward(self, peaks: torch.Tensor) -> torch.Tensor:
        """Args: peaks (B, K, 3) from `pool`. Returns: their embedding (B, K, D)."""
        return self.embed(peaks)


def golden_reference(cfg: ModelConfig) -> GoldenReference:
    """One golden die per fab at img_size, searched over the configured stage misalignment."""
    shift = math.ceil(cfg.reference_shift * cfg.img_size / IMAGE_SIZE)
    return GoldenReference(len(FABS), cfg.img_size, shift)


def shrink(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Average each stride x stride block of (B, C, H, W): one pixel per block."""
    return x if stride == 1 else F.avg_pool2d(x, stride)


def conv_stem(patch_size: int, dim: int, in_chans: int = 3) -> nn.Sequential:
    """Stride-2 3x3 convolutions down to one token per patch, then a 1x1 projection.

    Replaces the ViT's single linear patch projection: early convolutions make a
    transformer trained from scratch learn local defects far sooner.
    """
    steps = patch_size.bit_length() - 1
    if 2**steps != patch_size:
        raise ValueError(f"a conv stem needs a power-of-two patch size, got {patch_size}")
    layers, c_in = [], in_chans
    for i in range(steps):
        c_out = max(16, dim >> (steps - 1 - i))
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]
        c_in = c_out
    return nn.Sequential(*layers, nn.Conv2d(c_in, dim, 1))


class ProcessEncoder(nn.Module):
    """Process-log encoder; "per_parameter" gives one token per parameter, "single" one token.

    Per-parameter token i is `value_i * w_i + f(value_i) + e_i`, or `m_i + e_i` when the cell
    is missing. The shared small MLP `f` lets a token's direction, not only its length, say how
    far out the value is: the LayerNorm that follows would otherwise erase that magnitude.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        P, D = cfg.process_dim, cfg.embed_dim  # parameters, dim
        self.mode = cfg.process_tokens
        if self.mode == "per_parameter":
            self.value_weight = nn.Parameter(torch.zeros(P, D))
            self.param_embed = nn.Parameter(torch.zeros(P, D))
            self.missing_embed = nn.Parameter(torch.zeros(P, D))
            for p in (self.value_weight, self.param_embed, self.missing_embed):
                trunc_normal_(p, std=0.02)
            self.value_mlp = nn.Sequential(nn.Linear(1, D), nn.GELU(), nn.Linear(D, D))
            self.norm = nn.LayerNorm(D)
            self.mixer = nn.TransformerEncoderLayer(
                D, cfg.fusion_heads, 2 * D, cfg.dropout, "gelu", batch_first=True, norm_first=True
            )
        elif self.mode == "single":
            self.proj = nn.Linear(2 * P, D)  # values and the missing mask
        else:
            raise ValueError(f"unknown process_tokens mode {self.mode!r}")
        self.pool_proj = nn.Linear(D, D)

    def forward(
        self, values: torch.Tensor, missing: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: values (B, P) z-scored, NaN where missing; missing (B, P) bool or None.

        Returns: tokens (B, P, D) or (B, 1, D) in "single" mode, and pooled embedding (B, D).
        """
        missing = torch.isnan(values) if missing is None else missing | torch.isnan(values)
        x = torch.where(missing, torch.zeros_like(values), values)  # B, P
        if self.mode == "per_parameter":
            v = x.unsqueeze(-1)  # B, P, 1
            tokens = v * self.value_weight + self.value_mlp(v)  # B, P, D
            filled = self.missing_embed.expand_as(tokens)  # B, P, D
            tokens = torch.where(missing.unsqueeze(-1), filled, tokens) + self.param_embed
            tokens = self.mixer(self.norm(tokens))  # B, P, D
        else:
            x = torch.cat([x, missing.to(x.dtype)], dim=-1)  # B, 2P
            tokens = self.proj(x).unsqueeze(1)  # B, 1, D
        return tokens, self.pool_proj(tokens.mean(1))


class NoteEncoder(nn.Module):
    """Token + learned position embeddings and a small Transformer over operator-note tokens."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        D = cfg.embed_dim
        self.tok_embed = nn.Embedding(cfg.vocab_size, D, padding_idx=0)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_note_len, D))
        trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            D, cfg.text_heads, 4 * D, cfg.dropout, "gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args: tokens (B, L) int64, 0 = padding; mask (B, L) bool, True on real tokens.

        Returns: note tokens (B, L, D); rows with no real token are finite but meaningless.
        """
        L = tokens.shape[1]  # note length
        pad = _safe_padding_mask(mask)  # B, L
        x = self.tok_embed(tokens) + self.pos_embed[:, :L]  # B, L, D
        x = self.encoder(x, src_key_padding_mask=pad)  # B, L, D
        return self.norm(x)


def _safe_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """Padding mask (True = ignore) that leaves position 0 open on rows with no real token."""
    empty = ~mask.any(dim=1, keepdim=True)  # B, 1
    first = torch.zeros_like(mask)
    first[:, 0] = True
    return ~mask & ~(first & empty)
