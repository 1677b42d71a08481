"""The sweeper (Celery beat, every few seconds): what no task asks for by itself.

* Expiration: entries past their expiration time fail their open recipients with 4.4.7 and
  an expiration DSN (5.4.4 and a failure DSN in "Final destination currently unreachable":
  there never was a route).
* Delay notification: once per entry, after its delay notification time, a "delayed" DSN
  for the recipients still waiting.
* Failure DSNs that could not be made when the failure was recorded (remote and local
  delivery alike: their failed recipients keep ``dsn_sent_at`` empty).
* Due work: the queues with entries due now, including those whose worker died (an expired
  lease is due again) and those whose task the broker lost; the caller enqueues them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from relay.delivery.claims import (
    HOUSEKEEPING,
    claim,
    lease_owner,
    outbound_disabled,
    sendable,
    server_name,
)
from relay.delivery.dsn import DELAY, EXPIRATION, FAILURE
from relay.delivery.results import send_dsn
from relay.queue.models import UNREACHABLE_KEY, LinkQueue, QueueEntry, Recipient, TrackingEvent
from relay.queue.tracking import TrackingSettings, message_event

log = logging.getLogger("relay.delivery")

# Rows one sweep handles per kind of work; the rest waits a few seconds for the next one.
SWEEP_BATCH = 200
# A failed recipient's DSN is the delivering worker's to send; the sweeper steps in only
# after this long, so both do not try at once.
DSN_GRACE = timedelta(minutes=1)
EXPIRED = "4.4.7 Message expired: it could not be delivered before its expiration time"
UNREACHABLE = "5.4.4 No route found to the destination before the message expired"


def sweep(*, now: datetime | None = None) -> list[int]:
    """One pass: expirations, delay notifications, overdue failure DSNs; returns the queues
    with due work (none while outbound mail is disabled for the organization)."""
    now = now or timezone.now()
    for stage in (expire_due, notify_delays, recover_dsns):
        try:
            stage(now)
        except Exception:
            # One broken row must not stop the sweeper from finding due work.
            log.exception("The sweeper's %s failed", stage.__name__)
    return due_queues(now)


def expire_due(now: datetime) -> int:
    """Fail the open recipients of every entry past its expiration time (entries being
    delivered right now finish first; frozen messages wait for their administrator)."""
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    pks = list(
        QueueEntry.objects.filter(state__in=QueueEntry.DUE_STATES, expires_at__lte=now)
        .filter(free)
        .order_by("expires_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    owner = lease_owner(HOUSEKEEPING)
    entries = claim(pks, owner, now, due=False)
    expire(entries, owner, now)
    return len(entries)


def expire(entries: list[QueueEntry], owner: str, now: datetime) -> None:
    """Expire these entries (claimed by ``owner``), each in its own transaction with its DSN."""
    tracking = TrackingSettings.load()
    for entry in entries:
        try:
            _expire(entry, owner, now, tracking)
        except Exception:
            # Its claim stays until the lease runs out: the others go on meanwhile.
            log.exception("Could not expire queue entry %s", entry.pk)


def _expire(entry: QueueEntry, owner: str, now: datetime, tracking: TrackingSettings) -> None:
    unreachable = entry.queue.key == UNREACHABLE_KEY
    status, text = ("5.4.4", UNREACHABLE) if unreachable else ("4.4.7", EXPIRED)
    recipients = list(entry.recipients.filter(state__in=Recipient.OPEN_STATES))
    for recipient in recipients:
        recipient.state = Recipient.State.FAILED
        recipient.status = status
        # The last remote reply stays: it is the DSN's diagnostic, the reason it expired.
        recipient.last_response = recipient.last_response or text
        recipient.completed_at = now
    with transaction.atomic():
        Recipient.objects.bulk_update(
            recipients, ["state", "status", "last_response", "completed_at"]
        )
        entry.leased_to(owner).update(
            state=QueueEntry.State.DONE,
            completed_at=now,
            last_response=text,
            lease_owner="",
            lease_until=None,
        )
        if tracking.enabled and recipients:
            TrackingEvent.objects.bulk_create(
                message_event(
                    entry.message,
                    TrackingEvent.Kind.EXPIRED,
                    recipient=r.address,
                    response=r.last_response,
                    detail=text,
                    queue_name=entry.queue.name,
                    at=now,
                    server_name=server_name(entry.virtual_server),
                )
                for r in recipients
            )
        if recipients:
            kind = FAILURE if unreachable else EXPIRATION
            send_dsn(entry.message_id, [r.pk for r in recipients], kind, now)


def notify_delays(now: datetime) -> int:
    """One "delayed" DSN per entry still waiting after its delay notification time."""
    rows = list(
        QueueEntry.objects.filter(
            state__in=(*QueueEntry.DUE_STATES, QueueEntry.State.FROZEN),
            delay_notify_at__lte=now,
            delay_notified_at__isnull=True,
            expires_at__gt=now,
        )
        .order_by("delay_notify_at")
        .values_list("pk", "message_id")[:SWEEP_BATCH]
    )
    sent = 0
    for pk, message_pk in rows:
        with transaction.atomic():
            # Two sweeps at once: whoever sets the column sends the notification.
            if not QueueEntry.objects.filter(pk=pk, delay_notified_at__isnull=True).update(
                delay_notified_at=now
            ):
                continue
            waiting = list(
                Recipient.objects.filter(entry_id=pk, state__in=Recipient.OPEN_STATES)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            if waiting:
                # A delay notice that cannot be made is not retried: it is only news.
                send_dsn(message_pk, waiting, DELAY, now)
                sent += 1
    return sent


def recover_dsns(now: datetime) -> int:
    """Failure DSNs still owed: failed recipients of queued mail without ``dsn_sent_at``,
    those routing refused after the 250 (no entry) included. A recipient refused during the
    SMTP dialogue has no row: the client was told."""
    rows = list(
        Recipient.objects.filter(
            state=Recipient.State.FAILED,
            dsn_sent_at__isnull=True,
            completed_at__lte=now - DSN_GRACE,
        )
        .order_by("message_id", "pk")
        .values_list("message_id", "pk", "status")[:SWEEP_BATCH]
    )
    owed: dict[tuple[int, str], list[int]] = {}
    for message_pk, pk, status in rows:
        kind = EXPIRATION if status == "4.4.7" else FAILURE
        owed.setdefault((message_pk, kind), []).append(pk)
    for (message_pk, kind), pks in owed.items():
        with transaction.atomic():
            send_dsn(message_pk, pks, kind, now)
    return len(owed)


def due_queues(now: datetime) -> list[int]:
    """Outbound queues with due work that may send now: not frozen, not outside their
    connector's schedule, and the unreachable queue (its mail is routed again)."""
    if outbound_disabled():
        return []
    # One index probe per queue (its first due entry), so the cost follows the number of
    # queues, never the number of messages waiting in them.
    candidates = (
        LinkQueue.objects.filter(Exists(QueueEntry.objects.due(now).filter(queue=OuterRef("pk"))))
        .exclude(kind=LinkQueue.Kind.LOCAL)
        .exclude(frozen=True)
    )
    pks = set(candidates.values_list("pk", flat=True))
    found = []
    for queue in LinkQueue.objects.filter(pk__in=pks).select_related("connector").order_by("pk"):
        if queue.kind == LinkQueue.Kind.SYSTEM and queue.key != UNREACHABLE_KEY:
            continue
        sizes = sendable(queue, now)
        if sizes is None:
            continue
        if sizes and not QueueEntry.objects.due(now).filter(queue=queue).filter(sizes).exists():
            continue
        found.append(queue.pk)
    return found
