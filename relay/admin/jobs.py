"""Bulk actions as background jobs: deleting a queue's messages, forcing a queue's connection,
and freezing, unfreezing or deleting what a search found, when they concern more messages than
one transaction should hold. The request writes a ``BulkJob`` row and publishes its id; a
Celery worker (``run_job``) works through the messages in ascending pk order, a batch per
transaction, moving the job's cursor and progress in the same transaction as the batch's
work. A worker that dies loses only the batch it was in: the task is acknowledged late, so the
broker hands it out again, and any run of the same job goes on after the cursor (an
administrator's "Resume" publishes it again, and beat does the same for a job that made no
progress for ``SMTPADMIN_JOB_STALL_MINUTES``: ``resume_stalled``). Two runs of one job never
work at once: each batch locks the job's row first, and a run that finds it locked leaves it
to the other.

Few messages are still done at once, in the request, as before (``SYNC_LIMIT``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from relay.admin import actions
from relay.admin.paging import capped_count
from relay.admin.search import MessageFilter
from relay.admin.viewer import OPEN_ENTRY_STATES
from relay.queue import dispatch
from relay.queue.models import BulkJob, LinkQueue, Message, QueueEntry

log = logging.getLogger("relay.admin")

# Up to this many messages an action is done in the request; more become a job.
SYNC_LIMIT = actions.CHUNK
# Messages per batch (per transaction) of a job.
BATCH = actions.CHUNK


def _user_of(by: Any) -> tuple[Any, str]:
    if by is not None and getattr(by, "is_authenticated", False):
        return by, str(by.get_username())
    return None, "system"


# --- what a job works on -----------------------------------------------------------------


def queue_messages(queue: LinkQueue) -> models.QuerySet[QueueEntry]:
    """The open entries of a queue, whose message pks a queue job works through."""
    return QueueEntry.objects.filter(queue=queue, state__in=OPEN_ENTRY_STATES)


def search(criteria: dict[str, str]) -> MessageFilter:
    return MessageFilter(data=criteria, queryset=Message.objects.all())


def many_in_queue(queue: LinkQueue) -> bool:
    """Whether the queue's messages are too many for one request."""
    return capped_count(queue_messages(queue), SYNC_LIMIT).capped


def many_found(found: MessageFilter) -> bool:
    return capped_count(found.qs.values("pk"), SYNC_LIMIT).capped


def _batch(job: BulkJob) -> list[int]:
    """The next message pks of the job after its cursor, at most ``BATCH``."""
    bounds = {"gt": job.cursor, "lte": job.last_message}
    if job.queue_id is not None:
        return list(
            QueueEntry.objects.filter(
                queue_id=job.queue_id,
                state__in=OPEN_ENTRY_STATES,
                message_id__gt=bounds["gt"],
                message_id__lte=bounds["lte"],
            )
            .order_by("message_id")
            .values_list("message_id", flat=True)[:BATCH]
        )
    found = search(job.criteria)
    if not found.is_valid():  # the filters were checked when it was asked for
        raise ValueError(f"the job's search is no longer valid: {found.errors.as_json()}")
    return list(
        found.qs.filter(pk__gt=bounds["gt"], pk__lte=bounds["lte"])
        .order_by("pk")
        .values_list("pk", flat=True)[:BATCH]
    )


def _total(job: BulkJob) -> int:
    if job.queue_id is not None:
        return QueueEntry.objects.filter(
            queue_id=job.queue_id, state__in=OPEN_ENTRY_STATES, message_id__lte=job.last_message
        ).count()
    return search(job.criteria).qs.filter(pk__lte=job.last_message).order_by().values("pk").count()


# --- asking for one ----------------------------------------------------------------------


def start(
    action: str,
    by: Any,
    *,
    queue: LinkQueue | None = None,
    criteria: dict[str, str] | None = None,
    ndr: bool = False,
    description: str = "",
) -> BulkJob:
    """Write the job and publish it once committed. Its messages are those there now: the
    newest message's pk bounds it."""
    if action not in BulkJob.Action.values:
        raise ValueError(f"unknown job action {action!r}")
    user, name = _user_of(by)
    newest = Message.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    job = BulkJob.objects.create(
        action=action,
        ndr=ndr and action == BulkJob.Action.DELETE,
        queue=queue,
        criteria=dict(criteria or {}),
        description=(description or (str(queue) if queue else ""))[:1000],
        last_message=newest,
        user=user,
        username=name,
    )
    transaction.on_commit(lambda: publish(job.pk), robust=True)
    return job


def publish(job_pk: int) -> bool:
    """Hand the job to a worker; False (logged) when the broker cannot be reached: the job
    waits, and Resume publishes it again."""
    try:
        run_job.delay(job_pk)
    except Exception:
        log.exception("Could not publish bulk job %s; it waits for Resume", job_pk)
        return False
    return True


def resume(job: BulkJob) -> bool:
    """Publish an unfinished job again (its worker died, or the broker lost it): the run goes
    on after its cursor. A failed job is tried again from there too."""
    if job.state == BulkJob.State.DONE:
        return False
    BulkJob.objects.filter(pk=job.pk).exclude(state=BulkJob.State.DONE).update(
        state=BulkJob.State.PENDING, error="", updated_at=timezone.now()
    )
    transaction.on_commit(lambda: publish(job.pk), robust=True)
    return True


