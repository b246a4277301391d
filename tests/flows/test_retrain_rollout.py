"""An approved version is handed to the rollout deployment rather than promoted at once."""

from __future__ import annotations

import asyncio

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from tasks.rollout import start_rollout


@flow(name="rollout-start")
def stand_in_rollout(model_name: str = "dieguard", tracking_uri=None, version=None) -> None:
    """The deployment the retrain starts; no worker runs it, so its run stays Scheduled."""


@flow
def hand_over(version: str) -> str:
    return start_rollout("rollout-start/rollout-start", "dieguard", "sqlite:///x.db", version)


def test_an_approved_version_starts_the_rollout_deployment():
    with prefect_test_harness(server_startup_timeout=120):
        stand_in_rollout.to_deployment(name="rollout-start").apply()
        run_id = hand_over("7")

        async def read():
            async with get_client() as client:
                return await client.read_flow_run(run_id)

        run = asyncio.run(read())
    assert run.parameters == {"model_name": "dieguard", "tracking_uri": "sqlite:///x.db",
                              "version": "7"}  # fmt: skip
    assert run.state.is_scheduled() and "version-7" in run.tags
