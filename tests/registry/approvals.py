"""Test helpers: give a registered version what the serving rule asks for."""

from __future__ import annotations

from registry import CHALLENGER, install_first, record_approval
from registry.servable import GATE_TAG


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
