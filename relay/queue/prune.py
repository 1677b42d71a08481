"""Message tracking retention: history older than the organization's retention days goes.

Two kinds of rows are removed, a bounded batch per statement and a bounded time per run, so
the tables never see one huge DELETE and a run never holds a worker for long:

* tracking events older than the retention;
* messages received before the retention whose every recipient is finished (delivered,
  failed with its DSN made, or deleted) since before the retention and that wait in no
  queue, with their recipients and queue entries. A message's bytes live in its row, so
  they go with it. A message with an unfinished recipient or an owed DSN stays, however old.

What is left for the next run (``Pruned.complete`` is False) is found again from the start:
each statement re-checks its rows' age and state, so a run that stops anywhere, or two runs
at once, delete nothing twice and nothing too young.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from relay.queue.models import Message, QueueEntry, Recipient, TrackingEvent
from smtpadmin.models import Organization

DEFAULT_RETENTION_DAYS = 7  # the organization's default, while it has no row


def retention_days() -> int:
    """How many days tracking events and finished messages are kept."""
    days = Organization.objects.filter(pk=1).values_list("tracking_retention_days", flat=True)
    return days.first() or DEFAULT_RETENTION_DAYS


def kept_note(days: int) -> str:
    """What the Queue Viewer and the Tracking Center say about the retention."""
    unit = "day" if days == 1 else "days"
    return (
        f"History is kept for {days} {unit} (Message Tracking retention): tracking events "
        f"and finished messages older than that are removed every hour."
    )


@dataclass(frozen=True)
class Pruned:
    """What one run removed, and whether it got through everything that was due."""

    cutoff: datetime
    events: int
    messages: int
    complete: bool


def finished_before(cutoff: datetime) -> Q:
    """Messages received before ``cutoff``, waiting in no queue, every recipient finished
    before ``cutoff`` and no failure DSN still owed (the sweeper makes those)."""
    open_entries = QueueEntry.objects.filter(message=OuterRef("pk")).exclude(
        state=QueueEntry.State.DONE
    )
    recent_or_open = Recipient.objects.filter(message=OuterRef("pk")).filter(
        Q(state__in=Recipient.OPEN_STATES)
        | Q(completed_at__gte=cutoff)
        | Q(state=Recipient.State.FAILED, dsn_sent_at__isnull=True, entry__isnull=False)
    )
    return Q(received_at__lt=cutoff) & ~Q(Exists(open_entries)) & ~Q(Exists(recent_or_open))


def _events_batch(cutoff: datetime, batch: int) -> int:
    pks = list(
        TrackingEvent.objects.filter(at__lt=cutoff)
        .order_by("at")
        .values_list("pk", flat=True)[:batch]
    )
    if not pks:
        return 0
    # The age again: the ids were read outside any lock.
    deleted, _ = TrackingEvent.objects.filter(pk__in=pks, at__lt=cutoff).delete()
    return deleted


def _candidates(cutoff: datetime, after: int, batch: int) -> list[int]:
    """The next ``batch`` message pks received before ``cutoff``, after pk ``after``."""
    return list(
        Message.objects.filter(received_at__lt=cutoff, pk__gt=after)
        .order_by("pk")
        .values_list("pk", flat=True)[:batch]
    )


def _messages_batch(cutoff: datetime, pks: list[int]) -> int:
    """Delete those of ``pks`` that are finished, in one transaction: their rows are locked
    (skipping any another transaction holds), so nothing queues them again meanwhile."""
    with transaction.atomic():
        finished = list(
            Message.objects.filter(pk__in=pks)
            .filter(finished_before(cutoff))
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        if not finished:
            return 0
        # Children first, then the messages; ``only("pk")``: the deletion reads the rows it
        # deletes, and a message's row holds its bytes.
        Recipient.objects.filter(message_id__in=finished).delete()
        QueueEntry.objects.filter(message_id__in=finished).only("pk").delete()
        deleted, _ = Message.objects.filter(pk__in=finished).only("pk").delete()
    return deleted


def prune(
    now: datetime | None = None,
    *,
    days: int | None = None,
    batch: int | None = None,
    seconds: float | None = None,
) -> Pruned:
    """Remove what is older than the retention, ``batch`` rows per statement, until nothing
    is left or ``seconds`` have passed (the rest is the next run's)."""
    now = now or timezone.now()
    days = days or retention_days()
    batch = batch or settings.SMTPADMIN_PRUNE_BATCH
    seconds = settings.SMTPADMIN_PRUNE_SECONDS if seconds is None else seconds
    cutoff = now - timedelta(days=days)
    deadline = time.monotonic() + seconds
    events = messages = 0
    complete = False
    while True:
        removed = _events_batch(cutoff, batch)
        events += removed
        if removed < batch:
            break
        if time.monotonic() >= deadline:
            return Pruned(cutoff, events, messages, complete=False)
    after = 0
    while True:
        pks = _candidates(cutoff, after, batch)
        if pks:
            messages += _messages_batch(cutoff, pks)
            after = pks[-1]
        if len(pks) < batch:
            complete = True
            break
        if time.monotonic() >= deadline:
            break
    return Pruned(cutoff, events, messages, complete)
