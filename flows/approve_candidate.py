"""The approval of a registered candidate, as a flow run of its own.

`weekly-retrain`, run from its deployment, registers the candidate as challenger, starts the
`approve-candidate` deployment for it and ends. The approval then waits, suspended, outside
the retrain's concurrency slot: a retrain started meanwhile (the schedule, the drift trigger)
neither waits for it nor cancels it when its form is submitted. The decision is recorded in
the registry; an approved version goes to the rollout, a rejected one loses `challenger`.
Only the challenger is decided: a version a newer candidate superseded, before or while it
waited, is refused on record.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from flows.approval import APPROVAL_TIMEOUT_S, approval_summary, request_approval
from tasks import approval
from tasks.approval import refuse, still_to_decide
from tasks.registry import record_decision
from tasks.resume import once_per_run
from tasks.rollout import start_rollout

# Read once per run: the run the form reschedules reads this first answer back, goes on to
# the form's answer, and then checks again whether the version may still be decided.
candidate_to_approve = once_per_run(approval.candidate_to_approve)

REFUSED = "Refused"  # the final state of a run whose version could no longer be decided


@flow(name="approve-candidate", log_prints=True)
def approve_candidate(
    version: str,
    model_name: str = "dieguard",
    tracking_uri: str | None = None,
    approval_timeout_s: int = APPROVAL_TIMEOUT_S,
    rollout_deployment: str = "",
) -> dict | State:
    """Ask for the approval of a challenger version and act on the decision.

    Args:
        version: the registered version to decide, aliased `challenger`.
        model_name, tracking_uri: the registered model and its MLflow store.
        approval_timeout_s: how long the run waits for a decision (none in time rejects:
            flows.approval_deadlines).
        rollout_deployment: e.g. "rollout-start/rollout-start": an approved version is
            handed to the staged rollout ("": it stays challenger for a rollout started
            elsewhere).
    Returns:
        version, approved, approver and the rollout's run id ("rollout") when one was
        started; a version no longer the challenger ends the run in a Completed state
        named "Refused" holding the reason ("refused").
    """
    log = get_run_logger()
    candidate = candidate_to_approve(model_name, tracking_uri, version)
    if candidate["refusal"]:
        return refused(model_name, tracking_uri, version, candidate["refusal"], None)
    summary = approval_summary(
        model_name, version, candidate["test"], candidate["gates_passed"], candidate["report"]
    )
    decision = request_approval(summary, approval_timeout_s)
    late = still_to_decide(model_name, tracking_uri, version)  # superseded while it waited?
    if late:
        return refused(model_name, tracking_uri, version, late, decision.to_dict())
    record_decision(model_name, tracking_uri, version, decision.to_dict())
    outcome = {"version": version, "approved": decision.approved, "approver": decision.approver}
    if not decision.approved:
        log.warning("version %s rejected by %s: %s", version, decision.approver, decision.reason)
        return outcome
    if rollout_deployment:
        return outcome | {
            "rollout": start_rollout(rollout_deployment, model_name, tracking_uri, version)
        }
    log.info("version %s approved: challenger until a rollout promotes it", version)
    return outcome


def refused(
    model_name: str, tracking_uri: str | None, version: str, reason: str, decision: dict | None
) -> State:
    """The run's end when the version may no longer be decided: recorded, not applied."""
    get_run_logger().warning("approval of %s version %s refused: %s", model_name, version, reason)
    refuse(model_name, tracking_uri, version, reason, decision)
    outcome = {"version": version, "approved": False, "refused": reason}
    return Completed(name=REFUSED, message=reason, data=outcome)
