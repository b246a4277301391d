import json
import os

from click.testing import CliRunner

from dieguard.cli import PREFECT_DEFAULTS, main
from model.contract import read_split


def test_synth_writes_the_contract_and_audits_it(tmp_path):
    out = tmp_path / "data"
    args = ["synth", "--out", str(out), "--n", "300", "--test-n", "80", "--val-n", "60"]
    result = CliRunner().invoke(main, [*args, "--workers", "1", "--audit", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 300 dies" in result.output and "Signal audit" in result.output
    assert len(read_split(out / "test").ids) == 80
    assert len(read_split(out / "val").ids) == 60
    audit = json.loads((out / "signal_audit.json").read_text())
    assert set(audit) == {"discoloration", "visibility", "image_statistics_auc"}


def test_synth_without_a_target_is_a_usage_error():
    result = CliRunner().invoke(main, ["synth"])
    assert result.exit_code == 2 and "--out" in result.output


def test_synth_rejects_an_unknown_drift_preset(tmp_path):
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path), "--drift", "nope"])
    assert result.exit_code != 0
    assert "unknown drift preset" in str(result.exception)


def test_explore_writes_the_report(tiny_data, tmp_path):
    result = CliRunner().invoke(main, ["explore", str(tiny_data), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eda.html").exists() and (tmp_path / "eda.json").exists()


def test_train_then_evaluate_the_smoke_model(tiny_data, tmp_path):
    overrides = [f"data_dir={tiny_data}", f"out_dir={tmp_path}", f"data.cache_dir={tmp_path}/c"]
    result = CliRunner().invoke(
        main, ["train", "--config", "configs/smoke.yaml", "--kind", "baseline", *overrides]
    )
    assert result.exit_code == 0, result.output
    assert "baseline" in result.output and "escape" in result.output
    assert (tmp_path / "smoke" / "baseline" / "model.pt").exists()
    model_path = tmp_path / "smoke" / "baseline" / "model.pt"
    result = CliRunner().invoke(main, ["evaluate", str(model_path), "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert "escape" in result.output and "a sub-1% escape rate cannot be" in result.output
    assert (tmp_path / "ev" / "evaluation.html").exists()


def test_the_cli_sets_its_prefect_defaults_unless_the_user_chose(monkeypatch):
    for name in PREFECT_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    CliRunner().invoke(main, ["synth"])  # a usage error, after the defaults
    assert {name: os.environ[name] for name in PREFECT_DEFAULTS} == PREFECT_DEFAULTS
    assert PREFECT_DEFAULTS["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    CliRunner().invoke(main, ["synth"])
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"
