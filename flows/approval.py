"""The approval step: a typed form in the Prefect UI, or an automatic decision on record.

A run started from a deployment (the `approve-candidate` flow, flows/approve_candidate.py)
is suspended while it waits: its process exits, nothing holds a machine, and the run is
rescheduled from its start when the form is submitted. A run started by hand (`dieguard
retrain`) pauses in its process instead. A decision not given in time is a rejection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from pydantic import Field

APPROVAL_TIMEOUT_S = 7 * 24 * 3600  # a week
TIMEOUT_APPROVER = "approval-deadline"
DEADLINE_MARGIN_S = 3 * 3600  # the deadline sweep runs hourly: its rejection lands first
CHECKLIST = ("reviewed_evaluation_report", "reviewed_fairness_audit", "reviewed_gate_verdicts")


class ApprovalForm(RunInput):
    """What a quality engineer fills in to approve or reject a candidate model."""

    approve: bool = Field(False, description="Approve this model version for promotion.")
    approver: str = Field(
        min_length=1, description="Your name or badge id (recorded in the registry)."
    )
    reason: str = Field("", description="Why: recorded with the decision for the audit trail.")
    reviewed_evaluation_report: bool = Field(False, description="I read the evaluation report.")
    reviewed_fairness_audit: bool = Field(False, description="I checked the fairness audit.")
    reviewed_gate_verdicts: bool = Field(False, description="I checked the release gates.")


@dataclass(frozen=True)
class Decision:
    """The approval decision as recorded: who, why, and whether it was automatic."""

    approved: bool
    approver: str
    reason: str
    automatic: bool
    checklist: dict[str, bool]

    def to_dict(self) -> dict:
        return asdict(self)


def decide(form: ApprovalForm) -> Decision:
    """Approval needs a named approver and every checklist item; anything less rejects."""
    checklist = {item: bool(getattr(form, item)) for item in CHECKLIST}
    missing = [item for item, done in checklist.items() if not done]
    approved = form.approve and bool(form.approver.strip()) and not missing
    reason = form.reason.strip()
    if form.approve and not approved:
        unmet = missing + ([] if form.approver.strip() else ["approver"])
        reason = f"approval refused: incomplete form ({', '.join(unmet)}). {reason}".strip()
    return Decision(approved, form.approver.strip() or "unknown", reason, False, checklist)


def automatic_approval() -> Decision:
    """The demo's and tests' decision, recorded as automatic."""
    checklist = dict.fromkeys(CHECKLIST, False)
    return Decision(True, "auto-approve", "auto_approve=True (demo or test run)", True, checklist)


def timeout_answer(timeout_s: float) -> dict:
    """The answer a missed deadline submits: a rejection on record."""
    reason = f"no decision within {timeout_s / 3600:g} h"
    return {"approve": False, "approver": TIMEOUT_APPROVER, "reason": reason}


def from_deployment() -> bool:
    """Whether the flow run in progress was started from a deployment."""
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


def approval_summary(
    model_name: str, version: str, test: dict | None, gates_passed: bool, report: str | None
) -> str:
    """The markdown shown above the approval form.

    Args:
        test: the candidate's test figures (escape and FPR rates, macro F1); None: unknown.
        gates_passed: the release gates' verdict.
        report: where its evaluation report (errors, fairness) is.
    """
    lines = [f"## Approve {model_name} version {version}?"]
    if test:
        lines.append(
            f"- test escape rate {test['escape']['rate']:.2%} (95% upper"
            f" {test['escape']['hi']:.2%}), FPR {test['fpr']['rate']:.2%},"
            f" macro F1 {test['macro_f1']:.3f}"
        )
    lines += [
        f"- release gates: {'all passed' if gates_passed else 'FAILED'}",
        f"- evaluation report (errors, fairness): `{report or 'none on record'}`",
        "Tick every checklist item and give your name to approve; anything less rejects.",
    ]
    return "\n".join(lines)


def request_approval(summary_markdown: str, timeout_s: int) -> Decision:
    """Wait for the form in the Prefect UI (or the API); no answer in `timeout_s` rejects.

    From a deployment the run is suspended (no process waits) and `flows.approval_deadlines`
    submits the rejection when the deadline passes; Prefect's own suspension timeout, a
    margin later, is only the backstop. By hand, the process pauses until the deadline.
    """
    form_type = ApprovalForm.with_initial_data(description=summary_markdown)
    if from_deployment():
        form = suspend_flow_run(wait_for_input=form_type, timeout=timeout_s + DEADLINE_MARGIN_S)
        return decide(form)
    try:
        form = pause_flow_run(wait_for_input=form_type, timeout=timeout_s)
    except FlowPauseTimeout:
        form = ApprovalForm(**timeout_answer(timeout_s))
    return decide(form)
