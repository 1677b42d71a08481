"""What Queue Viewer shows: each link or system queue with its derived state and its columns
(message count, total size, oldest message, next retry, last error), and a message's headers.

Nothing here is stored twice: the state comes from the entries, the queue's flags, the
connector (schedule, ETRN, marked down) and the organization's "disable outbound mail"; the
columns are subqueries over each queue's open entries, one query for a whole page of queues.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Exists, F, Func, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from relay.delivery.schedule import windows_open
from relay.queue.models import SYSTEM_QUEUES, LinkQueue, QueueEntry
from smtpadmin.models import Organization


class QueueState(models.TextChoices):
    """Queue Viewer's connection states (Exchange 2003)."""

    ACTIVE = "active", "Active"
    READY = "ready", "Ready"
    RETRY = "retry", "Retry"
    SCHEDULED = "scheduled", "Scheduled"
    REMOTE = "remote", "Remote"
    FROZEN = "frozen", "Frozen"
    DISABLED = "disabled", "Disabled"


# Entries still in the queue (a frozen message stays in its queue).
OPEN_ENTRY_STATES = (QueueEntry.State.READY, QueueEntry.State.RETRY, QueueEntry.State.FROZEN)
# "Disable outbound mail" stops the outbound SMTP queues, not local delivery or the system
# queues (as Exchange's toolbar button does).
OUTBOUND_KINDS = (LinkQueue.Kind.CONNECTOR, LinkQueue.Kind.SMART_HOST, LinkQueue.Kind.DNS)


# --- connector schedules -----------------------------------------------------------------


def connector_schedule_open(connector: Any, now: datetime) -> bool:
    """Whether the connector's (normal) schedule lets it connect now: the delivery engine's
    own rule, so Queue Viewer says Scheduled exactly when delivery waits."""
    normal, _oversize = windows_open(connector, now)
    return normal


# --- the queue list ----------------------------------------------------------------------


def ensure_system_queues() -> None:
    """The system queues are always listed, as in Exchange, even before anything used them
    (one query once they exist)."""
    LinkQueue.for_specs(LinkQueue.system_spec(key) for key in SYSTEM_QUEUES)


def _per_queue(function: str, entries: models.QuerySet[QueueEntry], field: str) -> Subquery:
    """``function`` (COUNT, SUM) over this queue's open entries, as a correlated subquery
    without GROUP BY: each reads the queue's own slice of ``relay_entry_open_in_queue``
    (which carries the message size), never a join of every entry with its message."""
    return Subquery(
        entries.filter(queue=OuterRef("pk"))
        .order_by()
        .annotate(result=Func(F(field), function=function))
        .values("result")[:1],
        output_field=models.BigIntegerField(),
    )


def with_columns(
    queryset: models.QuerySet[LinkQueue], now: datetime | None = None
) -> models.QuerySet[LinkQueue]:
    """The queues with Queue Viewer's columns as annotations: ``message_count``,
    ``total_size``, ``oldest_message_at``, ``next_retry_at``, ``entry_error``, and ``has_due``,
    ``has_retry`` and ``has_active`` for the state. Each column is its own subquery over the queue's
    open entries (delivered ones stay in the table until tracking retention removes them);
    the last four only say whether there is one (what the state needs), by one index probe."""
    now = now or timezone.now()
    open_entries = QueueEntry.objects.filter(state__in=OPEN_ENTRY_STATES)
    mine = QueueEntry.objects.filter(queue=OuterRef("pk"))
    last_failure = (
        mine.filter(state=QueueEntry.State.RETRY)
        .exclude(last_response="")
        .order_by("-last_attempt_at", "-pk")
        .values("last_response")[:1]
    )
    # Queue ids sort by arrival, so the oldest message is the one with the lowest pk.
    oldest = (
        mine.filter(state__in=OPEN_ENTRY_STATES)
        .order_by("message_id")
        .values("message__received_at")[:1]
    )
    next_retry = (
        mine.filter(state=QueueEntry.State.RETRY, next_attempt_at__gt=now)
        .order_by("next_attempt_at")
        .values("next_attempt_at")[:1]
    )
    return queryset.annotate(
        message_count=Coalesce(_per_queue("COUNT", open_entries, "message"), 0),
        total_size=_per_queue("SUM", open_entries, "message_size"),
        oldest_message_at=Subquery(oldest),
        next_retry_at=Subquery(next_retry),
        has_due=Exists(mine.filter(state__in=QueueEntry.DUE_STATES, next_attempt_at__lte=now)),
        has_retry=Exists(mine.filter(state=QueueEntry.State.RETRY)),
        has_active=Exists(mine.filter(state__in=OPEN_ENTRY_STATES, lease_until__gt=now)),
        entry_error=Subquery(last_failure),
    )