# Unfinished jobs beat looks at per run (the oldest first; the rest wait a minute).
STALLED_LIMIT = 100
UNFINISHED = (BulkJob.State.PENDING, BulkJob.State.RUNNING)


def resume_stalled(now: datetime | None = None, minutes: int | None = None) -> list[int]:
    """Publish again every unfinished job whose row has not moved for ``minutes``: each
    batch writes ``updated_at``, so a job without progress lost its worker or its task.
    The conditional update that restarts its clock is the arbiter: two beats (or a beat and
    an administrator's Resume) publish it once, and a batch still running holds the row, so
    the update waits for it and then finds the job moving. A second publish would be harmless
    anyway: runs go on after the cursor, one at a time. Returns the jobs published."""
    now = now or timezone.now()
    minutes = minutes or settings.SMTPADMIN_JOB_STALL_MINUTES
    before = now - timedelta(minutes=minutes)
    stalled = BulkJob.objects.filter(state__in=UNFINISHED, updated_at__lt=before)
    published = []
    for pk in stalled.order_by("updated_at").values_list("pk", flat=True)[:STALLED_LIMIT]:
        if not stalled.filter(pk=pk).update(updated_at=now):
            continue  # it moved meanwhile, or another beat took it
        log.warning("Bulk job %s made no progress for %d minutes; publishing it again", pk, minutes)
        if publish(pk):
            published.append(pk)
    return published


# --- the worker's side -------------------------------------------------------------------


@shared_task(acks_late=True, ignore_result=True)
def run_job(job_pk: int) -> str:
    """Work through the job a batch at a time until its messages are done; returns the
    job's state ("busy" when another run holds it). Safe to run twice: the cursor decides."""
    job = BulkJob.objects.filter(pk=job_pk).first()
    if job is None or job.state == BulkJob.State.DONE:
        return "gone" if job is None else str(job.state)
    if job.total is None:
        BulkJob.objects.filter(pk=job_pk, total__isnull=True).update(total=_total(job))
    try:
        while True:
            outcome = run_batch(job_pk)
            if outcome != BulkJob.State.RUNNING:
                return outcome
    except Exception as error:
        log.exception("Bulk job %s failed", job_pk)
        BulkJob.objects.filter(pk=job_pk).exclude(state=BulkJob.State.DONE).update(
            state=BulkJob.State.FAILED, error=str(error)[:2000], updated_at=timezone.now()
        )
        return str(BulkJob.State.FAILED)


def run_batch(job_pk: int) -> str:
    """One batch in one transaction with the job's row locked: the action on the next
    messages after the cursor, then the cursor and the counts. The last batch finishes the
    job and writes its audit entry."""
    now = timezone.now()
    with transaction.atomic():
        job = (
            # The job's row alone: the queue's row is delivery's to update meanwhile.
            BulkJob.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("queue", "user")
            .filter(pk=job_pk)
            .first()
        )
        if job is None:
            return "busy"
        if job.state == BulkJob.State.DONE:
            return str(job.state)
        pks = _batch(job)
        job.state = BulkJob.State.RUNNING
        if pks:
            _apply(job, pks, now)
            job.done += len(pks)
            job.cursor = pks[-1]
        if len(pks) < BATCH:
            job.cursor = job.last_message
            job.state = BulkJob.State.DONE
            job.finished_at = now
            _audit(job)
        job.updated_at = now
        job.save()
    return str(job.state)


def _apply(job: BulkJob, pks: list[int], now: Any) -> None:
    by = job.user
    condition = Q(message_id__in=pks)
    if job.queue_id is not None:
        condition &= Q(queue_id=job.queue_id)
    if job.action == BulkJob.Action.RETRY:
        job.changed += (
            QueueEntry.objects.filter(condition)
            .filter(state__in=QueueEntry.DUE_STATES, next_attempt_at__gt=now)
            .update(next_attempt_at=now)
        )
        if job.queue_id is not None:
            dispatch.wake([job.queue_id])
    elif job.action == BulkJob.Action.DELETE:
        result, _per_message = actions.delete_entries(condition, by, job.ndr, now)
        job.changed += result.messages
        job.recipients += result.recipients
        job.dsns += len(result.dsns)
        job.dsn_errors += result.dsn_errors
    elif job.action == BulkJob.Action.FREEZE:
        job.changed += len({e.message_id for e in actions.freeze_entries(condition)})
    else:
        job.changed += len({e.message_id for e in actions.unfreeze_entries(condition)})


def _audit(job: BulkJob) -> None:
    """The same audit entry the action writes when it runs in the request."""
    by = job.user
    if job.queue is not None:
        if job.action == BulkJob.Action.RETRY:
            actions.record_queue_retry(by, job.queue)
        elif job.changed:
            actions.record_queue_delete(by, job.queue, job.changed, job.recipients, job.ndr)
        return
    if job.changed:
        actions.record_bulk(by, job.action, job.ndr, job.changed, job.description)
