"""Operator feedback: stored durably in the inspection log, and carried into the similar-defect
index so that later searches show the operator's class, not the model's."""

from __future__ import annotations

import logging

from service.inspection_log import FeedbackError
from service.similar import NoIndexError
from service.similar import UnknownDieError as NotIndexedError
from service.state import ServiceState

log = logging.getLogger("dieguard.service")
MAX_COMMENT_CHARS = 2000


def store_feedback(
    state: ServiceState,
    die_id: str,
    verdict: str,
    operator: str,
    true_class: int | None = None,
    comment: str = "",
) -> tuple[dict, bool]:
    """Store a confirm or override (InspectionLog.add_feedback) and relabel the indexed die.

    Returns:
        (the stored feedback row, whether it is new).
    Raises:
        what add_feedback raises: UnknownDieError, FeedbackError, LogUnavailableError;
        FeedbackError for a comment over MAX_COMMENT_CHARS.
    """
    if comment and len(comment) > MAX_COMMENT_CHARS:
        given = len(comment)
        raise FeedbackError(f"the comment has {given} characters, at most {MAX_COMMENT_CHARS}")
    row, created = state.log.add_feedback(die_id, verdict, operator, true_class, comment)
    if created:
        _relabel(state, row)
    return row, created


def _relabel(state: ServiceState, row: dict) -> None:
    label, name = int(row["label"]), row["label_name"]
    for pending in state.pending_embeddings:  # not yet written to the index
        if pending["die_id"] == row["die_id"]:
            pending.update(defect_class=label, class_name=name, label_origin="operator")
    inspection = state.log.get_inspection(row["inspection_id"])
    if inspection is None:
        return
    try:
        state.similar.relabel(str(inspection["model_version"]), row["die_id"], label, name)
    except (NotIndexedError, NoIndexError):
        pass  # still pending (updated above) or never indexed
    except Exception as err:  # the index is a convenience; the feedback is stored
        log.error("could not relabel %s in the similar-defect index: %s", row["die_id"], err)
