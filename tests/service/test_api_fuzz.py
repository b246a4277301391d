"""Generated requests to every route, with the role it needs and a role it refuses: whatever
a client sends, never a 500, and never a refused role let through."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import KEYS, inspect_ok, live_config, start_service

FUZZ = Path(__file__).with_name("fuzz_api.py")
EXAMPLES = 200  # a route and a role


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error(registry_uri, dies, tmp_path):
    service, stop = start_service(live_config(registry_uri, tmp_path / "state"), registry_uri)
    try:
        known = [inspect_ok(service, die)["die_id"] for die in dies[:3]]
        result = subprocess.run(
            [sys.executable, str(FUZZ), service.url, str(EXAMPLES),
             KEYS["station"], KEYS["operator"], KEYS["admin"], *known],
            capture_output=True, text=True, timeout=1800, cwd=Path(__file__).parents[2],
        )  # fmt: skip
    finally:
        stop()
    print(result.stdout[-2000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 server errors or refused roles let through" in result.stdout
