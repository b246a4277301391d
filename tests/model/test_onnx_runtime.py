import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from model.checkpoint import ModelFileError
from model.config import load_config
from model.export import DeployModel, example_inputs, export_onnx
from model.network import build_model
from model.onnx_runtime import (
    CPU,
    OUTPUTS,
    load_session,
    operating_point_path,
    run_session,
)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A random smoke-shaped model exported at opset 17 (the TorchScript exporter path)."""
    cfg = load_config("configs/smoke.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, "multimodal").eval()
    path = export_onnx(model, cfg, tmp_path_factory.mktemp("ort") / "model.onnx", opset=17)
    return cfg, model, path


def test_a_valid_file_opens_on_a_working_provider_and_runs(model_file):
    cfg, _, path = model_file
    session = load_session(path, threads=1)
    assert CPU in session.get_providers()
    x = example_inputs(cfg, batch=2)
    out = run_session(session, {k: v.numpy() for k, v in x.items()})
    assert list(out) == list(OUTPUTS)
    assert out["logits"].shape == (2, cfg.model.num_classes)


def test_the_opset_17_export_matches_pytorch_at_any_batch(model_file):
    cfg, model, path = model_file
    session = load_session(path, providers=[CPU])
    assert onnx.load(str(path)).opset_import[0].version == 17
    for batch in (1, 3):
        x = example_inputs(cfg, batch=batch, seed=batch)
        got = run_session(session, {k: v.numpy() for k, v in x.items()})
        with torch.no_grad():
            want = DeployModel(model)(*x.values())
        for name, value in zip(OUTPUTS, want):
            np.testing.assert_allclose(got[name], value.numpy(), atol=1e-5, err_msg=name)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_session(tmp_path / "absent.onnx")


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "tail_cut"])
def test_a_corrupt_or_truncated_file_is_refused(model_file, tmp_path, kind):
    good = model_file[2].read_bytes()
    content = {
        "empty": b"",
        "text": b"this is not an ONNX model",
        "truncated": good[: len(good) // 2],
        "tail_cut": good[:-64],
    }[kind]
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a usable ONNX model") as err:
        load_session(path)
    assert str(path) in str(err.value)


def _other_model(path, inputs):
    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", 4]) for n in inputs]
    nodes = [helper.make_node("Identity", [inputs[0]], [OUTPUTS[0]])]
    out = [helper.make_tensor_value_info(OUTPUTS[0], TensorProto.FLOAT, ["b", 4])]
    graph = helper.make_graph(nodes, "other", values, out)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.save(proto, str(path))
    return path


def test_a_model_with_other_inputs_is_refused_with_the_difference(tmp_path):
    path = _other_model(tmp_path / "other.onnx", ["x"])
    with pytest.raises(ModelFileError, match="does not take the dieguard inputs") as err:
        load_session(path)
    assert "image: tensor(float)" in str(err.value) and "got x: tensor(float)" in str(err.value)


def test_a_model_with_the_inputs_but_other_outputs_is_refused(model_file, tmp_path):
    proto = onnx.load(str(model_file[2]))
    proto.graph.output.pop()  # drop "embedding"
    path = tmp_path / "short.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ModelFileError, match="outputs"):
        load_session(path)


def test_the_operating_point_lives_beside_the_model_file(tmp_path):
    assert operating_point_path(tmp_path / "model.int8.onnx") == (
        tmp_path / "model.int8.operating_point.json"
    )


def test_a_model_for_another_image_size_is_refused_when_the_size_is_given(model_file):
    cfg, _, path = model_file
    assert load_session(path, image_size=cfg.model.img_size)
    with pytest.raises(ModelFileError, match="expected side 256"):
        load_session(path, image_size=256)
