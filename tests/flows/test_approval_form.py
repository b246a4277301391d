"""The approval form's rule: approving takes a named approver and every checklist item."""

import pytest
from pydantic import ValidationError

from flows.approval import CHECKLIST, ApprovalForm, automatic_approval, decide

CHECKED = dict.fromkeys(CHECKLIST, True)


def test_a_complete_form_approves_with_its_approver_and_reason():
    form = ApprovalForm(approve=True, approver=" q.engineer ", reason="holds", **CHECKED)
    decision = decide(form)
    assert decision.approved and not decision.automatic
    assert decision.approver == "q.engineer" and decision.reason == "holds"
    assert decision.checklist == CHECKED


def test_an_unchecked_item_refuses_the_approval_and_says_which():
    checklist = CHECKED | {"reviewed_fairness_audit": False}
    decision = decide(ApprovalForm(approve=True, approver="q.engineer", reason="ok", **checklist))
    assert not decision.approved
    assert decision.reason == "approval refused: incomplete form (reviewed_fairness_audit). ok"
    assert decision.checklist["reviewed_fairness_audit"] is False


def test_an_approval_without_an_approver_is_refused():
    decision = decide(ApprovalForm(approve=True, approver="  ", **CHECKED))
    assert not decision.approved and decision.approver == "unknown"
    assert decision.reason == "approval refused: incomplete form (approver)."


def test_the_form_cannot_be_submitted_without_an_approver():
    with pytest.raises(ValidationError, match="approver"):
        ApprovalForm(approve=False, reason="edge FPR")


def test_a_rejection_needs_no_checklist():
    decision = decide(ApprovalForm(approve=False, approver="q.engineer", reason="edge FPR"))
    assert not decision.approved and decision.reason == "edge FPR"


def test_the_automatic_decision_is_recorded_as_automatic():
    decision = automatic_approval()
    assert decision.approved and decision.automatic and decision.approver == "auto-approve"
    assert not any(decision.checklist.values())
