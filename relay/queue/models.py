"""Messages, recipients, link queues, queue entries and tracking events: the queue is a table.

The relay's intake writes these rows in one transaction before it answers 250; local delivery
(``relay.local``) and the Celery delivery claim due entries with a lease. Queue
states as Queue Viewer shows them (Active, Ready, Retry, Scheduled, Remote, Frozen, Disabled)
are derived from these rows and from the connector and organization settings, never stored.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from connectors.routing import UNREACHABLE_QUEUE
from servers.models import Server, VirtualServer

# --- queue ids ---------------------------------------------------------------------------

# Crockford's base 32: upper case, no I, L, O or U, so an id read aloud or retyped survives.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
_TIME_BITS = 42  # milliseconds: good until 2159
_RANDOM_BITS = 28
QUEUE_ID_LENGTH = (_TIME_BITS + _RANDOM_BITS) // 5  # 14
# Characters of a Message-ID kept: indexed, and PostgreSQL's btree rows stop near 2700 bytes.
MESSAGE_ID_LENGTH = 500


def new_queue_id(now_ms: int | None = None) -> str:
    """A short, unique, upper-case queue id like Postfix's: milliseconds since 2020 then random
    bits, so ids sort by arrival and two messages in the same millisecond still differ. The
    unique index on ``Message.queue_id`` is the final word; intake retries on a clash."""
    ms = (int(time.time() * 1000) if now_ms is None else now_ms) - _EPOCH_MS
    value = ((ms % (1 << _TIME_BITS)) << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS)
    chars = []
    for _ in range(QUEUE_ID_LENGTH):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


# --- messages ----------------------------------------------------------------------------


class Priority(models.TextChoices):
    HIGH = "high", "High"
    NORMAL = "normal", "Normal"
    LOW = "low", "Low"


class Message(models.Model):
    """One accepted message: the raw bytes as stored (with our Received header) and its
    envelope and client facts. Deleting it deletes its recipients and queue entries; tracking
    events keep their own copy of what they need."""

    queue_id = models.CharField(max_length=20, unique=True)
    virtual_server = models.ForeignKey(
        VirtualServer, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    sender = models.CharField(max_length=320, blank=True, help_text="Blank = the null sender <>")
    content = models.BinaryField()
    size = models.PositiveBigIntegerField(help_text="Bytes, as stored")
    message_id = models.CharField("Message-ID", max_length=MESSAGE_ID_LENGTH, blank=True)
    subject = models.TextField(blank=True, help_text="Decoded for display (RFC 2047)")
    priority = models.CharField(max_length=6, choices=Priority.choices, default=Priority.NORMAL)
    system = models.BooleanField(default=False, help_text="A DSN / NDR (the null sender)")
    # The client as the listener saw it.
    client_address = models.CharField(max_length=100, blank=True)
    client_name = models.CharField(max_length=255, blank=True, help_text="Confirmed reverse DNS")
    helo = models.CharField("HELO", max_length=255, blank=True)
    auth_user = models.CharField(max_length=255, blank=True)
    protocol = models.CharField(max_length=12, blank=True, help_text="ESMTPSA and the like")
    smtputf8 = models.BooleanField("SMTPUTF8", default=False)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["received_at"], name="relay_message_received"),
            models.Index(fields=["sender"], name="relay_message_sender"),
            models.Index(fields=["message_id"], name="relay_message_message_id"),
        ]

    def __str__(self) -> str:
        return self.queue_id

    @property
    def null_sender(self) -> bool:
        return self.sender == ""

    @property
    def raw(self) -> bytes:
        """The content as bytes (PostgreSQL hands back a memoryview)."""
        return bytes(self.content)


# --- link queues -------------------------------------------------------------------------

UNREACHABLE_KEY = "system:unreachable"
# The system queues of Queue Viewer, by key. The unreachable one's name is routing's.
SYSTEM_QUEUES = {
    "system:pre-routing": "Messages waiting to be routed",
    UNREACHABLE_KEY: UNREACHABLE_QUEUE,
    "system:failed-retry": "Failed message retry",
    "system:dsn-pending": "DSN messages pending submission",
}


@dataclass(frozen=True)
class QueueSpec:
    """Which link queue a route leads to: ``key`` identifies it, the rest describes it."""

    key: str
    kind: str
    name: str
    server_id: int | None = None
    connector_id: int | None = None
    domain: str = ""
    smart_hosts: str = ""


class LinkQueue(models.Model):
    """One next hop (Queue Viewer's link queue), or a system queue."""

    class Kind(models.TextChoices):
        LOCAL = "local", "Local delivery"
        CONNECTOR = "connector", "Connector"
        SMART_HOST = "smart_host", "Smart host"
        DNS = "dns", "DNS"
        SYSTEM = "system", "System"

    # "local:<server id>", "connector:<id>:domain:<domain>", "connector:<id>:smart-hosts:<hosts>",
    # "smart-hosts:<hosts>", "dns:<domain>", "system:<name>": one row per next hop, ever.
    key = models.CharField(max_length=1300, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    name = models.CharField(max_length=1100)
    # Local delivery: the server whose drop directory receives the mail.
    server = models.ForeignKey(
        Server, null=True, blank=True, on_delete=models.SET_NULL, related_name="link_queues"
    )
    connector = models.ForeignKey(
        "connectors.Connector",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="link_queues",
    )
    domain = models.CharField(max_length=255, blank=True, help_text="Destination domain")
    smart_hosts = models.CharField(max_length=1000, blank=True)
    frozen = models.BooleanField(default=False)
    # Connection-level outcome of the last attempt (per-message results live on the entries).
    last_error = models.TextField(blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # A deliver task was asked for at this time and has not started yet (``dispatch``).
    wake_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def system_spec(cls, key: str) -> QueueSpec:
        return QueueSpec(key=key, kind=cls.Kind.SYSTEM, name=SYSTEM_QUEUES[key])

    @classmethod
    def for_specs(cls, specs: Iterable[QueueSpec]) -> dict[str, LinkQueue]:
        """The queues of these specs by key, created when missing, in at most three queries
        however many there are. Another process may create the same queue at the same moment:
        ``ignore_conflicts`` lets the unique key decide, and the second read finds its row."""
        wanted = {spec.key: spec for spec in specs}
        if not wanted:
            return {}
        found: dict[str, LinkQueue] = {
            q.key: q for q in LinkQueue.objects.filter(key__in=list(wanted))
        }
        missing = [spec for key, spec in wanted.items() if key not in found]
        if missing:
            LinkQueue.objects.bulk_create(
                [
                    LinkQueue(
                        key=spec.key,
                        kind=spec.kind,
                        name=spec.name,
                        server_id=spec.server_id,
                        connector_id=spec.connector_id,
                        domain=spec.domain,
                        smart_hosts=spec.smart_hosts,
                    )
                    for spec in missing
                ],
                ignore_conflicts=True,
            )
            found.update(
                (q.key, q) for q in LinkQueue.objects.filter(key__in=[spec.key for spec in missing])
            )
        return found


# --- queue entries -----------------------------------------------------------------------


class QueueEntryQuerySet(models.QuerySet["QueueEntry"]):
    def due(self, now: datetime | None = None) -> QueueEntryQuerySet:
        """Waiting for an attempt whose time has come, and nobody holds a live lease. Only
        this table's columns: a conditional UPDATE through a join becomes ``WHERE id IN
        (SELECT ...)``, which PostgreSQL does not re-check after a concurrent update, so two
        workers could both win. (A frozen queue is the caller's check.)"""
        now = now or timezone.now()
        return self.filter(state__in=QueueEntry.DUE_STATES, next_attempt_at__lte=now).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lt=now)
        )


class QueueEntry(models.Model):
    """One message in one link queue, with the recipients that go that way. Active (being
    delivered) is a live lease, not a state: a worker that dies leaves an expired lease, and
    the entry is due again."""

    class State(models.TextChoices):
        READY = "ready", "Ready"
        RETRY = "retry", "Retry"
        FROZEN = "frozen", "Frozen"
        DONE = "done", "Done"

    DUE_STATES = (State.READY, State.RETRY)

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="entries")
    queue = models.ForeignKey(LinkQueue, on_delete=models.PROTECT, related_name="entries")
    # Whose delivery settings apply (retry intervals, expiration, outbound security): the
    # connector's bridgehead, else the virtual server that received the message.
    virtual_server = models.ForeignKey(
        VirtualServer,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="queue_entries",
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.READY)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_response = models.TextField(blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    delay_notify_at = models.DateTimeField(null=True, blank=True)
    delay_notified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The message's size, copied by the database when the entry is inserted (a trigger of
    # migration 0007; a message never changes size), so a queue's total size is read from
    # its entries' index alone.
    message_size = models.PositiveBigIntegerField(default=0, editable=False)

    objects = QueueEntryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "queue entries"
        constraints = [
            models.UniqueConstraint(fields=["message", "queue"], name="relay_entry_unique"),
        ]
        indexes = [
            # Claiming due work of one queue, and its "next retry time" / message count.
            models.Index(
                fields=["queue", "next_attempt_at"],
                condition=Q(state__in=["ready", "retry"]),
                name="relay_entry_due_in_queue",
            ),
            # The sweeper: due work in any queue.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(state__in=["ready", "retry"]),
                name="relay_entry_due",
            ),
            models.Index(
                fields=["lease_until"],
                condition=Q(lease_until__isnull=False),
                name="relay_entry_leased",
            ),
            models.Index(
                fields=["expires_at"],
                condition=~Q(state="done"),
                name="relay_entry_expiring",
            ),
            # Queue Viewer: each queue's open entries (its count and total size, the oldest
            # message, its messages a page at a time in arrival order) from the index alone.
            models.Index(
                fields=["queue", "message"],
                include=["message_size"],
                condition=Q(state__in=["ready", "retry", "frozen"]),
                name="relay_entry_open_in_queue",
            ),
            # Queue Viewer's last error of a queue: its latest failed attempt.
            models.Index(
                fields=["queue", "last_attempt_at"],
                condition=Q(state="retry"),
                name="relay_entry_retry_in_queue",
            ),
            # Find Messages' "Frozen" state: the frozen entries without reading the others.
            models.Index(
                fields=["message"],
                condition=Q(state="frozen"),
                name="relay_entry_frozen",
            ),
            # The sweeper's delay notifications.
            models.Index(
                fields=["delay_notify_at"],
                condition=Q(delay_notified_at__isnull=True) & ~Q(state="done"),
                name="relay_entry_delay_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} in {self.queue_id}"

    @classmethod
    def claim(cls, pk: int, worker: str, *, seconds: float) -> bool:
        """Take the lease on a due entry. True when this worker got it: the conditional UPDATE
        is the arbiter when two workers (or a sweep and a direct call) reach it together."""
        now = timezone.now()
        claimed = (
            cls.objects.due(now)
            .filter(pk=pk)
            .update(lease_owner=worker, lease_until=now + timedelta(seconds=seconds))
        )
        return claimed == 1

    def leased_to(self, worker: str) -> QueueEntryQuerySet:
        """This entry, as long as ``worker`` still holds its lease: every write after the claim
        goes through it, so a worker whose lease ran out cannot overwrite its successor's work."""
        return QueueEntry.objects.filter(pk=self.pk, lease_owner=worker)


def retry_delay(attempts: int, minutes: Sequence[int]) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt: the virtual server's first,
    second, third and subsequent retry intervals (``minutes`` holds those four)."""
    index = min(max(attempts, 1), 4) - 1
    return timedelta(minutes=minutes[index])


# --- recipients --------------------------------------------------------------------------


class Recipient(models.Model):
    """One envelope recipient and how far it got."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DEFERRED = "deferred", "Deferred"  # a temporary failure; tried again
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"
        DELETED = "deleted", "Deleted by an administrator"

    OPEN_STATES = (State.PENDING, State.DEFERRED)

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipients")
    # The queue entry that carries it (None: failed at intake, never queued).
    entry = models.ForeignKey(
        QueueEntry, null=True, blank=True, on_delete=models.SET_NULL, related_name="recipients"
    )
    address = models.CharField(max_length=320)
    domain = models.CharField(max_length=255)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    status = models.CharField(max_length=16, blank=True, help_text="Enhanced status, e.g. 5.1.1")
    last_response = models.TextField(blank=True)
    route = models.CharField(max_length=12, blank=True, help_text="Routing's answer (kind)")
    completed_at = models.DateTimeField(null=True, blank=True)
    dsn_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["domain"], name="relay_recipient_domain"),
            models.Index(fields=["address"], name="relay_recipient_address"),
            # The sweeper: failures whose DSN is still owed.
            models.Index(
                fields=["completed_at"],
                condition=Q(state="failed", dsn_sent_at__isnull=True),
                name="relay_recipient_dsn_owed",
            ),
        ]

    def __str__(self) -> str:
        return self.address


