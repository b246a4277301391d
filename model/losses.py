"""Training objectives: focal loss with class weights, InfoNCE image-process alignment,
region-map entropy, and `MultimodalLoss`, which combines them per training stage.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def class_alpha(labels: np.ndarray | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights, normalised to mean 1 over the classes present.

    Classes absent from `labels` get the largest weight of the present classes (the rarest
    seen class), so a class first met at validation time is not ignored.

    Args:
        labels: integer class ids, any shape.
        num_classes: number of classes.
    Returns:
        float32 weights (num_classes,); all ones when `labels` is empty.
    """
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).flatten()
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes].float()
    present = counts > 0
    if not present.any():
        return torch.ones(num_classes)
    alpha = torch.zeros(num_classes)
    alpha[present] = 1.0 / counts[present]
    alpha[present] /= alpha[present].mean()
    alpha[~present] = alpha[present].max()
    return alpha


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: torch.Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss -alpha_y (1 - p_y)^gamma log p_y, from log_softmax.

    Args:
        logits: (B, C).
        targets: (B,) class ids.
        alpha: optional (C,) class weights.
        gamma: focusing exponent; 0 with alpha None is cross-entropy.
        reduction: "mean" (plain batch mean), "sum" or "none".
    Returns:
        scalar loss, or (B,) with reduction "none".
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # B, C
    logp_y = logp.gather(1, targets.long().unsqueeze(1)).squeeze(1)  # B
    focus = (1.0 - logp_y.exp()).clamp_min(0.0) ** gamma  # B
    loss = -focus * logp_y  # B
    if alpha is not None:
        loss = loss * alpha.to(loss.device, loss.dtype)[targets.long()]
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction {reduction!r}")


def info_nce(
    a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1, symmetric: bool = False
) -> torch.Tensor:
    """InfoNCE aligning a_i with b_i against the other b_j in the batch (cosine similarity).

    Args:
        a, b: (B, D) paired embeddings.
        temperature: softmax temperature.
        symmetric: average the a->b and b->a directions.
    Returns:
        scalar loss -mean_i log softmax_j(sim(a_i, b_j) / T)[i].
    """
    a = F.normalize(a.float(), dim=-1)  # B, D
    b = F.normalize(b.float(), dim=-1)  # B, D
    sim = a @ b.t() / temperature  # B, B
    targets = torch.arange(sim.shape[0], device=sim.device)
    loss = F.cross_entropy(sim, targets)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(sim.t(), targets))
    return loss


def attention_entropy(region_map: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Args: region_map (B, K), rows summing to 1. Returns: mean over batch of -sum a log a."""
    a = region_map.float()
    return -(a * a.clamp_min(eps).log()).sum(dim=-1).mean()


class MultimodalLoss(nn.Module):
    """Stage 1: contrastive alignment only. Stage 2: focal + weighted contrastive + entropy.

    Terms whose inputs are missing from `aux` (the vision baseline has no embeddings or
    region map) are skipped, so the baseline trains on focal loss alone.
    """

    def __init__(
        self,
        alpha: torch.Tensor | None = None,
        gamma: float = 2.0,
        lambda_contrastive: float = 0.1,
        lambda_entropy: float = 0.01,
        temperature: float = 0.1,
        symmetric: bool = False,
        lambda_process: float = 0.0,
        lambda_image: float = 0.0,
    ) -> None:
        super().__init__()
        self.deep_supervision = {"process": lambda_process, "image": lambda_image}
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha).float())
        self.gamma = gamma
        self.lambda_contrastive = lambda_contrastive
        self.lambda_entropy = lambda_entropy
        self.temperature = temperature
        self.symmetric = symmetric

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        aux: dict[str, torch.Tensor],
        stage: int = 2,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Args: logits (B, C); targets (B,); aux from the model; stage 1 or 2.

        Returns: total loss (scalar tensor) and its parts as floats.
        """
        has_pair = "image_embedding" in aux and "process_embedding" in aux
        parts: dict[str, torch.Tensor] = {}
        if has_pair:
            parts["contrastive"] = info_nce(
                aux["image_embedding"], aux["process_embedding"], self.temperature, self.symmetric
            )
        if stage == 1:
            if not has_pair:
                raise ValueError("stage 1 needs image_embedding and process_embedding in aux")
            total = parts["contrastive"]
        elif stage == 2:
            parts["focal"] = focal_loss(logits, targets, self.alpha, self.gamma)
            total = parts["focal"]
            if has_pair:
                total = total + self.lambda_contrastive * parts["contrastive"]
            if "region_map" in aux:
                parts["entropy"] = attention_entropy(aux["region_map"])
                total = total + self.lambda_entropy * parts["entropy"]
            for name, weight in self.deep_supervision.items():  # one modality's own head
                if f"{name}_logits" in aux and weight:
                    parts[name] = focal_loss(aux[f"{name}_logits"], targets, self.alpha, self.gamma)
                    total = total + weight * parts[name]
        else:
            raise ValueError(f"unknown stage {stage}; expected 1 or 2")
        floats = {k: float(v.detach()) for k, v in parts.items()}
        floats["total"] = float(total.detach())
        return total, floats
