"""One PostgreSQL server under concurrent writers: two service replicas logging inspections,
operators giving feedback (some twice), and a training run logging MLflow metrics, all at once.
Skipped without PostgreSQL, failed under DIEGUARD_REQUIRE_POSTGRES=1."""

from __future__ import annotations

import threading
from collections import Counter

import sqlalchemy as sa

from registry import open_store
from service.inspection_log import InspectionLog
from service.log_tables import DECISIONS, FEEDBACK, INSPECTIONS, METADATA, engine_url
from tests.service.test_inspection_log import FAST, make_record

REPLICAS, WRITERS, PER_WRITER = 2, 4, 40
REVIEWED = 30  # dies given feedback while the writers run, each by two operators at once
METRIC_THREADS, STEPS = 3, 30


def die(writer: int, i: int) -> str:
    return f"A-L{writer:04d}-W01-D{i:03d}"


def run_all(jobs) -> list[BaseException]:
    """Start every job at once (a barrier), join them, return what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def wrap(job):
        try:
            barrier.wait()
            job()
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_concurrent_inspections_feedback_and_metrics_lose_nothing(postgres_url, tmp_path):
    engine = sa.create_engine(engine_url(postgres_url))
    METADATA.drop_all(engine)
    logs = [InspectionLog(postgres_url, **FAST).start() for _ in range(REPLICAS)]
    reviewed = [die(99, i) for i in range(REVIEWED)]
    for i, die_id in enumerate(reviewed):  # inspected before the rush
        logs[i % REPLICAS].record(make_record(die_id))
    assert all(log.flush(10) for log in logs)

    store = open_store(postgres_url, tmp_path / "artifacts")
    exp = store.client.create_experiment(f"concurrency-{tmp_path.name}")
    run_id = store.client.create_run(exp).info.run_id
    created: list[bool] = []  # list.append is atomic across threads

    def inspect(w: int):
        return lambda: [
            logs[w % REPLICAS].record(make_record(die(w, i))) for i in range(PER_WRITER)
        ]

    def review(replica: int):  # the same verdict on every die, through each replica
        def job():
            for die_id in reviewed:
                _, new = logs[replica].add_feedback(die_id, "confirm", "shift-a")
                created.append(new)

        return job

    def metrics(m: int):
        def job():
            for step in range(STEPS):
                store.client.log_metric(run_id, f"loss_{m}", 1.0 / (step + 1), step=step)

        return job

    jobs = [inspect(w) for w in range(WRITERS)] + [review(r) for r in range(REPLICAS)]
    jobs += [metrics(m) for m in range(METRIC_THREADS)]
    assert run_all(jobs) == []
    assert all(log.close(20) for log in logs)

    expected = REVIEWED + WRITERS * PER_WRITER
    with engine.connect() as conn:
        count = lambda table: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()  # noqa: E731
        assert count(INSPECTIONS) == expected
        assert count(DECISIONS) == 2 * expected  # champion and candidate per die
        assert count(FEEDBACK) == REVIEWED  # the second operator's identical verdict: stored once
    assert Counter(created) == {True: REVIEWED, False: (REPLICAS - 1) * REVIEWED}
    for log in logs:
        status = log.status()
        assert (status["dropped"], status["rejected"], status["buffered"]) == (0, 0, 0)
        assert status["failures"] == 0, status["last_error"]  # incl. creating the tables at once
    for m in range(METRIC_THREADS):
        history = store.client.get_metric_history(run_id, f"loss_{m}")
        assert sorted(h.step for h in history) == list(range(STEPS))
    engine.dispose()
