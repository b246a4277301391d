"""Test helper: give a registered version what the serving rule asks for."""

from __future__ import annotations

from registry import record_approval
from registry.servable import GATE_TAG


def make_servable(client, model_name: str, version: str | int, approver: str = "qe.lin") -> None:
    """A passed gate verdict and a manual approval on the version."""
    client.set_model_version_tag(model_name, str(version), GATE_TAG, '{"passed":true}')
    checklist = {"reviewed_gate_verdicts": True}
    record_approval(client, model_name, version, True, approver, "tested", False, checklist)
