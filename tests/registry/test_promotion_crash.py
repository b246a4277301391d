"""Promotion survives a crash at any point: a child process is SIGKILLed right after its k-th
registry write, for every k; the aliases must still name versions that served, and a rerun
must complete the promotion exactly once."""

from __future__ import annotations

import shutil
import signal

import pytest

from registry import CHALLENGER, CHAMPION, PREVIOUS, ChampionMovedError, install_first, promote
from registry.events import events
from registry.store import open_store
from tests.registry.approvals import make_servable
from tests.registry.crash import die_after_writes

MODEL = "dieguard-crash"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A registry where version 2 is champion over version 1 and version 3 is challenger."""
    root = tmp_path_factory.mktemp("crash")
    client = open_store(f"sqlite:///{root / 'mlflow.db'}").client
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, source=str(root / "bundle"))
    for version in ("2", "3"):
        make_servable(client, MODEL, version)
    install_first(client, MODEL, "1", "the CNN in production")
    promote(client, MODEL, "2", "approved", "1")
    client.set_registered_model_alias(MODEL, CHALLENGER, "3")
    return root / "mlflow.db"


def promote_and_die_after(uri: str, k: int) -> int:
    """Promote version 3 in a child killed after its k-th registry write (0: it finished)."""
    return die_after_writes(
        k, lambda: promote(open_store(uri).client, MODEL, "3", "rollout passed", "2")
    )


@pytest.mark.slow
def test_a_crash_after_any_registry_write_leaves_valid_aliases_and_a_rerun_completes(
    template, tmp_path
):
    k, killed = 0, 0
    while True:
        k += 1
        db = tmp_path / f"crash-{k}.db"
        shutil.copy(template, db)
        uri = f"sqlite:///{db}"
        ended_by = promote_and_die_after(uri, k)
        client = open_store(uri).client
        aliases = {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()}
        assert aliases[CHAMPION] in ("2", "3"), (k, aliases)
        assert aliases[PREVIOUS] in ("1", "2") and aliases[PREVIOUS] != aliases[CHAMPION]
        change = promote(client, MODEL, "3", "rollout passed", "2")  # the rerun
        assert (change.champion, change.replaced) == ("3", "2")
        aliases = {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()}
        assert aliases == {CHAMPION: "3", PREVIOUS: "2"}, (k, aliases)
        new, old = (client.get_model_version(MODEL, v).tags for v in ("3", "2"))
        assert [e["kind"] for e in events(new)].count("promotion") == 1
        assert [e["kind"] for e in events(old)].count("superseded") == 1
        assert new["promoted_over"] == "2" and old["superseded_by"] == "3"
        if ended_by == 0:
            break
        assert ended_by == signal.SIGKILL
        killed += 1
    assert killed >= 8  # tags, events and three alias moves: every one was a crash point


def test_promotion_stops_when_the_champion_moved(template, tmp_path):
    db = tmp_path / "moved.db"
    shutil.copy(template, db)
    client = open_store(f"sqlite:///{db}").client
    with pytest.raises(ChampionMovedError, match="champion is version 2, not version 1"):
        promote(client, MODEL, "3", "judged against the CNN", "1")
    assert str(client.get_registered_model(MODEL).aliases[CHAMPION]) == "2"
    assert "promoted_at" not in client.get_model_version(MODEL, "3").tags
