"""The approval deadline: an approval suspended longer than its timeout is rejected.

A suspended run has no process to time it out, so this short flow runs every hour (the
`approval-deadlines` deployment in prefect.yaml): it submits the rejection form to every
overdue `approve-candidate` run, which then resumes and records the rejection in the
registry.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterStateName,
)
from prefect.flow_runs import resume_flow_run

from flows.approval import APPROVAL_TIMEOUT_S, timeout_answer

SUSPENDED = FlowRunFilter(state={"name": FlowRunFilterStateName(any_=["Suspended"])})


@flow(name="approval-deadlines", log_prints=True)
def approval_deadlines(
    flow_name: str = "approve-candidate", now: datetime | None = None
) -> list[str]:
    """Reject every run of `flow_name` suspended for approval past its `approval_timeout_s`.

    Returns:
        the ids of the runs rejected.
    """
    now = now or datetime.now(UTC)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=SUSPENDED,
        )
    rejected = []
    for run in runs:
        timeout_s = float(run.parameters.get("approval_timeout_s", APPROVAL_TIMEOUT_S))
        if run.state.timestamp + timedelta(seconds=timeout_s) <= now:
            resume_flow_run(run.id, run_input=timeout_answer(timeout_s))
            get_run_logger().warning("run %s: no approval within %g s, rejected", run.id,
                                     timeout_s)  # fmt: skip
            rejected.append(str(run.id))
    return rejected


if __name__ == "__main__":
    approval_deadlines()
