"""The served explanation's parameter: its ONNX occlusion shares, and the audit against truth."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from dieguard.cli import main
from model.contract import read_split
from model.schema import CLASS_NAMES, parameter_names
from service.attribution import anomaly_attribution, batched_attribution
from service.batcher import MicroBatcher
from service.engine import ModelEngine
from service.explain import anomalous_parameters
from service.explanation_audit import explanation_audit, format_audit
from service.inputs import parse_die
from tests.service.conftest import MODEL_NAME, variant


@pytest.fixture(scope="module")
def flag_all(service_bundle, tmp_path_factory):
    """The smoke bundle at threshold 0: every die is flagged with its most likely defect."""
    return variant(service_bundle, tmp_path_factory.mktemp("flag_all") / "bundle", 0.0)


def _parsed(payload, process=None):
    log = json.dumps(payload.process_log if process is None else process)
    return parse_die(payload.image, log, payload.die_id, payload.wafer_id, payload.note or None)


def _log_odds(engine: ModelEngine, die, cls: int) -> float:
    p = engine.predict([die], "champion")[0].decision.probabilities[CLASS_NAMES[cls]]
    return math.log(p / (1.0 - p))


def test_each_share_is_the_served_models_own_drop_without_that_value(flag_all, dies):
    engine = ModelEngine(flag_all)
    payload = next(
        d for d in dies if len(anomalous_parameters(_parsed(d).process, engine.scaler)) >= 2
    )
    die = _parsed(payload)
    output = engine.predict([die], "champion")[0]
    anomalies = anomalous_parameters(die.process, engine.scaler)
    shares = anomaly_attribution(engine, die, output, anomalies)
    assert list(shares) == [a["name"] for a in anomalies]
    cls = output.decision.defect_class
    names = list(parameter_names())
    for name, share in shares.items():
        reset = dict(payload.process_log) | {name: float(engine.scaler.mean[names.index(name)])}
        drop = _log_odds(engine, die, cls) - _log_odds(engine, _parsed(payload, reset), cls)
        assert share == pytest.approx(drop, abs=1e-4)


def test_the_served_shares_come_through_the_models_batcher(flag_all, dies):
    engine = ModelEngine(flag_all)
    die = next(
        d for d in map(_parsed, dies) if len(anomalous_parameters(d.process, engine.scaler)) >= 2
    )
    output = engine.predict([die], "champion")[0]
    anomalies = anomalous_parameters(die.process, engine.scaler)
    calls = []

    async def served():
        batcher = MicroBatcher(lambda batch: calls.append(len(batch)) or engine.predict(batch, ""))
        batcher.start()
        try:
            return await batched_attribution(batcher, engine, die, output, anomalies, 5.0)
        finally:
            await batcher.stop()

    shares = asyncio.run(served())
    assert sum(calls) == len(anomalies)  # one copy of the die per out-of-range value
    expected = anomaly_attribution(engine, die, output, anomalies)
    assert shares == pytest.approx(expected, abs=1e-4)


def test_a_die_not_flagged_or_in_range_has_no_shares(service_bundle, flag_all, tmp_path, dies):
    never = ModelEngine(variant(service_bundle, tmp_path / "never", 1.01))
    die = _parsed(dies[0])
    output = never.predict([die], "champion")[0]
    anomalies = [{"name": "rf_power", "z": 3.0}]
    assert not output.decision.flagged
    assert anomaly_attribution(never, die, output, anomalies) == {}
    engine = ModelEngine(flag_all)
    assert anomaly_attribution(engine, die, engine.predict([die], "champion")[0], []) == {}


def test_the_audit_counts_every_die_of_the_class_against_the_recorded_causes(flag_all, tiny_data):
    counts = explanation_audit(flag_all, tiny_data, split="val")
    labels = read_split(tiny_data / "val").labels
    assert counts["dies"] == int(np.sum(labels == CLASS_NAMES.index("process_deviation")))
    assert counts["flagged"] == counts["dies"] > 0
    assert counts["named_cause"] <= counts["named"] <= counts["dies"]
    # the generator moves a cause at least 3.2 sigma: it is the largest deviation
    assert counts["largest_cause"] == counts["dies"]
    assert counts["cause_rate"] == counts["named_cause"] / counts["dies"]
    text = format_audit(counts)
    assert f"explanation names a true cause: {counts['named_cause']}/{counts['dies']}" in text


def test_the_audit_needs_a_recorded_truth_and_a_known_class(flag_all, tiny_data, tmp_path):
    (tmp_path / "val").symlink_to(tiny_data / "val")
    with pytest.raises(FileNotFoundError, match="synth_truth.csv"):
        explanation_audit(flag_all, tmp_path, split="val")
    with pytest.raises(ValueError, match="unknown class"):
        explanation_audit(flag_all, tiny_data, defect_class="crack")


def test_the_command_prints_the_audit(flag_all, tiny_data):
    args = ["explain-audit", "--data-dir", str(tiny_data), "--bundle", str(flag_all)]
    result = CliRunner().invoke(main, [*args, "--split", "val"])
    assert result.exit_code == 0, result.output
    assert "explanation names a true cause:" in result.output


def test_the_command_audits_the_registrys_champion_by_default(registry_uri, tiny_data):
    args = ["explain-audit", "--data-dir", str(tiny_data), "--split", "val"]
    args += ["--tracking-uri", registry_uri, "--model-name", MODEL_NAME]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    labels = read_split(tiny_data / "val").labels
    n = int(np.sum(labels == CLASS_NAMES.index("process_deviation")))
    assert f"process_deviation dies: {n}, flagged" in result.output