def queue_list(now: datetime | None = None) -> models.QuerySet[LinkQueue]:
    """Every queue with its columns: system queues first, then by name."""
    queues = LinkQueue.objects.select_related("connector", "server")
    return with_columns(queues, now).order_by(
        models.Case(
            models.When(kind=LinkQueue.Kind.SYSTEM, then=0),
            default=1,
            output_field=models.IntegerField(),
        ),
        "name",
        "pk",
    )


def _columns_of(queue: LinkQueue, now: datetime) -> Any:
    """The annotated queue itself, or the same queue read again with its columns."""
    if hasattr(queue, "message_count"):
        return queue
    return with_columns(LinkQueue.objects.select_related("connector"), now).get(pk=queue.pk)


def outbound_disabled() -> bool:
    return bool(
        Organization.objects.filter(pk=1).values_list("outbound_mail_disabled", flat=True).first()
    )


def queue_state(
    queue: LinkQueue, now: datetime | None = None, *, disabled: bool | None = None
) -> str:
    """The state Queue Viewer shows, derived, never stored: Frozen (the administrator froze
    it), Disabled (outbound mail is disabled for the organization), Active (a worker holds a
    live lease on one of its messages), Remote (the connector waits for ETRN), Scheduled (the
    connector's schedule is closed now), Ready (messages are due), Retry (messages wait for
    their next attempt after a failure, or the connector is marked down), else Ready.

    ``queue`` may carry the annotations of ``with_columns`` (a list page passes them, and
    ``disabled`` read once); otherwise they are read here."""
    now = now or timezone.now()
    if queue.frozen:
        return QueueState.FROZEN
    if disabled is None:
        disabled = outbound_disabled()
    if disabled and queue.kind in OUTBOUND_KINDS:
        return QueueState.DISABLED
    row = _columns_of(queue, now)
    if row.has_active:
        return QueueState.ACTIVE
    connector = queue.connector
    if connector is not None:
        if connector.queue_for_remote_delivery:
            return QueueState.REMOTE
        if not connector_schedule_open(connector, now):
            return QueueState.SCHEDULED
    if row.has_due:
        return QueueState.READY
    if row.has_retry:
        return QueueState.RETRY
    if connector is not None and row.message_count and connector.is_marked_down:
        return QueueState.RETRY
    return QueueState.READY


def last_error(queue: LinkQueue) -> str:
    """The connection-level error of the last attempt, else the latest reply that put one of
    its messages in Retry."""
    if queue.last_error:
        return queue.last_error
    if queue.connector is not None and queue.connector.is_marked_down:
        return queue.connector.down_reason
    return str(getattr(queue, "entry_error", None) or "")


def source(queue: LinkQueue) -> str:
    """Queue Viewer's "Source" column: the connector, the server's local delivery, or how
    the next hop is found."""
    if queue.connector is not None:
        return f"Connector {queue.connector.name}"
    if queue.kind == LinkQueue.Kind.LOCAL:
        return f"Local delivery on {queue.server.name}" if queue.server else "Local delivery"
    if queue.kind == LinkQueue.Kind.SMART_HOST:
        return "Smart host of the virtual server"
    if queue.kind == LinkQueue.Kind.DNS:
        return "DNS (MX of the domain)"
    return "System"


# --- a message's headers -----------------------------------------------------------------


def message_headers(raw: bytes, limit: int = 500) -> list[tuple[str, str]]:
    """The header fields of a stored message as (name, value), folded lines joined, for
    display. Bytes that are not UTF-8 are replaced, never passed on as surrogates."""
    end = len(raw)
    for separator in (b"\r\n\r\n", b"\n\n"):
        found = raw.find(separator)
        if found != -1:
            end = min(end, found)
    text = raw[:end].decode("utf-8", "replace").replace("\r\n", "\n")
    fields: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            if len(fields) == limit:
                break
            name, _, value = line.partition(":")
            fields.append((name.strip(), value.strip()))
    return fields
