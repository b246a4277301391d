"""Service settings: keys, environment variables and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ApiKey, ConfigError, ServiceConfig, from_env, parse_keys
from service.keys import HASHED, key_digest
from service.models import Routing, canary_bucket


def test_keys_parse_with_roles():
    keys = parse_keys("station:st-1:k1, operator:ann:k2\nadmin:root:k3")
    assert keys.find("k1").name == "st-1" and keys.find("k1").role == "station"
    assert keys.find("k3").role == "admin" and len(keys) == 3
    assert keys.find("k4") is None and keys.find("") is None


def test_keys_are_held_as_digests_only():
    secret = b"server-secret"
    keys = parse_keys("station:st-1:plain-key-1", secret)
    assert "plain-key-1" not in repr(vars(keys))
    entry = f"operator:ann:{HASHED}{key_digest(secret, 'ann-key')}"
    from_digest = parse_keys(entry, secret)
    assert from_digest.find("ann-key") == ApiKey("ann", "operator")
    assert from_digest.find(key_digest(secret, "ann-key")) is None  # the digest is no key
    with pytest.raises(ConfigError, match="server secret"):
        parse_keys(entry)  # a random secret cannot match a stored digest


def test_the_key_secret_comes_from_the_environment():
    entry = f"station:s:{HASHED}{key_digest(b'abc', 'k')}"
    config = from_env({"DIEGUARD_API_KEYS": entry, "DIEGUARD_KEY_SECRET": "abc"})
    assert config.keys.find("k").name == "s"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("station:st-1", "not role:name:key"),
        ("boss:ann:k1", "role 'boss'"),
        ("station:a:k1,operator:b:k1", "also given"),
        ("station:a:hmac-sha256:abc", "64 hex"),
    ],
)
def test_bad_keys_are_refused(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_keys(text)


def test_settings_come_from_the_environment():
    env = {
        "DIEGUARD_API_KEYS": "station:s:k",
        "DIEGUARD_STATE_DIR": "/tmp/x",
        "DIEGUARD_MAX_BATCH": "4",
        "DIEGUARD_ROUTE_MODE": "shadow",
    }
    config = from_env(env, reload_interval_s=3.0)
    assert config.state_dir == Path("/tmp/x") and config.max_batch == 4
    assert config.route_mode == "shadow" and config.reload_interval_s == 3.0
    assert config.log_url.startswith("sqlite:///") and config.log_url.endswith("inspections.db")
    assert config.image_location == "/tmp/x/images"  # beside the spool unless told otherwise
    s3 = from_env(env | {"DIEGUARD_IMAGE_STORE": "s3://fab-a/images"})
    assert s3.image_location == "s3://fab-a/images"


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"DIEGUARD_MAX_BATCH": "eight"}, "DIEGUARD_MAX_BATCH"),
        ({"DIEGUARD_ROUTE_MODE": "half"}, "route_mode"),
        ({"DIEGUARD_CANARY_SHARE": "1.5"}, "canary_share"),
    ],
)
def test_bad_settings_are_refused(env, match):
    with pytest.raises(ConfigError, match=match):
        from_env(env)


def test_canary_routing_is_stable_and_near_its_share():
    ids = [f"A-L{i // 100:04d}-W01-D{i % 100:03d}" for i in range(4000)]
    assert [canary_bucket(d) for d in ids[:50]] == [canary_bucket(d) for d in ids[:50]]
    routing = Routing("canary", 0.25)
    share = sum(routing.deciding_role(d) == "candidate" for d in ids) / len(ids)
    assert 0.22 < share < 0.28
    assert all(Routing("shadow", 1.0).deciding_role(d) == "champion" for d in ids[:100])
    assert all(Routing("off", 1.0).deciding_role(d) == "champion" for d in ids[:100])


def test_a_growing_share_keeps_the_dies_already_on_the_candidate():
    ids = [f"D{i}" for i in range(2000)]
    at_10 = {d for d in ids if Routing("canary", 0.10).deciding_role(d) == "candidate"}
    at_25 = {d for d in ids if Routing("canary", 0.25).deciding_role(d) == "candidate"}
    assert at_10 <= at_25 and len(at_25) > len(at_10)


def test_defaults_are_valid():
    assert ServiceConfig().route_mode == "off"


def test_hash_key_prints_an_entry_the_service_admits(monkeypatch):
    from click.testing import CliRunner

    from dieguard.cli import main

    monkeypatch.setenv("DIEGUARD_KEY_SECRET", "server-secret")
    args = ["hash-key", "--role", "operator", "--name", "j.doe", "--key", "the-key"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    entry = result.output.strip()
    assert "the-key" not in entry and entry.startswith("operator:j.doe:hmac-sha256:")
    assert parse_keys(entry, b"server-secret").find("the-key") == ApiKey("j.doe", "operator")