# --- message tracking --------------------------------------------------------------------


class TrackingEvent(models.Model):
    """One event of Message Tracking. Self-contained: it keeps the queue id,
    Message-ID, sender and recipient as text, so it outlives the message (kept for the
    organization's retention days). Addresses are lower case, the form searches use."""

    class Kind(models.TextChoices):
        RECEIVED = "received", "Received"
        ROUTED = "routed", "Routed"
        TRANSFERRED = "transferred", "Transferred"
        DELIVERED = "delivered", "Delivered"
        DEFERRED = "deferred", "Deferred"
        FAILED = "failed", "Failed"
        DSN_SENT = "dsn_sent", "DSN sent"
        BADMAIL = "badmail", "Written to badmail"  # a double bounce: no DSN for <>
        DELETED = "deleted", "Deleted by an administrator"
        EXPIRED = "expired", "Expired"
        REJECTED = "rejected", "Rejected"

    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    queue_id = models.CharField(max_length=20, blank=True)
    # No foreign key to the message: the queue id links them, and deleting a message does
    # not have to touch its history.
    message_id = models.CharField("Message-ID", max_length=MESSAGE_ID_LENGTH, blank=True)
    sender = models.CharField(max_length=320, blank=True)
    recipient = models.CharField(max_length=320, blank=True)
    server_name = models.CharField(max_length=100, blank=True)
    virtual_server = models.ForeignKey(
        VirtualServer,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tracking_events",
    )
    virtual_server_name = models.CharField(max_length=100, blank=True)
    client_address = models.CharField(max_length=100, blank=True)
    client_name = models.CharField(max_length=255, blank=True)
    auth_user = models.CharField(max_length=255, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    subject = models.TextField(blank=True, help_text="Only when subject logging is on")
    queue_name = models.CharField(max_length=1100, blank=True)
    connector_name = models.CharField(max_length=200, blank=True)
    next_hop = models.CharField(max_length=1000, blank=True)
    response = models.TextField(blank=True)
    by = models.CharField(max_length=150, blank=True, help_text="The administrator who acted")
    detail = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["at"], name="relay_tracking_at"),
            models.Index(fields=["queue_id"], name="relay_tracking_queue_id"),
            models.Index(fields=["message_id"], name="relay_tracking_message_id"),
            models.Index(fields=["sender", "at"], name="relay_tracking_sender"),
            models.Index(fields=["recipient", "at"], name="relay_tracking_recipient"),
            models.Index(fields=["server_name", "at"], name="relay_tracking_server"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.queue_id}"


