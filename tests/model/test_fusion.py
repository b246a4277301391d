"""The attention pool: a plain mean when fresh, and it learns to weigh the one region that
shows a defect (the region map operators read is worth reading)."""

from __future__ import annotations

import torch
from torch import nn

from model.fusion import AttentionPool

D, K = 32, 16  # token dim, regions


def test_a_fresh_pool_is_the_plain_mean():
    tokens = torch.randn(3, K, D)
    pooled, weights = AttentionPool(D)(tokens)
    assert torch.allclose(weights, torch.full((3, K), 1 / K))
    assert torch.allclose(pooled, tokens.mean(dim=1), atol=1e-6)


def test_the_pool_learns_to_put_its_weight_on_the_defective_region():
    """Half the dies carry a faint signature in one random region; trained at the models'
    learning rate, the pool gives that region most of the weight (uniform would be 1/16)."""
    torch.manual_seed(0)
    pool, head = AttentionPool(D), nn.Linear(D, 2)
    optimizer = torch.optim.AdamW([*pool.parameters(), *head.parameters()], lr=1e-3)
    signature = torch.randn(D)

    def batch(n: int):
        tokens, defective = torch.randn(n, K, D), torch.randint(0, 2, (n,))
        where = torch.randint(0, K, (n,))
        tokens[torch.arange(n), where] += defective[:, None] * signature * 0.7
        return tokens, defective, where

    for _ in range(200):
        tokens, defective, _ = batch(64)
        loss = nn.functional.cross_entropy(head(pool(tokens)[0]), defective)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokens, defective, where = batch(512)
    with torch.no_grad():
        _, weights = pool(tokens)
    on_defect = weights[torch.arange(512), where][defective == 1]
    assert on_defect.mean() > 0.4
