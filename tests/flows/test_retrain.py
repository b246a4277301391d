"""The retrain flow end to end on the smoke config: real Prefect, real MLflow (SQLite), real GX."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import ArtifactSort
from prefect.flow_runs import resume_flow_run
from prefect.input import keyset_from_paused_state
from prefect.testing.utilities import prefect_test_harness

from expectations.validate import DataValidationError
from flows.retrain import REFUSED, REPORT_KEYS, retrain
from monitoring.simulate_rollout import approved_challenger
from registry import CHALLENGER, CHAMPION, PREVIOUS, audit, download_bundle, open_store

OPEN_GATES = [  # smoke models are too small to pass the real gates; the limits are config
    "gates.max_escape=1.01",
    "gates.max_fpr=1.01",
    "gates.max_flip_rate=1.0",
    "gates.champion_escape_margin=1.0",
    "gates.champion_fpr_margin=1.0",
]
MODEL = "dieguard-test"


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def overrides(data_dir: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [
        f"data_dir={data_dir}",
        f"out_dir={out}",
        f"name={name}",
        f"data.cache_dir={out / 'cache'}",
        *extra,
    ]


def aliases(uri: str) -> dict[str, str]:
    model = open_store(uri).client.get_registered_model(MODEL)
    return {alias: str(version) for alias, version in model.aliases.items()}


@pytest.fixture(scope="module")
def first_run(tiny_data, tmp_path_factory):
    """One approved run on an empty registry: the CNN becomes champion, then the candidate."""
    out = tmp_path_factory.mktemp("retrain")
    uri = f"sqlite:///{out / 'mlruns' / 'mlflow.db'}"
    result = retrain(
        "configs/smoke.yaml",
        overrides(tiny_data, out, "first", *OPEN_GATES),
        model_name=MODEL,
        tracking_uri=uri,
        auto_approve=True,
    )
    return out, uri, result


@pytest.fixture
def registry_copy(first_run, tmp_path):
    """A private copy of the first run's MLflow store (database and artifacts)."""
    out, _, _ = first_run
    shutil.copytree(out / "mlruns", tmp_path / "mlruns")
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def test_first_run_makes_the_cnn_then_the_candidate_champion(first_run):
    _, uri, result = first_run
    assert result["approved"] and result["champion"] == result["version"] == "2"
    assert aliases(uri) == {CHAMPION: "2", PREVIOUS: "1"}
    client = open_store(uri).client
    record = audit(client, MODEL, "2")
    assert record["kind"] == "multimodal" and record["data"]["digest"]
    assert record["validation"]["verdict"] in (True, "passed")
    assert record["approval"]["automatic"] in (True, "true", "True")
    assert audit(client, MODEL, "1")["kind"] == "baseline"
    params = client.get_run(record["run_id"]).data.params
    assert params["model.img_size"] == "32"


def test_training_moves_a_progress_artifact_per_model(first_run):
    with get_client(sync_client=True) as client:
        for kind in ("baseline", "multimodal"):
            key = ArtifactFilter(key=ArtifactFilterKey(any_=[f"training-{kind}"]))
            artifacts = client.read_artifacts(artifact_filter=key)
            assert [a.type for a in artifacts] == ["progress"], kind
            assert 0 < float(artifacts[0].data) <= 100  # epochs done, of the planned ones


def test_the_reports_are_linked_at_their_copies_in_the_mlflow_run(first_run):
    _, uri, result = first_run
    run_id = audit(open_store(uri).client, MODEL, result["version"])["run_id"]
    links = result["logged_reports"]
    assert set(links) == {"data_docs", "eda", "evaluation"}
    with get_client(sync_client=True) as client:
        for name, key in REPORT_KEYS.items():
            assert run_id in links[name] and links[name].startswith("file://")
            assert Path(links[name].removeprefix("file://")).is_file(), links[name]
            latest = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC,
                limit=1,
            )
            assert links[name] in latest[0].data  # the latest link is the logged copy


def test_the_retrain_builds_int8_variants_only_until_one_ships(first_run):
    out, _, _ = first_run
    verdict = json.loads((out / "first" / "deploy" / "int8_gate.json").read_text())
    assert verdict["chosen"] == "static_qdq" and verdict["passed"]  # the open gates pass it
    assert set(verdict["gates"]) == {"static_qdq", "fp16"}  # FP16 for GPU stations, gated too


def test_the_champion_bundle_carries_each_stations_variant(first_run, tmp_path):
    _, uri, result = first_run
    folder = download_bundle(open_store(uri).client, MODEL, CHAMPION, tmp_path / "bundle")
    variants = json.loads((folder / "bundle.json").read_text())["variants"]
    assert variants["cpu"]["file"] == "model.onnx" and variants["cpu"]["precision"] == "int8"
    assert variants["cuda"]["file"] == "model.fp16.onnx"
    assert (folder / "model.fp16.onnx").is_file()
    assert (folder / "model.fp16.operating_point.json").is_file()


def test_a_failing_gate_ends_refused_and_aliases_nothing(tiny_data, registry_copy, tmp_path):
    before = aliases(registry_copy)
    state = retrain(
        "configs/smoke.yaml",
        overrides(tiny_data, tmp_path, "gated", "gates.max_fpr=0.0", "gates.max_escape=0.0"),
        model_name=MODEL,
        tracking_uri=registry_copy,
        auto_approve=True,
        return_state=True,
    )
    assert state.is_completed() and state.name == REFUSED
    assert "fp32_fpr" in state.message or "fp32_escape" in state.message
    assert "release gates refused" in state.result()["refused"]
    assert_refusal_on_record(state.state_details.flow_run_id)
    assert aliases(registry_copy) == before
    assert len(open_store(registry_copy).client.search_model_versions(f"name='{MODEL}'")) == 2