# --- bulk jobs ---------------------------------------------------------------------------


class BulkJob(models.Model):
    """An administrator's action on many messages (delete a queue's messages, force a queue's
    connection, freeze / unfreeze / delete what a search found), done by a Celery worker in
    batches, never in the request. ``cursor`` is the last message pk done: each batch moves it
    in the same transaction as its work, so a worker that dies loses at most the batch it was
    in, and the next run goes on after the cursor. Only messages up to ``last_message`` (the
    newest when the job was asked for) are touched: mail arriving meanwhile is not."""

    class Action(models.TextChoices):
        FREEZE = "freeze", "Freeze"
        UNFREEZE = "unfreeze", "Unfreeze"
        DELETE = "delete", "Delete"
        RETRY = "retry", "Force connection"

    class State(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    action = models.CharField(max_length=10, choices=Action.choices)
    ndr = models.BooleanField(default=False, help_text="Deleting sends an NDR to each sender")
    # A queue's messages, or (no queue) the messages the search ``criteria`` finds.
    queue = models.ForeignKey(
        LinkQueue, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    criteria = models.JSONField(default=dict, blank=True)
    description = models.CharField(max_length=1000, blank=True)
    last_message = models.BigIntegerField(default=0)
    cursor = models.BigIntegerField(default=0)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    total = models.PositiveIntegerField(null=True, blank=True, help_text="Messages to look at")
    done = models.PositiveIntegerField(default=0, help_text="Messages looked at")
    changed = models.PositiveIntegerField(default=0, help_text="Messages the action changed")
    recipients = models.PositiveIntegerField(default=0, help_text="Recipients deleted")
    dsns = models.PositiveIntegerField(default=0, help_text="NDRs submitted")
    dsn_errors = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    username = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["-created_at"], name="relay_job_created")]

    def __str__(self) -> str:
        return f"Job {self.pk}: {self.get_action_display()} {self.description}".strip()

    @property
    def finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)

    @property
    def percent(self) -> int:
        if self.state == self.State.DONE:
            return 100
        if not self.total:
            return 0
        return min(100, self.done * 100 // self.total)
