from pathlib import Path

import pytest
import yaml

from model.config import ConfigError, RunConfig, config_from_dict, load_config

CONFIGS = sorted(Path("configs").glob("*.yaml"))


def test_there_are_the_three_configs():
    assert {p.stem for p in CONFIGS} >= {"smoke", "cpu", "gpu"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_starts_with_its_command(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert cfg.model.img_size % cfg.model.patch_size == 0
    assert cfg.model.vit_dim % cfg.model.vit_heads == 0
    assert cfg.model.embed_dim % cfg.model.fusion_heads == 0
    assert cfg.model.vocab_size <= 10_000
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "model.train" in first and path.name in first


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_file_matches_the_schema_exactly(path):
    raw = yaml.safe_load(path.read_text())
    assert config_from_dict(raw).to_dict() == load_config(path).to_dict()


def test_overrides_use_dotted_keys_and_yaml_values():
    cfg = load_config("configs/smoke.yaml", ["data_dir=/x", "train.lr=0.5", "train.bf16=false"])
    assert cfg.data_dir == "/x"
    assert cfg.train.lr == 0.5
    assert cfg.train.bf16 is False


def test_int_or_exponent_without_a_dot_given_for_float_is_accepted():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    assert load_config(None, ["train.lr=3e-4"]).train.lr == 3e-4
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=fast"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "train.lrr"),
        ("nope=1", "nope"),
        ("train.epochs_total=3", "train.epochs_total"),
        ("train.batch_size=big", "train.batch_size"),
        ("train.batch_size=1.5", "train.batch_size"),
        ("train.bf16=3", "train.bf16"),
        ("model=3", "model"),
        ("no_equals_sign", "key=value"),
        ("model.encoder_size=24", "model.encoder_size 24 must divide"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/smoke.yaml", [override])


def test_flat_view_has_dotted_keys():
    flat = load_config("configs/cpu.yaml").flat()
    assert flat["model.img_size"] == 256 and flat["model.encoder_size"] == 128
    assert "train.escape_target" in flat
