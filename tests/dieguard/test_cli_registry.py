"""`dieguard reject` and `dieguard rollout start/step/status/stop` against a real SQLite
registry (and the Prefect test harness for the flows they run)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from prefect.testing.utilities import prefect_test_harness

from dieguard.cli import main
from registry import CHAMPION, open_store
from tests.registry.approvals import champion_and_challenger

MODEL = "dieguard-cli"


def registry_with_challenger(tmp_path) -> str:
    """A SQLite registry: version 1 champion, version 2 an approved challenger."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_store(uri).client
    champion_and_challenger(client, MODEL, str(tmp_path / "bundle"))
    return uri


def test_a_rejected_version_cannot_be_rolled_out(tmp_path):
    uri = registry_with_challenger(tmp_path)
    client = open_store(uri).client
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


def test_start_records_the_shadow_stage_and_steps_take_it_on(tmp_path):
    uri = registry_with_challenger(tmp_path)
    where = ["--model-name", MODEL, "--tracking-uri", uri]
    log = ["--log-url", f"sqlite:///{tmp_path / 'inspections.db'}"]
    cli = CliRunner()
    with prefect_test_harness(server_startup_timeout=120):
        bad = cli.invoke(main, ["rollout", "start", *where, "stages=[0.5]"])
        assert bad.exit_code == 1 and "end at 1.0" in bad.output
        started = cli.invoke(main, ["rollout", "start", *where, "stage_window_s=60"])
        assert started.exit_code == 0, started.output
        assert "version 2: shadow beside champion 1" in started.output
        again = cli.invoke(main, ["rollout", "start", *where])
        assert again.exit_code == 1 and "version 2 is being rolled out (shadow)" in again.output
        status = json.loads(cli.invoke(main, ["rollout", "status", *where]).output)
        assert (status["stage"], status["revision"]) == ("shadow", 1)
        assert json.loads(status["config"])["stage_window_s"] == 60  # kept for every step
        step = cli.invoke(main, ["rollout", "step", *where, *log])
        assert step.exit_code == 0, step.output
        assert "version 2, shadow: hold" in step.output  # four weeks of shadow by default
        stopped = cli.invoke(main, ["rollout", "stop", "--reason", "line down", *where])
        assert stopped.exit_code == 0, stopped.output
        idle = cli.invoke(main, ["rollout", "step", *where, *log])
    assert idle.exit_code == 0 and "nothing to do: no rollout in progress" in idle.output
