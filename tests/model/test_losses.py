"""Focal loss, InfoNCE, attention entropy, class weights and the staged combined loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.losses import MultimodalLoss, attention_entropy, class_alpha, focal_loss, info_nce


def test_focal_gamma_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=g)
    targets = torch.randint(0, 5, (16,), generator=g)
    assert torch.allclose(focal_loss(logits, targets, gamma=0.0), F.cross_entropy(logits, targets))


def test_focal_hand_computed():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 0])
    alpha = torch.tensor([0.5, 2.0])
    p0 = math.exp(2) / (math.exp(2) + 1)  # sample 0, true class 0
    p1 = 1 / (1 + math.e)  # sample 1, true class 0
    expected = [0.5 * (1 - p) ** 2 * -math.log(p) for p in (p0, p1)]
    got = focal_loss(logits, targets, alpha=alpha, gamma=2.0, reduction="none")
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)
    mean = focal_loss(logits, targets, alpha=alpha, gamma=2.0)
    assert mean.item() == pytest.approx(sum(expected) / 2, abs=1e-6)


def test_focal_is_finite_for_confident_logits():
    logits = torch.tensor([[100.0, -100.0]], requires_grad=True)
    loss = focal_loss(logits, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_info_nce_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    t = 0.5
    c = 1 / math.sqrt(2)  # cosine of 45 degrees
    sims = [[1.0, c], [0.0, c]]  # cos(a_i, b_j)

    def row_loss(row, i):
        return -(row[i] / t - math.log(sum(math.exp(s / t) for s in row)))

    one_way = (row_loss(sims[0], 0) + row_loss(sims[1], 1)) / 2
    assert info_nce(a, b, temperature=t).item() == pytest.approx(one_way, abs=1e-6)
    cols = [[sims[0][0], sims[1][0]], [sims[0][1], sims[1][1]]]
    other_way = (row_loss(cols[0], 0) + row_loss(cols[1], 1)) / 2
    both = info_nce(a, b, temperature=t, symmetric=True).item()
    assert both == pytest.approx((one_way + other_way) / 2, abs=1e-6)


def test_attention_entropy_uniform_and_one_hot():
    K = 16
    uniform = torch.full((3, K), 1.0 / K)
    assert attention_entropy(uniform).item() == pytest.approx(math.log(K), abs=1e-5)
    one_hot = F.one_hot(torch.tensor([0, 5, 15]), K).float()
    assert attention_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)


def test_class_alpha():
    labels = np.array([0, 0, 0, 0, 1, 1, 3, 3])  # class 2 and 4 absent
    alpha = class_alpha(labels, 5)
    inv = np.array([1 / 4, 1 / 2, 1 / 2])
    inv = inv / inv.mean()
    assert alpha[[0, 1, 3]].tolist() == pytest.approx(inv.tolist(), abs=1e-6)
    assert alpha[2].item() == pytest.approx(inv.max()) and alpha[4].item() == alpha[2].item()
    assert torch.equal(class_alpha(torch.tensor([1, 1]), 3), torch.ones(3))
    assert torch.equal(class_alpha(np.array([], dtype=int), 3), torch.ones(3))


def _aux(b: int = 4, d: int = 8, k: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "image_embedding": torch.randn(b, d, generator=g),
        "process_embedding": torch.randn(b, d, generator=g),
        "region_map": torch.randn(b, k, generator=g).softmax(-1),
        "fused_embedding": torch.randn(b, d, generator=g),
    }


def test_multimodal_loss_stages():
    logits = torch.randn(4, 5)
    targets = torch.tensor([0, 1, 2, 3])
    aux = _aux()
    loss = MultimodalLoss(None, 2.0, lambda_contrastive=0.1, lambda_entropy=0.01, temperature=0.1)
    total1, parts1 = loss(logits, targets, aux, stage=1)
    contrastive = info_nce(aux["image_embedding"], aux["process_embedding"], 0.1)
    assert total1.item() == pytest.approx(contrastive.item(), abs=1e-6)
    assert "focal" not in parts1
    total2, parts2 = loss(logits, targets, aux, stage=2)
    expected = (
        focal_loss(logits, targets)
        + 0.1 * contrastive
        + 0.01 * attention_entropy(aux["region_map"])
    )
    assert total2.item() == pytest.approx(expected.item(), abs=1e-6)
    assert set(parts2) == {"focal", "contrastive", "entropy", "total"}
    assert all(isinstance(v, float) for v in parts2.values())


def test_multimodal_loss_baseline_is_focal_only():
    logits = torch.randn(4, 5)
    targets = torch.tensor([0, 1, 2, 4])
    alpha = class_alpha(targets.numpy(), 5)
    loss = MultimodalLoss(alpha)
    total, parts = loss(logits, targets, {"fused_embedding": torch.randn(4, 512)}, stage=2)
    assert total.item() == pytest.approx(focal_loss(logits, targets, alpha).item(), abs=1e-6)
    assert set(parts) == {"focal", "total"}
    with pytest.raises(ValueError):
        loss(logits, targets, {"fused_embedding": torch.randn(4, 512)}, stage=1)


def test_process_deep_supervision_adds_a_focal_term_in_stage_two_only():
    logits, targets = torch.randn(4, 5), torch.tensor([0, 1, 2, 4])
    aux = _aux() | {"process_logits": torch.randn(4, 5)}
    loss = MultimodalLoss(None, 2.0, 0.1, 0.01, 0.1, lambda_process=0.5)
    without = MultimodalLoss(None, 2.0, 0.1, 0.01, 0.1)
    total, parts = loss(logits, targets, aux, stage=2)
    expected = without(logits, targets, aux, stage=2)[0] + 0.5 * focal_loss(
        aux["process_logits"], targets
    )
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)
    assert "process" in parts
    assert "process" not in loss(logits, targets, aux, stage=1)[1]
