"""Bulk actions on many messages run as background jobs: the request answers with the job
(console: its progress page; API: 202 and its URL), a worker's ``run_job`` works a batch per
transaction, a run that dies is continued by the next run from the job's cursor, and the
audit log gets the same entry as when the action runs in the request."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from relay.admin import actions, jobs
from relay.models import Message, QueueEntry, Recipient, TrackingEvent
from relay.queue.models import BulkJob
from smtpadmin.models import AuditEntry
from tests.relay.queue_world import Queues, html_of, logged_in, queue_named

pytestmark = pytest.mark.django_db

VIEWER = "/relay/queues/"


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """More than two messages make a job, worked two at a time."""
    monkeypatch.setattr(jobs, "SYNC_LIMIT", 2)
    monkeypatch.setattr(jobs, "BATCH", 2)


def waiting(queue_name: str) -> int:
    return Recipient.objects.filter(
        entry__queue__name=queue_name, state__in=Recipient.OPEN_STATES
    ).count()


def send_many(queues: Queues, count: int, domain: str = "example.org") -> list[Message]:
    return [queues.send([f"u{n}@{domain}"]) for n in range(count)]


# --- the console -------------------------------------------------------------------------


def test_deleting_many_messages_of_a_queue_becomes_a_job_that_a_worker_finishes(
    administrator: User, queues: Queues, small_batches: None
) -> None:
    send_many(queues, 5)
    other = queues.send(["bob@example.net"])
    queue = queue_named("example.org")
    client = logged_in(administrator)

    answer = client.post(f"{VIEWER}{queue.pk}/delete/", {"ndr": "0"})

    job = BulkJob.objects.get()
    assert answer.status_code == 302 and answer["Location"] == f"/relay/jobs/{job.pk}/"
    assert (job.action, job.state, job.queue, job.username) == (
        "delete",
        "pending",
        queue,
        "adam-admin",
    )
    assert waiting("example.org") == 5  # nothing done in the request
    page = html_of(client.get(f"/relay/jobs/{job.pk}/"))
    assert "Waiting for a worker" in page and 'hx-trigger="every 2s"' in page

    assert jobs.run_job(job.pk) == "done"

    job.refresh_from_db()
    assert (job.total, job.done, job.changed, job.recipients) == (5, 5, 5, 5)
    assert waiting("example.org") == 0
    assert Recipient.objects.get(message=other).state == Recipient.State.PENDING
    assert TrackingEvent.objects.filter(kind="deleted", by="adam-admin").count() == 5
    (audit,) = AuditEntry.objects.filter(field="messages")
    assert (audit.username, audit.old_value, audit.new_value) == (
        "adam-admin",
        "5 message(s), 5 recipient(s)",
        "deleted without NDR",
    )
    done = client.get(f"/relay/jobs/{job.pk}/", HTTP_HX_REQUEST="true")
    fragment = html_of(done)
    assert "<html" not in fragment and "hx-trigger" not in fragment and "100%" in fragment
    assert "5 of 5 messages looked at" in fragment


def test_few_messages_are_still_deleted_in_the_request(
    administrator: User, queues: Queues, small_batches: None
) -> None:
    send_many(queues, 2)
    queue = queue_named("example.org")
    logged_in(administrator).post(f"{VIEWER}{queue.pk}/delete/", {"ndr": "0"})
    assert not BulkJob.objects.exists() and waiting("example.org") == 0


def test_a_run_that_dies_mid_job_is_continued_by_the_next_run_without_doing_a_batch_twice(
    administrator: User, queues: Queues, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    send_many(queues, 5)
    job = jobs.start("delete", administrator, queue=queue_named("example.org"), ndr=True)
    real = actions.delete_entries
    calls = {"n": 0}

    class WorkerKilled(BaseException):
        """What the job sees of a worker killed in the middle of a batch: nothing more."""

    def dies_in_the_second_batch(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        result = real(*args, **kwargs)
        if calls["n"] == 2:
            raise WorkerKilled
        return result

    monkeypatch.setattr(actions, "delete_entries", dies_in_the_second_batch)
    with pytest.raises(WorkerKilled):
        jobs.run_job(job.pk)

    job.refresh_from_db()
    assert (job.state, job.done, job.changed) == ("running", 2, 2)  # the first batch stands
    assert waiting("example.org") == 3  # the second batch's work was rolled back with it
    monkeypatch.setattr(actions, "delete_entries", real)

    assert jobs.run_job(job.pk) == "done"

    job.refresh_from_db()
    assert (job.done, job.changed, job.recipients, job.dsns) == (5, 5, 5, 5)
    assert waiting("example.org") == 0
    assert TrackingEvent.objects.filter(kind="deleted").count() == 5
    assert Message.objects.filter(system=True).count() == 5  # one NDR each, never two
    assert AuditEntry.objects.filter(field="messages").count() == 1
    assert jobs.run_job(job.pk) == "done"  # once more: nothing happens
    assert Message.objects.filter(system=True).count() == 5


def test_a_job_that_failed_is_resumed_from_the_console_where_it_stopped(
    administrator: User,
    queues: Queues,
    small_batches: None,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    send_many(queues, 5)
    job = jobs.start("freeze", administrator, queue=None, criteria={"domain": "example.org"})
    real = actions.freeze_entries
    calls = {"n": 0}

    def fails_in_the_second_batch(condition: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("the database went away")
        return real(condition)

    monkeypatch.setattr(actions, "freeze_entries", fails_in_the_second_batch)
    assert jobs.run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert (job.state, job.done, job.error) == ("failed", 2, "the database went away")
    client = logged_in(administrator)
    page = html_of(client.get(f"/relay/jobs/{job.pk}/"))
    assert "the database went away" in page and f"/relay/jobs/{job.pk}/resume/" in page

    published: list[int] = []
    monkeypatch.setattr(jobs, "publish", published.append)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/relay/jobs/{job.pk}/resume/")
    assert published == [job.pk]
    monkeypatch.setattr(actions, "freeze_entries", real)
    assert jobs.run_job(job.pk) == "done"
    assert QueueEntry.objects.filter(state="frozen").count() == 5
    (audit,) = AuditEntry.objects.filter(field="bulk")
    assert audit.new_value == "freeze" and "5 message(s)" in audit.object_repr


def test_mail_arriving_after_the_job_was_asked_for_is_not_touched(
    administrator: User, queues: Queues, small_batches: None
) -> None:
    send_many(queues, 3)
    job = jobs.start("freeze", administrator, criteria={"domain": "example.org"})
    late = queues.send(["late@example.org"])
    jobs.run_job(job.pk)
    assert QueueEntry.objects.get(message=late).state == QueueEntry.State.READY
    assert QueueEntry.objects.filter(state="frozen").count() == 3


def test_a_bulk_action_on_many_found_messages_becomes_a_job(
    administrator: User, queues: Queues, small_batches: None
) -> None:
    send_many(queues, 3, "spam.example")
    client = logged_in(administrator)
    answer = client.post(
        "/relay/find/confirm/", {"domain": "spam.example", "action": "delete", "ndr": "0"}
    )
    job = BulkJob.objects.get()
    assert answer["Location"] == f"/relay/jobs/{job.pk}/"
    assert job.criteria == {"domain": "spam.example"} and job.description
    jobs.run_job(job.pk)
    assert waiting("spam.example") == 0
    assert "spam.example" in html_of(client.get("/relay/jobs/"))


def test_force_connection_on_a_long_queue_is_a_job(
    administrator: User, queues: Queues, small_batches: None
) -> None:
    sent = send_many(queues, 3)
    later = timezone.now() + timedelta(hours=1)
    QueueEntry.objects.filter(message__in=sent).update(state="retry", next_attempt_at=later)
    queue = queue_named("example.org")
    logged_in(administrator).post(f"{VIEWER}{queue.pk}/retry/")
    job = BulkJob.objects.get()
    assert QueueEntry.objects.filter(next_attempt_at=later).count() == 3
    jobs.run_job(job.pk)
    assert not QueueEntry.objects.filter(next_attempt_at=later).exists()
    job.refresh_from_db()
    assert job.changed == 3
    assert AuditEntry.objects.filter(field="connection", new_value="force connection").count() == 1


def test_a_view_only_administrator_sees_jobs_but_cannot_start_or_resume_one(
    view_only: User, administrator: User, queues: Queues, small_batches: None
) -> None:
    send_many(queues, 3)
    queue = queue_named("example.org")
    job = jobs.start("delete", administrator, queue=queue)
    client = logged_in(view_only)
    page = client.get(f"/relay/jobs/{job.pk}/")
    assert page.status_code == 200 and "/resume/" not in html_of(page)
    assert client.post(f"/relay/jobs/{job.pk}/resume/").status_code == 403
    assert client.post(f"{VIEWER}{queue.pk}/delete/", {"ndr": "0"}).status_code == 403
    assert BulkJob.objects.count() == 1
    assert logged_in(None).get(f"/relay/jobs/{job.pk}/")["Location"].startswith("/login/")


# --- the API -----------------------------------------------------------------------------


def test_the_api_answers_202_with_the_job_for_many_messages(
    admin_api: APIClient, viewer_api: APIClient, queues: Queues, small_batches: None
) -> None:
    send_many(queues, 3)
    queue = queue_named("example.org")

    answer = admin_api.post(f"/api/v1/queues/{queue.pk}/delete-messages", {"ndr": False})

    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert answer["Location"] == body["url"] == f"/api/v1/jobs/{body['id']}/"
    assert (body["action"], body["state"], body["queue"]) == ("delete", "pending", queue.pk)
    jobs.run_job(body["id"])
    progress = viewer_api.get(body["url"]).json()
    assert (progress["state"], progress["done"], progress["percent"]) == ("done", 3, 100)
    assert viewer_api.post(f"/api/v1/queues/{queue.pk}/delete-messages").status_code == 403
    assert viewer_api.get("/api/v1/jobs/", {"state": "done"}).json()["count"] == 1


def test_the_api_bulk_action_on_many_found_is_a_job(
    admin_api: APIClient, queues: Queues, small_batches: None
) -> None:
    send_many(queues, 3, "spam.example")
    answer = admin_api.post(
        "/api/v1/messages/bulk",
        {"filter": {"domain": "spam.example"}, "action": "freeze"},
        format="json",
    )
    assert answer.status_code == 202, answer.content
    jobs.run_job(answer.json()["id"])
    assert QueueEntry.objects.filter(state="frozen").count() == 3


def test_small_api_actions_stay_synchronous(
    admin_api: APIClient, queues: Queues, small_batches: None
) -> None:
    send_many(queues, 2)
    queue = queue_named("example.org")
    answer = admin_api.post(f"/api/v1/queues/{queue.pk}/delete-messages")
    assert answer.status_code == 200 and answer.json()["messages"] == 2
    assert not BulkJob.objects.exists()


def test_beat_publishes_again_only_unfinished_jobs_that_stopped_moving(
    administrator: User, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.SMTPADMIN_JOB_STALL_MINUTES = 5
    now = timezone.now()
    old = now - timedelta(minutes=6)

    def job(state: str, updated_at: Any) -> BulkJob:
        return BulkJob.objects.create(action="freeze", state=state, updated_at=updated_at)

    lost_task = job(BulkJob.State.PENDING, old)
    dead_worker = job(BulkJob.State.RUNNING, old)
    moving = job(BulkJob.State.RUNNING, now - timedelta(minutes=4))
    job(BulkJob.State.DONE, old)
    job(BulkJob.State.FAILED, old)  # waits for an administrator's Resume
    published: list[int] = []

    def publish(pk: int) -> bool:
        published.append(pk)
        return True

    monkeypatch.setattr(jobs, "publish", publish)

    assert jobs.resume_stalled(now) == [lost_task.pk, dead_worker.pk]
    assert published == [lost_task.pk, dead_worker.pk]
    assert BulkJob.objects.get(pk=dead_worker.pk).updated_at == now
    # A second beat a moment later publishes nothing: each stalled job went out once.
    assert jobs.resume_stalled(now + timedelta(seconds=60)) == []
    later = jobs.resume_stalled(now + timedelta(minutes=6))
    assert sorted(later) == [lost_task.pk, dead_worker.pk, moving.pk]  # none moved since