def assert_refusal_on_record(flow_run_id) -> None:
    """The verdict artifact and the refusal event, both tied to the run."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        assert "Release gates FAILED." in {a.key: a.description for a in artifacts}["release-gates"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = client.request(
                "POST", "/events/filter", json={"filter": {"event": {"name": [REFUSED_EVENT]}}}
            ).json()["events"]
            if any(str(flow_run_id) in str(e["related"]) for e in events):
                return
            time.sleep(1)
    raise AssertionError("no dieguard.retrain.refused event for the run")


REFUSED_EVENT = "dieguard.retrain.refused"


def test_an_approved_version_can_wait_as_challenger_for_its_rollout(
    tiny_data, registry_copy, tmp_path
):
    assert approved_challenger(registry_copy, MODEL) is None  # the champion is the challenger
    result = retrain(
        "configs/smoke.yaml",
        overrides(tiny_data, tmp_path, "held", *OPEN_GATES),
        model_name=MODEL,
        tracking_uri=registry_copy,
        auto_approve=True,
        hold_for_rollout=True,
    )
    assert result["approved"] and result["champion"] == "2" and result["version"] == "3"
    assert aliases(registry_copy) == {CHAMPION: "2", PREVIOUS: "1", CHALLENGER: "3"}
    assert approved_challenger(registry_copy, MODEL) == "3"


def test_bad_data_is_quarantined_and_stops_the_run(tiny_data, registry_copy, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    labels = data / "train" / "labels.csv"
    frame = pd.read_csv(labels, dtype={"die_id": str})
    frame.loc[:4, "label"] = 7
    frame.to_csv(labels, index=False)
    before = aliases(registry_copy)
    with pytest.raises(DataValidationError, match="label"):
        retrain(
            "configs/smoke.yaml",
            overrides(data, tmp_path, "bad", *OPEN_GATES),
            model_name=MODEL,
            tracking_uri=registry_copy,
            auto_approve=True,
        )
    assert aliases(registry_copy) == before
    assert labels.exists() and len(pd.read_csv(labels)) == len(frame)  # nothing deleted
    assert list(data.rglob("QUARANTINE*"))


# A whole smoke retrain runs before the pause: minutes on two busy cores, so the waits are
# generous; they only bound a run that never pauses or never ends.
RUN_WAIT_S = 1200


def paused_run(timeout_s: float = RUN_WAIT_S):
    """The first flow run seen in the Paused state."""
    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=paused)
            if runs:
                return runs[0]
            time.sleep(1)
    raise TimeoutError("no flow run paused for approval")


def run_until_decided(tiny_data, uri, out, form: dict) -> dict:
    """Run the flow in a thread, answer its approval form through the Prefect API."""
    outcome = {}

    def target():
        try:
            outcome["result"] = retrain(
                "configs/smoke.yaml",
                overrides(tiny_data, out, "asked", *OPEN_GATES),
                model_name=MODEL,
                tracking_uri=uri,
                approval_timeout_s=900,
            )
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    run = paused_run()
    assert_the_ui_shows_the_approval_form(run)
    resume_flow_run(run.id, run_input=form)
    thread.join(timeout=RUN_WAIT_S)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def assert_the_ui_shows_the_approval_form(run) -> None:
    """The Prefect UI renders a paused run's form from the schema and description it stores."""
    keys = keyset_from_paused_state(run.state)
    with get_client(sync_client=True) as client:
        schema = json.loads(client.read_flow_run_input(run.id, keys["schema"]))
        description = json.loads(client.read_flow_run_input(run.id, keys["description"]))
    assert {"approve", "approver", "reason", *CHECKED} <= set(schema["properties"])
    assert schema["properties"]["approve"]["type"] == "boolean"
    assert schema["required"] == ["approver"]  # the UI asks for a name before Submit
    assert "Approve dieguard-test version" in description and "escape rate" in description


CHECKED = {
    "reviewed_evaluation_report": True,
    "reviewed_fairness_audit": True,
    "reviewed_gate_verdicts": True,
}


def test_approval_and_rejection_through_the_prefect_api(tiny_data, registry_copy, tmp_path):
    rejected = run_until_decided(
        tiny_data,
        registry_copy,
        tmp_path / "a",
        {"approve": False, "approver": "q.engineer", "reason": "wafer-edge FPR"} | CHECKED,
    )
    assert not rejected["approved"]
    assert aliases(registry_copy)[CHAMPION] == "2"
    assert CHALLENGER not in aliases(registry_copy)  # a rejected version is no challenger
    decision = audit(open_store(registry_copy).client, MODEL, rejected["version"])["approval"]
    assert decision["approver"] == "q.engineer" and "wafer-edge" in decision["reason"]
    assert approved_challenger(registry_copy, MODEL) is None  # a rejected one is not rolled out

    approved = run_until_decided(
        tiny_data,
        registry_copy,
        tmp_path / "b",
        {"approve": True, "approver": "q.engineer", "reason": "figures hold"} | CHECKED,
    )
    assert approved["approved"]
    assert aliases(registry_copy)[CHAMPION] == approved["version"]
    assert aliases(registry_copy)[PREVIOUS] == "2"
