"""Shapes, masking and gating of the multimodal detector and the vision baseline."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import timm
import torch

from model.config import ModelConfig
from model.network import (
    MultimodalDefectDetector,
    VisionBaseline,
    build_model,
    build_vision_baseline,
)
from model.schema import GOOD

B, P, L, C = 4, 48, 8, 5  # batch, process parameters, note length, classes
K = 16  # (32 / 8) ** 2 regions


def _cfg(**kw) -> ModelConfig:
    base = {
        "img_size": 32,
        "patch_size": 8,
        "embed_dim": 32,
        "vit_dim": 32,
        "vit_depth": 1,
        "vit_heads": 2,
        "vocab_size": 50,
        "max_note_len": L,
        "text_layers": 1,
        "text_heads": 2,
        "fusion_heads": 2,
        "num_classes": C,
    }
    return ModelConfig(**{**base, **kw})


def _batch(seed: int = 0, b: int = B):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, 32, 32, generator=g)
    logs = torch.randn(b, P, generator=g)
    tokens = torch.randint(1, 50, (b, L), generator=g)
    lengths = torch.tensor([L, 3, 0, 5][:b])  # sample 2 has no note
    mask = torch.arange(L) < lengths.unsqueeze(1)  # b, L
    return images, logs, tokens * mask, mask


def _model(seed: int = 0, gates: float | None = None, **kw) -> MultimodalDefectDetector:
    torch.manual_seed(seed)
    model = MultimodalDefectDetector(cfg=_cfg(**kw)).eval()
    if gates is not None:
        with torch.no_grad():
            model.fuse_process.alpha.fill_(gates)
            model.fuse_note.alpha.fill_(gates)
    return model


@pytest.mark.parametrize("mode, n_process", [("per_parameter", P), ("single", 1)])
def test_shapes_and_region_map(mode, n_process):
    model = _model(process_tokens=mode, gates=0.5)
    images, logs, tokens, mask = _batch()
    with torch.no_grad():
        logits, aux = model(images, logs, tokens, mask)
    assert logits.shape == (B, C)
    assert aux["region_map"].shape == (B, K)
    assert aux["process_attention"].shape == (B, K, n_process)
    assert aux["text_attention"].shape == (B, K, L)
    for key in ("image_embedding", "process_embedding", "fused_embedding"):
        assert aux[key].shape == (B, 32)
    rm = aux["region_map"]
    assert torch.allclose(rm.sum(1), torch.ones(B), atol=1e-5)
    assert (rm >= 0).all() and (rm <= 1).all()
    assert torch.all(aux["text_attention"][2] == 0)  # no note: zero attention
    assert torch.allclose(aux["text_attention"][0].sum(-1), torch.ones(K), atol=1e-5)


def test_no_note_tokens_gives_empty_text_attention():
    model = _model()
    images, logs, _, _ = _batch()
    with torch.no_grad():
        logits, aux = model(images, logs)
    assert logits.shape == (B, C)
    assert aux["text_attention"].shape == (B, K, 0)


def test_legacy_signature_builds_from_kwargs():
    model = MultimodalDefectDetector(img_size=32, patch_size=8, embed_dim=32, vocab_size=50)
    assert model.cfg.vocab_size == 50 and model.cfg.embed_dim == 32
    assert model.image_encoder.num_regions == K


@pytest.mark.parametrize("mode", ["per_parameter", "single"])
def test_finite_forward_backward_with_missing_and_empty_notes(mode):
    model = _model(process_tokens=mode, gates=0.5).train()
    images, logs, tokens, mask = _batch()
    logs[0, :10] = float("nan")
    logs[1] = float("nan")
    mask[:, :] = False
    mask[3, :2] = True  # one sample with a note, the rest all padding
    logits, aux = model(images, logs, tokens * mask, mask)
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(v).all() for v in aux.values())
    (logits.sum() + aux["image_embedding"].sum() + aux["process_embedding"].sum()).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


def test_zero_gates_ignore_process_and_notes():
    model = _model()
    images, logs, tokens, mask = _batch()
    with torch.no_grad():
        ref, _ = model(images, logs, tokens, mask)
        other, _ = model(images, torch.randn(B, P), torch.randint(1, 50, (B, L)), ~mask)
        none, _ = model(images, logs)
    assert torch.equal(ref, other)
    assert torch.equal(ref, none)


def test_mixed_batch_matches_per_sample():
    model = _model(gates=0.7)
    images, logs, tokens, mask = _batch()
    with torch.no_grad():
        batched, _ = model(images, logs, tokens, mask)
        for i in range(B):
            s = slice(i, i + 1)
            single, _ = model(images[s], logs[s], tokens[s], mask[s])
            assert torch.allclose(batched[i], single[0], atol=1e-5)
        no_note, _ = model(images[2:3], logs[2:3])
    assert torch.allclose(batched[2], no_note[0], atol=1e-5)
    assert not torch.allclose(batched[0], model(images[:1], logs[:1])[0][0], atol=1e-5)


def test_process_log_changes_output_once_gate_open():
    images, logs, tokens, mask = _batch()
    for gate, changes in ((0.0, False), (0.7, True)):
        model = _model(gates=gate)
        with torch.no_grad():
            a, _ = model(images, logs, tokens, mask)
            b, _ = model(images, logs + 1.0, tokens, mask)
        assert torch.allclose(a, b, atol=1e-6) != changes


def test_missing_cell_uses_missing_embedding():
    model = _model(gates=0.7)
    images, logs, tokens, mask = _batch()
    nan_logs = logs.clone()
    nan_logs[:, 5] = float("nan")
    flagged = torch.zeros(B, P, dtype=torch.bool)
    flagged[:, 5] = True
    with torch.no_grad():
        from_nan, _ = model(images, nan_logs, tokens, mask)
        from_flag, _ = model(images, logs, tokens, mask, process_missing=flagged)
        filled = logs.clone()
        filled[:, 5] = 123.0
        from_flag_other, _ = model(images, filled, tokens, mask, process_missing=flagged)
        from_value, _ = model(images, logs, tokens, mask)
        model.process_encoder.missing_embed[5].add_(torch.randn(32))  # not a mean shift
        moved, _ = model(images, nan_logs, tokens, mask)
    assert torch.isfinite(from_nan).all()
    assert torch.allclose(from_nan, from_flag, atol=1e-6)
    assert torch.allclose(from_flag, from_flag_other, atol=1e-6)  # value under mask unused
    assert not torch.allclose(from_nan, from_value, atol=1e-6)
    assert not torch.allclose(from_nan, moved, atol=1e-6)


def test_head_freeze_toggle():
    model = _model()
    model.set_head_trainable(False)
    assert not any(p.requires_grad for p in model.head_parameters())
    assert all(p.requires_grad for p in model.image_encoder.parameters())
    model.set_head_trainable(True)
    assert all(p.requires_grad for p in model.head_parameters())
    assert model.gates() == {"process": 0.0, "note": 0.0}


def test_baseline_shapes_and_build_model():
    cfg = _cfg()
    model = build_model(cfg, "baseline").eval()
    assert isinstance(model, VisionBaseline)
    images, logs, tokens, mask = _batch()
    with torch.no_grad():
        logits, aux = model(images, logs, tokens, mask)
    assert logits.shape == (B, C)
    assert aux["fused_embedding"].shape == (B, 512)
    assert all(p.requires_grad for p in model.parameters())
    assert isinstance(build_model(cfg, "multimodal"), MultimodalDefectDetector)
    with pytest.raises(ValueError):
        build_model(cfg, "other")


def test_baseline_loads_weights_and_freezes_three_stages(tmp_path):
    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    net = build_vision_baseline(num_classes=C, weights_path=path)
    assert torch.equal(net.layer4[0].conv1.weight, source.layer4[0].conv1.weight)
    assert net.fc.out_features == C
    for name in ("conv1", "bn1", "layer1", "layer2", "layer3"):
        assert not any(p.requires_grad for p in getattr(net, name).parameters()), name
    assert all(p.requires_grad for p in net.layer4.parameters())
    assert all(p.requires_grad for p in net.fc.parameters())

    model = VisionBaseline(path, C).train()
    assert not model.net.bn1.training and model.net.layer4[0].bn1.training
    model.set_head_trainable(False)
    assert not any(p.requires_grad for p in model.net.fc.parameters())


def test_process_logits_read_the_process_log_even_with_closed_gates():
    torch.manual_seed(0)
    model = MultimodalDefectDetector(cfg=_cfg()).eval()
    images, process = torch.rand(2, 3, 32, 32), torch.randn(2, 48)
    _, a = model(images, process)
    _, b = model(images, process + 3.0)
    assert model.gates() == {"process": 0.0, "note": 0.0}
    assert a["process_logits"].shape == (2, 5)
    assert not torch.allclose(a["process_logits"], b["process_logits"])


def test_encoders_work_at_encoder_size_while_inputs_keep_img_size():
    cfg = _cfg(img_size=64, encoder_size=32, golden_reference=True)
    assert cfg.encoder_stride == 2 and cfg.num_regions == K
    images, logs, tokens, mask = _batch()
    images = images.repeat_interleave(2, 2).repeat_interleave(2, 3)  # 64 px dies
    torch.manual_seed(0)
    with torch.no_grad():
        logits, aux = MultimodalDefectDetector(cfg=cfg).eval()(images, logs, tokens, mask)
        base_logits, _ = build_model(cfg, "baseline").eval()(images)
    assert logits.shape == base_logits.shape == (B, C)
    assert aux["region_map"].shape == (B, K)
    with pytest.raises(ValueError, match="must divide"):
        _cfg(img_size=64, encoder_size=48)


def test_residual_peaks_find_a_one_pixel_scratch_in_its_region():
    from model.encoders import ResidualPeaks

    peaks = ResidualPeaks(region_px=8, dim=4)
    residual = 0.1 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    residual[0, :, 20, 9:15] += 3.0  # a scratch one pixel wide in region (2, 1)
    assert peaks(peaks.pool(residual)).shape == (1, 16, 4)
    raw = peaks.pool(residual)[0, :, 0]  # (regions, channels)
    assert int(raw.argmax()) == 2 * 4 + 1  # regions in row-major order, as the region map
    assert raw.max() > 5 * raw.median()


def test_a_residual_only_encoder_cannot_tell_one_fabs_layout_from_anothers():
    from model.reference import standardize

    cfg = _cfg(golden_reference=True, reference_shift=0)
    layouts = torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def tokens(residual_only: bool, layout: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)
        encoder = MultimodalDefectDetector(cfg=replace(cfg, residual_only=residual_only))
        encoder = encoder.image_encoder.eval()
        encoder.reference.templates[:] = standardize(layout)[0]  # every fab makes this layout
        with torch.no_grad():
            return encoder(layout)

    # a good die, identical to its fab's golden die, in two fabs with different layouts
    assert torch.allclose(tokens(True, layouts[0]), tokens(True, layouts[1]), atol=1e-5)
    assert not torch.allclose(tokens(False, layouts[0]), tokens(False, layouts[1]), atol=1e-3)


def test_a_golden_baseline_reads_each_die_against_its_own_fabs_golden_die():
    torch.manual_seed(0)
    model = build_model(_cfg(baseline_golden=True, reference_shift=0), "baseline").eval()
    assert model.keeps_orientation  # its training keeps dies the way they face the template
    rng = np.random.default_rng(0)
    layouts = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)  # fab A's and fab B's
    model.fit_reference(np.repeat(layouts, 4, axis=0), ["A"] * 4 + ["B"] * 4, [GOOD] * 8)
    dies = torch.from_numpy(layouts).permute(0, 3, 1, 2).float() / 255
    flawed = dies[:1].clone()
    flawed[..., 12:16, 12:16] = 1.0  # a particle on fab A's die
    with torch.no_grad():
        good, _ = model(dies)
        assert torch.allclose(good[0], good[1], atol=1e-5)  # two layouts, both as their golden
        assert not torch.allclose(model(flawed)[0], good[:1], atol=1e-3)
