"""A bulk job through a real ``celery -A smtpadmin worker``: the API answers 202, the worker
(which finds ``relay.admin.jobs.run_job`` by the app's registration) does the work, and the
job's URL shows it done; a job whose worker died is published again by beat and goes on after
its cursor, acting on each message once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from relay import maintenance
from relay.admin import jobs
from relay.models import QueueEntry, TrackingEvent
from relay.queue.models import BulkJob
from smtpadmin.roles import Role
from tests.conftest import client_for, make_person
from tests.relay.celery_harness import CeleryProcess, wait_until, worker
from tests.relay.queue_world import make_queues
from tests.relay.test_e2e_delivery import lose_every_task


@pytest.fixture
def celery_worker(transactional_db: Any) -> Iterator[CeleryProcess]:
    lose_every_task()
    process = worker().start()
    yield process
    process.stop()
    print(f"--- celery worker ---\n{process.log()}")  # shown on failure


def test_a_worker_runs_the_job_the_api_answered_202_for(
    tmp_path: Any, celery_worker: CeleryProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "SYNC_LIMIT", 2)
    queues = make_queues(tmp_path)
    for n in range(5):
        queues.send([f"u{n}@spam.example"])
    api = client_for(make_person("adam-admin", Role.ADMINISTRATOR))

    answer = api.post(
        "/api/v1/messages/bulk",
        {"filter": {"domain": "spam.example"}, "action": "freeze"},
        format="json",
    )

    assert answer.status_code == 202, answer.content
    url = answer.json()["url"]
    done = wait_until(lambda: api.get(url).json()["state"] == BulkJob.State.DONE, 60, 0.5)
    assert done, celery_worker.log()
    assert api.get(url).json()["done"] == 5
    assert QueueEntry.objects.filter(state=QueueEntry.State.FROZEN).count() == 5


def test_beat_publishes_a_job_whose_worker_died_and_it_goes_on_after_its_cursor(
    tmp_path: Any, celery_worker: CeleryProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    queues = make_queues(tmp_path)
    messages = [queues.send([f"u{n}@spam.example"]) for n in range(5)]
    job = BulkJob.objects.create(
        action=BulkJob.Action.DELETE,
        criteria={"domain": "spam.example"},
        last_message=messages[-1].pk,
    )
    # A run that did its first batch of two, then lost its worker: the row says "running",
    # and its heartbeat (each batch's write) is ten minutes old.
    monkeypatch.setattr(jobs, "BATCH", 2)
    assert jobs.run_batch(job.pk) == BulkJob.State.RUNNING
    stale = timezone.now() - timedelta(minutes=10)
    BulkJob.objects.filter(pk=job.pk).update(updated_at=stale)
    # Another job that is moving: left alone.
    busy = BulkJob.objects.create(
        action=BulkJob.Action.FREEZE, criteria={"domain": "spam.example"}, state="running"
    )

    assert maintenance.resume_stalled_jobs() == [job.pk]  # what beat runs every minute
    assert maintenance.resume_stalled_jobs() == []  # its clock restarted: published once

    done = wait_until(lambda: BulkJob.objects.get(pk=job.pk).state == BulkJob.State.DONE, 60, 0.5)
    assert done, celery_worker.log()
    # Published once more all the same (an administrator's Resume): that run does nothing.
    jobs.publish(job.pk)
    ran = wait_until(lambda: celery_worker.log().count("run_job[") >= 4, 60, 0.5)
    assert ran, celery_worker.log()  # each run logs "received" and "succeeded"
    job.refresh_from_db()
    assert (job.done, job.changed, job.recipients) == (5, 5, 5)
    # Every message deleted exactly once: the first two by the run that died.
    deleted = TrackingEvent.objects.filter(kind=TrackingEvent.Kind.DELETED)
    assert sorted(deleted.values_list("queue_id", flat=True)) == sorted(
        m.queue_id for m in messages
    )
    assert not QueueEntry.objects.exclude(state=QueueEntry.State.DONE).exists()
    assert BulkJob.objects.get(pk=busy.pk).state == BulkJob.State.RUNNING
