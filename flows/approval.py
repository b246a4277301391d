"""The approval step: a typed form in the Prefect UI, or an automatic decision on record."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

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


def request_approval(summary_markdown: str, timeout_s: int) -> Decision:
    """Pause the flow run until the form is submitted in the Prefect UI (or the API)."""
    form = pause_flow_run(
        wait_for_input=ApprovalForm.with_initial_data(description=summary_markdown),
        timeout=timeout_s,
    )
    return decide(form)
