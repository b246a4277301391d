"""`dieguard reject` and `dieguard rollout start` against a real SQLite registry."""

from __future__ import annotations

from click.testing import CliRunner

from dieguard.cli import main
from registry import CHAMPION, install_first, open_store
from tests.registry.approvals import make_servable

MODEL = "dieguard-cli"


def test_a_rejected_version_cannot_be_rolled_out(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_store(uri).client
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source=str(tmp_path / "bundle"))
    install_first(client, MODEL, "1", "the CNN in production")
    make_servable(client, MODEL, "2")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    where = ["--tracking-uri", uri]

    rejected = CliRunner().invoke(
        main, ["reject", MODEL, "2", "--reason", "escapes on fab C", "--approver", "j.lin", *where]
    )
    assert rejected.exit_code == 0, rejected.output
    assert "version 2 rejected by j.lin" in rejected.output
    assert client.get_registered_model(MODEL).aliases == {CHAMPION: 1}  # v2 holds none

    start = ["rollout", "start", "--version", "2", "--model-name", MODEL, *where]
    refused = CliRunner().invoke(main, start)
    assert refused.exit_code == 4
    assert "may not serve: rejected by j.lin: escapes on fab C" in refused.output
    no_challenger = CliRunner().invoke(main, ["rollout", "start", "--model-name", MODEL, *where])
    assert no_challenger.exit_code == 1 and "challenger" in no_challenger.output

    unknown = CliRunner().invoke(
        main, ["reject", MODEL, "9", "--reason", "x", "--approver", "j", *where]
    )
    assert unknown.exit_code == 1 and "version 9" in unknown.output
