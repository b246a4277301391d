"""Test helpers: give a registered version what the serving rule asks for."""

from __future__ import annotations

import json

from registry import CHALLENGER, install_first, record_approval
from registry.servable import GATE_TAG

TEST_FIGURES = {  # a candidate's test figures as the retrain registers them
    "escape": {"rate": 0.0042, "lo": 0.0005, "hi": 0.0150, "k": 2, "n": 480},
    "fpr": {"rate": 0.113, "lo": 0.105, "hi": 0.121, "k": 610, "n": 5400},
    "macro_f1": 0.64,
}


def make_servable(client, model_name: str, version: str | int, approver: str = "qe.lin") -> None:
    """A passed gate verdict and a manual approval on the version."""
    client.set_model_version_tag(model_name, str(version), GATE_TAG, '{"passed":true}')
    checklist = {"reviewed_gate_verdicts": True}
    record_approval(client, model_name, version, True, approver, "tested", False, checklist)


def champion_and_challenger(client, model_name: str, source: str) -> None:
    """Register `model_name` with version 1 the first champion and version 2 an approved,
    gated challenger."""
    client.create_registered_model(model_name)
    for _ in range(2):
        client.create_model_version(model_name, source=source)
    install_first(client, model_name, "1", "the CNN in production")
    make_servable(client, model_name, "2")
    client.set_registered_model_alias(model_name, CHALLENGER, "2")


def gated_candidate(client, model_name: str, source: str) -> str:
    """Register a version as the retrain leaves its candidate: a passed gate verdict, its
    test figures and evaluation report in the lineage, alias challenger, no decision yet."""
    version = str(client.create_model_version(model_name, source=source).version)
    lineage = {
        GATE_TAG: '{"passed":true}',
        "lineage.test_figures": json.dumps(TEST_FIGURES),
        "lineage.evaluation_report": f"runs:/run-{version}/evaluation/evaluation.html",
    }
    for key, value in lineage.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    return version
