"""Steps a resumed run does not repeat.

A run suspended for approval (flows/approve_candidate.py) is rescheduled from the start when
the form is submitted; every step keyed by this policy then reads its persisted result
instead of running again. The key is the flow run, the task's code and its inputs, except
one named `data` (prepared data: large, and fixed by the run's config).
"""

from __future__ import annotations

from prefect import Task
from prefect.cache_policies import INPUTS, RUN_ID, TASK_SOURCE

ONCE_PER_RUN = RUN_ID + TASK_SOURCE + INPUTS - "data"


def once_per_run(step: Task) -> Task:
    """The task, run at most once per flow run (its result persisted and read back)."""
    return step.with_options(cache_policy=ONCE_PER_RUN, persist_result=True)
