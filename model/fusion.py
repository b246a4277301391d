"""Fusion blocks: gated cross-attention from image regions to another modality, and the
attention pool whose weights are the per-region explanation map.
"""

from __future__ import annotations

import torch
from torch import nn


class GatedCrossAttention(nn.Module):
    """Image regions attend to context tokens; the result is added through a tanh gate.

    The gate `alpha` starts at 0, so a fresh block is the identity on the visual tokens.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(
        self,
        h: torch.Tensor,
        context: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        active: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            h: visual tokens (B, K, D).
            context: other-modality tokens (B, M, D).
            key_padding_mask: (B, M) bool, True = ignore that key.
            active: (B,) bool; inactive samples pass through unchanged. Defaults to the
                samples with at least one unmasked key.
        Returns:
            fused tokens (B, K, D) and attention weights (B, K, M), zero for inactive samples.
        """
        if key_padding_mask is not None:
            if active is None:
                active = ~key_padding_mask.all(dim=1)
            key_padding_mask = _open_first_key(key_padding_mask, active)
        q = self.norm_q(h)  # B, K, D
        kv = self.norm_kv(context)  # B, M, D
        out, weights = self.attn(q, kv, kv, key_padding_mask=key_padding_mask, need_weights=True)
        # out (B, K, D); weights (B, K, M), averaged over heads
        fused = h + torch.tanh(self.alpha) * self.drop(out)  # B, K, D
        if active is not None:
            keep = active.view(-1, 1, 1)  # B, 1, 1
            fused = torch.where(keep, fused, h)
            weights = torch.where(keep, weights, torch.zeros_like(weights))  # B, K, M
        return fused, weights

    def gate(self) -> float:
        """The current gate value tanh(alpha)."""
        return float(torch.tanh(self.alpha.detach()))


def _open_first_key(key_padding_mask: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Unmask key 0 on inactive rows so their softmax stays finite (their output is discarded)."""
    first = torch.zeros_like(key_padding_mask)
    first[:, 0] = True
    return key_padding_mask & ~(first & ~active.view(-1, 1))


class AttentionPool(nn.Module):
    """Pools tokens by gated attention; the softmax weights form the region map.

    Each token is scored by a small learned scorer, `w . tanh(V LN(h))`, as in
    attention-based multiple-instance pooling: a defect occupies one or two of the die's
    regions, and a pool that can put most of its weight there keeps the defect from being
    averaged away by the regions that show nothing. The scorer's output layer starts at zero,
    so a fresh pool is the plain mean.
    """

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim // 2
        self.norm = nn.LayerNorm(dim)
        self.key = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: tokens (B, K, D). Returns: pooled (B, D) and weights (B, K), rows summing to 1."""
        scores = self.score(torch.tanh(self.key(self.norm(tokens)))).squeeze(-1)  # B, K
        weights = scores.softmax(dim=-1)  # B, K
        pooled = (weights.unsqueeze(-1) * tokens).sum(dim=1)  # B, D
        return pooled, weights
