"""The serving engine: dies encoded as in training, decisions at the bundle's threshold."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from model.checkpoint import ModelFileError
from model.onnx_runtime import operating_point_path
from model.schema import CLASS_NAMES, GOOD, parameter_names
from service.engine import ModelEngine
from service.inputs import parse_die


@pytest.fixture(scope="module")
def engine(service_bundle) -> ModelEngine:
    return ModelEngine(service_bundle, threads=1)


def die_inputs(dies, n=4):
    return [
        parse_die(d.image, json.dumps(d.process_log), d.die_id, d.wafer_id, d.note)
        for d in dies[:n]
    ]


def test_missing_parameters_are_masked_and_zeroed(engine, dies):
    die = die_inputs(dies, 1)[0]
    names = parameter_names()
    dropped = dict(die.process)
    dropped.pop(names[0], None)
    partial = parse_die(die.image_bytes, json.dumps(dropped), die.die_id, die.wafer_id)
    arrays = engine.encode([partial])
    assert arrays["process_missing"][0, 0] and arrays["process"][0, 0] == 0.0
    assert arrays["image"].shape == (1, 3, engine.img_size, engine.img_size)
    assert arrays["image"].min() >= 0.0 and arrays["image"].max() <= 1.0
    assert not arrays["note_mask"].any()  # no note given


def test_decisions_follow_the_threshold(engine, dies):
    outputs = engine.predict(die_inputs(dies), "champion")
    for out in outputs:
        d = out.decision
        assert d.flagged == (d.defect_probability >= engine.threshold)
        assert (d.defect_class != GOOD) == d.flagged
        assert d.class_name == CLASS_NAMES[d.defect_class]
        assert d.confidence == pytest.approx(d.probabilities[d.class_name])
        assert out.region_map.shape == (out.process_attention.shape[0],)


def test_one_die_alone_or_in_a_batch_gets_the_same_answer(engine, dies):
    batch = engine.predict(die_inputs(dies), "champion")
    alone = engine.predict(die_inputs(dies)[2:3], "champion")[0]
    for name, p in alone.decision.probabilities.items():
        assert batch[2].decision.probabilities[name] == pytest.approx(p, abs=1e-5)
    assert np.allclose(batch[2].embedding, alone.embedding, atol=1e-4)


def test_a_local_bundle_reads_its_kind_from_the_model(service_bundle, tmp_path):
    engine = ModelEngine(service_bundle)
    assert engine.kind == "multimodal" and engine.version == "local"
    broken = shutil.copytree(service_bundle, tmp_path / "broken")
    operating_point_path(broken / "model.onnx").unlink()
    with pytest.raises(ModelFileError, match="lacks"):
        ModelEngine(broken)
