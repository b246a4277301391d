"""Generated requests from the OpenAPI document: whatever a client sends, never a 500."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.service.conftest import KEYS

FUZZ = Path(__file__).with_name("fuzz_api.py")


def test_no_generated_request_gets_a_server_error(live_service):
    result = subprocess.run(
        [sys.executable, str(FUZZ), live_service.url, KEYS["admin"], "25"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 server errors" in result.stdout
