"""The monitor's thresholds, windows, label minimums and sample sizes (the seed's values).

Drift scores of numeric families (process parameters, image statistics, embedding
components) are Evidently's normed Wasserstein distance per column: the distance between the
two distributions in units of the reference's standard deviation. A family has drifted when
the share of its drifted columns reaches the family's share threshold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MonitorConfig:
    """Everything the hourly check decides with; see the field comments for the why.

    Label minimums: below them a rate is reported but never alerts. With 100 defective
    labels a single escape is 1.0%, under the 1.5% limit, so one die cannot fire the alert;
    two can. 100 good labels put the FPR's 95% interval within about +-8 points of 20%.
    """

    # performance window (the seed: rolling 24 h)
    window_hours: float = 24.0
    max_escape: float = 0.015  # alert above: defective dies passed / defective dies labelled
    max_fpr: float = 0.20  # alert above: good dies flagged / good dies labelled
    min_defective_labels: int = 100  # before the escape rate may alert
    min_good_labels: int = 100  # before the FPR may alert
    confidence: float = 0.95  # of the Clopper-Pearson intervals
    max_p99_ms: float = 300.0  # alert when the served latency's p99 is above
    min_missing_note_rate: float = 0.5  # alert when the share without notes drops below
    min_inspections: int = 100  # before latency and missing-note alerts

    # drift window (each hourly check judges the last hour against the reference)
    drift_window_hours: float = 1.0
    max_reference_dies: int = 1000  # sampled from the reference folder (and index)
    max_current_dies: int = 1000  # sampled from the window
    min_drift_dies: int = 30  # fewer in the window: the family is skipped
    seed: int = 0  # of the reference sample

    process_column_threshold: float = 1.0  # normed Wasserstein (reference sigma)
    process_drift_share: float = 0.1  # 5 of the 48 parameters
    mean_shift_sigma: float = 3.0  # the seed: a parameter's mean beyond 3 reference sigma
    image_column_threshold: float = 1.0
    image_drift_share: float = 0.2  # 3 of the 15 intensity statistics
    embedding_components: int = 5  # principal components fitted on the reference
    embedding_column_threshold: float = 1.0
    embedding_drift_share: float = 0.2  # 1 of 5 components
    notes_js_threshold: float = 0.35  # Jensen-Shannon distance of the word distributions
    notes_null_quantile: float = 0.999  # and above this quantile of chance (reference) draws
    notes_null_draws: int = 2000  # of as many reference notes as the window has
    new_word_share: float = 0.05  # share of the window's words that are new and recurring
    new_word_min_count: int = 2  # a word seen once is more often a typo than a new term
    min_notes: int = 20  # fewer notes in the window: the notes family is skipped
    report_retention_days: float = 30.0  # HTML reports of older checks are deleted (0: kept)

    # the retraining trigger (the seed: above threshold for more than 6 consecutive hours)
    sustained_hours: float = 6.0
    max_gap_hours: float = 1.5  # a longer silence between two checks breaks a run

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | None = None) -> MonitorConfig:
        """The defaults with some fields changed (e.g. a flow's `thresholds` parameter).

        Raises:
            ValueError: an unknown field.
        """
        overrides = dict(overrides or {})
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown monitor settings: {', '.join(unknown)}")
        defaults = cls()
        typed = {k: type(getattr(defaults, k))(v) for k, v in overrides.items()}
        return dataclasses.replace(defaults, **typed)
