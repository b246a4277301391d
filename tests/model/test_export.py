from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch

from model.export import check_parity, example_inputs, export_onnx
from model.network import build_model
from model.onnx_runtime import INPUTS, OUTPUTS, load_session, onnx_inputs, run_session
from model.predict import model_inputs

PROB_TOL = 1e-4  # ONNX Runtime vs PyTorch, FP32 on the CPU: max abs probability difference
LOGIT_TOL = 1e-4


@pytest.fixture(scope="module")
def exported(smoke_prepared, smoke_multimodal, tmp_path_factory):
    """The session's smoke multimodal model, exported once with the default exporter."""
    cfg, data = smoke_prepared
    path = export_onnx(smoke_multimodal.model, cfg, tmp_path_factory.mktemp("export") / "m.onnx")
    return cfg, data.datasets["test"], smoke_multimodal, path


def test_onnx_matches_pytorch_on_real_dies_with_and_without_notes(exported):
    _, test, result, path = exported
    has_note = test.note_mask.any(dim=1)
    assert has_note.any() and (~has_note).any()  # both paths are exercised
    parity = check_parity(result.model, path, test, result.operating_point.threshold, n=120)
    assert parity["n"] == 120
    for key in ("notes", "no_notes"):
        assert parity[key]["max_abs_prob"] < PROB_TOL, key
        assert parity[key]["max_abs_logit"] < LOGIT_TOL, key
        assert parity[key]["decision_agreement"] == 1.0, key


def test_onnx_no_note_path_equals_the_pytorch_model_without_notes(exported):
    _, test, result, path = exported
    session = load_session(path)
    batch = test.__getitems__(list(range(16)))
    got = run_session(session, onnx_inputs(batch, with_notes=False))
    inputs = model_inputs(batch, torch.device("cpu"))
    inputs["note_tokens"] = inputs["note_mask"] = None  # the image + process path
    with torch.no_grad():
        logits, aux = result.model.eval()(**inputs)
    np.testing.assert_allclose(got["logits"], logits.numpy(), atol=LOGIT_TOL)
    np.testing.assert_allclose(got["region_map"], aux["region_map"].numpy(), atol=1e-6)


def test_batch_dimension_is_dynamic_and_dies_are_independent(exported):
    cfg, test, result, path = exported
    session = load_session(path)
    K = (cfg.model.img_size // cfg.model.patch_size) ** 2
    three = run_session(session, test.__getitems__([0, 1, 2]))
    one = run_session(session, test.__getitems__([1]))
    shapes = {k: v.shape for k, v in three.items()}
    assert shapes == {
        "logits": (3, 5),
        "region_map": (3, K),
        "process_attention": (3, K, 48),
        "embedding": (3, cfg.model.embed_dim),
    }
    for name in OUTPUTS:
        np.testing.assert_allclose(one[name][0], three[name][1], atol=1e-5, err_msg=name)
    np.testing.assert_allclose(three["region_map"].sum(1), 1.0, atol=1e-5)


def test_the_file_passes_the_checker_with_a_symbolic_batch(exported):
    _, _, _, path = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == list(INPUTS)
    assert [o.name for o in proto.graph.output] == list(OUTPUTS)
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param, value.name
    assert not list(path.parent.glob("*.onnx.data"))  # weights inside the one file


@pytest.mark.parametrize("golden", [False, True], ids=["die", "golden-die difference"])
def test_the_baseline_exports_behind_the_same_signature(exported, tmp_path, golden):
    cfg = exported[0]
    torch.manual_seed(0)
    baseline = build_model(replace(cfg.model, baseline_golden=golden), "baseline").eval()
    path = export_onnx(baseline, cfg, tmp_path / "baseline.onnx")
    x = example_inputs(cfg, batch=3, seed=1)
    got = run_session(load_session(path), {k: v.numpy() for k, v in x.items()})
    with torch.no_grad():
        logits, aux = baseline(x["image"])
    np.testing.assert_allclose(got["logits"], logits.numpy(), atol=LOGIT_TOL)
    np.testing.assert_allclose(got["embedding"], aux["fused_embedding"].numpy(), atol=1e-4)
    assert np.array_equal(got["region_map"], np.ones((3, 1), np.float32))
    assert np.array_equal(got["process_attention"], np.zeros((3, 1, 48), np.float32))
