"""Finding messages and tracking events: one set of filters for Find Messages in the console,
the ``messages`` list and ``messages/bulk`` of the API, and another for the Message Tracking
Center and ``tracking-events``.

A message's state is derived in SQL (so it can be filtered on): while it has entries in a
queue it is Frozen, Active (a worker holds a live lease), Retry or Ready; afterwards
Delivered, Failed or Deleted when all its recipients ended that way, else Completed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import django_filters
from django import forms
from django.db import models
from django.db.models import Exists, OuterRef, Q, Value
from django.utils import timezone

from relay.admin.viewer import OPEN_ENTRY_STATES
from relay.queue.models import (
    MESSAGE_ID_LENGTH,
    LinkQueue,
    Message,
    QueueEntry,
    Recipient,
    TrackingEvent,
)


class MessageState(models.TextChoices):
    QUEUED = "queued", "In a queue (any of the next four)"
    READY = "ready", "Ready"
    RETRY = "retry", "Retry"
    ACTIVE = "active", "Active"
    FROZEN = "frozen", "Frozen"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    DELETED = "deleted", "Deleted by an administrator"
    COMPLETED = "completed", "Completed (mixed outcomes)"


QUEUED_STATES = (MessageState.READY, MessageState.RETRY, MessageState.ACTIVE, MessageState.FROZEN)
# Ten years: larger ages or sizes are typing errors, and timedelta has limits.
MAX_MINUTES = 10 * 366 * 24 * 60
MAX_KB = 1 << 40


def with_state(
    queryset: models.QuerySet[Message], now: datetime | None = None
) -> models.QuerySet[Message]:
    """Messages annotated with ``state`` (a MessageState value), computed by the database."""
    now = now or timezone.now()
    entries = QueueEntry.objects.filter(message=OuterRef("pk"), state__in=OPEN_ENTRY_STATES)
    recipients = Recipient.objects.filter(message=OuterRef("pk"))
    return queryset.annotate(
        state=models.Case(
            models.When(
                Exists(entries.filter(state=QueueEntry.State.FROZEN)),
                then=Value(MessageState.FROZEN.value),
            ),
            models.When(
                Exists(entries.filter(lease_until__gt=now)),
                then=Value(MessageState.ACTIVE.value),
            ),
            models.When(
                Exists(entries.filter(state=QueueEntry.State.RETRY)),
                then=Value(MessageState.RETRY.value),
            ),
            models.When(Exists(entries), then=Value(MessageState.READY.value)),
            models.When(
                ~Exists(recipients.exclude(state=Recipient.State.DELIVERED)),
                then=Value(MessageState.DELIVERED.value),
            ),
            models.When(
                ~Exists(recipients.exclude(state=Recipient.State.DELETED)),
                then=Value(MessageState.DELETED.value),
            ),
            models.When(
                ~Exists(recipients.exclude(state=Recipient.State.FAILED)),
                then=Value(MessageState.FAILED.value),
            ),
            default=Value(MessageState.COMPLETED.value),
            output_field=models.CharField(),
        )
    )


def state_condition(value: str, now: datetime) -> Q:
    """The messages in state ``value``, as conditions the database answers from the entries'
    indexes (the same rules as ``with_state``, whose CASE it would have to work out for every
    message before it could filter)."""
    entries = QueueEntry.objects.filter(message=OuterRef("pk"), state__in=OPEN_ENTRY_STATES)
    recipients = Recipient.objects.filter(message=OuterRef("pk"))
    frozen = Exists(
        QueueEntry.objects.filter(message=OuterRef("pk"), state=QueueEntry.State.FROZEN)
    )
    active = Exists(entries.filter(lease_until__gt=now))
    retry = Exists(entries.filter(state=QueueEntry.State.RETRY))
    queued = Exists(entries)
    all_delivered = ~Exists(recipients.exclude(state=Recipient.State.DELIVERED))
    all_deleted = ~Exists(recipients.exclude(state=Recipient.State.DELETED))
    all_failed = ~Exists(recipients.exclude(state=Recipient.State.FAILED))
    conditions = {
        MessageState.QUEUED: Q(queued),
        MessageState.FROZEN: Q(frozen),
        MessageState.ACTIVE: ~Q(frozen) & Q(active),
        MessageState.RETRY: ~Q(frozen) & ~Q(active) & Q(retry),
        MessageState.READY: ~Q(frozen) & ~Q(active) & ~Q(retry) & Q(queued),
        MessageState.DELIVERED: ~Q(queued) & Q(all_delivered),
        MessageState.DELETED: ~Q(queued) & ~Q(all_delivered) & Q(all_deleted),
        MessageState.FAILED: ~Q(queued) & ~Q(all_delivered) & ~Q(all_deleted) & Q(all_failed),
        MessageState.COMPLETED: ~Q(queued) & ~Q(all_delivered) & ~Q(all_deleted) & ~Q(all_failed),
    }
    return conditions[MessageState(value)]


def derived_state(
    entries: Iterable[QueueEntry], recipient_states: Iterable[str], now: datetime
) -> MessageState:
    """The same rules as ``with_state``, over a message's entries and recipients already read
    (a page's rows with their prefetched entries and recipients: no CASE per row in SQL)."""
    waiting = [e for e in entries if e.state in OPEN_ENTRY_STATES]
    if any(e.state == QueueEntry.State.FROZEN for e in waiting):
        return MessageState.FROZEN
    if any(e.lease_until is not None and e.lease_until > now for e in waiting):
        return MessageState.ACTIVE
    if any(e.state == QueueEntry.State.RETRY for e in waiting):
        return MessageState.RETRY
    if waiting:
        return MessageState.READY
    states = set(recipient_states)
    for state, outcome in (
        (Recipient.State.DELIVERED, MessageState.DELIVERED),
        (Recipient.State.DELETED, MessageState.DELETED),
        (Recipient.State.FAILED, MessageState.FAILED),
    ):
        if states <= {state}:
            return outcome
    return MessageState.COMPLETED


def with_derived_state(messages: Iterable[Message], now: datetime | None = None) -> list[Message]:
    """The messages (with ``entries`` and ``recipients`` prefetched), each given ``state``."""
    now = now or timezone.now()
    rows = list(messages)
    for message in rows:
        message.state = derived_state(  # type: ignore[attr-defined]
            message.entries.all(), (r.state for r in message.recipients.all()), now
        )
    return rows


class IntegerFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


def _text(
    label: str, help_text: str = "", max_length: int = 320, **kwargs: Any
) -> django_filters.CharFilter:
    return django_filters.CharFilter(
        label=label, help_text=help_text, max_length=max_length, strip=True, **kwargs
    )


class MessageFilter(django_filters.FilterSet):
    """Find Messages: every filter narrows the result; text matches anywhere, ignoring case."""

    sender = _text("Sender", "Part of the address; <> finds the null sender.", method="by_sender")
    recipient = _text("Recipient", "Part of any recipient's address.", method="by_recipient")
    domain = _text("Recipient domain", "A recipient's whole domain.", method="by_domain")
    subject = django_filters.CharFilter(
        label="Subject", lookup_expr="icontains", max_length=1000, strip=True
    )
    message_id = _text("Message-ID", max_length=MESSAGE_ID_LENGTH, lookup_expr="icontains")
    queue_id = django_filters.CharFilter(
        label="Queue ID", lookup_expr="iexact", max_length=20, strip=True
    )
    state = django_filters.ChoiceFilter(
        label="State", choices=MessageState.choices, method="by_state", empty_label="Any"
    )
    older_than_minutes = IntegerFilter(
        label="Older than (minutes)", min_value=0, max_value=MAX_MINUTES, method="by_age"
    )
    newer_than_minutes = IntegerFilter(
        label="Newer than (minutes)", min_value=0, max_value=MAX_MINUTES, method="by_age"
    )
    min_size_kb = IntegerFilter(
        label="At least (KB)", min_value=0, max_value=MAX_KB, method="by_size"
    )
    max_size_kb = IntegerFilter(
        label="At most (KB)", min_value=0, max_value=MAX_KB, method="by_size"
    )
    queue = django_filters.ModelChoiceFilter(
        label="Queue",
        queryset=LinkQueue.objects.order_by("name"),
        method="by_queue",
        help_text="Messages waiting in this queue.",
    )

    class Meta:
        model = Message
        fields: list[str] = []

    def __init__(self, *args: Any, now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.now = now or timezone.now()

    @property
    def criteria(self) -> dict[str, Any]:
        """The filters that were given (after validation), by name."""
        return {
            name: value
            for name, value in self.form.cleaned_data.items()
            if value not in (None, "", [])
        }

    def describe(self) -> str:
        """The criteria in words, for a confirmation page and the audit log."""
        parts = []
        for name, value in self.criteria.items():
            label = self.filters[name].label or name
            shown = value.name if isinstance(value, LinkQueue) else value
            if name == "state":
                shown = MessageState(value).label
            parts.append(f"{label}: {shown}")
        return "; ".join(parts)

    def by_sender(self, queryset: Any, name: str, value: str) -> Any:
        if value == "<>":
            return queryset.filter(sender="")
        return queryset.filter(sender__icontains=value)

    def by_recipient(self, queryset: Any, name: str, value: str) -> Any:
        matching = Recipient.objects.filter(message=OuterRef("pk"), address__icontains=value)
        return queryset.filter(Exists(matching))

    def by_domain(self, queryset: Any, name: str, value: str) -> Any:
        # Stored in lower case (routing's normal form): an exact match uses the index.
        domain = value.strip().lstrip("@").rstrip(".").lower()
        matching = Recipient.objects.filter(message=OuterRef("pk"), domain=domain)
        return queryset.filter(Exists(matching))

    def by_state(self, queryset: Any, name: str, value: str) -> Any:
        return queryset.filter(state_condition(value, self.now))

    def by_age(self, queryset: Any, name: str, value: int) -> Any:
        moment = self.now - timedelta(minutes=value)
        if name == "older_than_minutes":
            return queryset.filter(received_at__lte=moment)
        return queryset.filter(received_at__gte=moment)

    def by_size(self, queryset: Any, name: str, value: int) -> Any:
        if name == "min_size_kb":
            return queryset.filter(size__gte=value * 1024)
        return queryset.filter(size__lte=value * 1024)

    def by_queue(self, queryset: Any, name: str, value: LinkQueue) -> Any:
        waiting = QueueEntry.objects.filter(
            message=OuterRef("pk"), queue=value, state__in=OPEN_ENTRY_STATES
        )
        return queryset.filter(Exists(waiting))


class TrackingFilter(django_filters.FilterSet):
    """The Message Tracking Center's search: addresses and ids match exactly (ignoring case,
    as tracking stores addresses in lower case), the subject anywhere."""

    message_id = _text(
        "Message-ID",
        "With or without the angle brackets.",
        max_length=MESSAGE_ID_LENGTH,
        method="by_message_id",
    )
    queue_id = django_filters.CharFilter(
        label="Queue ID", lookup_expr="iexact", max_length=20, strip=True
    )
    sender = _text("Sender", "The whole address; <> finds the null sender.", method="by_sender")
    recipient = _text("Recipient", "The whole address.", method="by_recipient")
    server = django_filters.CharFilter(
        label="Server", field_name="server_name", lookup_expr="iexact", max_length=100
    )
    kind = django_filters.ChoiceFilter(
        label="Event", choices=TrackingEvent.Kind.choices, empty_label="Any"
    )
    since = django_filters.IsoDateTimeFilter(label="From", field_name="at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(label="To", field_name="at", lookup_expr="lte")
    subject = django_filters.CharFilter(
        label="Subject",
        lookup_expr="icontains",
        max_length=1000,
        strip=True,
        help_text="Only subjects logged while subject logging was on.",
    )

    class Meta:
        model = TrackingEvent
        fields: list[str] = []

    def by_message_id(self, queryset: Any, name: str, value: str) -> Any:
        bare = value.strip().strip("<>")
        return queryset.filter(Q(message_id__iexact=f"<{bare}>") | Q(message_id__iexact=bare))

    def by_sender(self, queryset: Any, name: str, value: str) -> Any:
        return queryset.filter(sender="" if value == "<>" else value.lower())

    def by_recipient(self, queryset: Any, name: str, value: str) -> Any:
        return queryset.filter(recipient=value.lower())


def message_history(queue_id: str = "", message_id: str = "") -> models.QuerySet[TrackingEvent]:
    """Every event of one message across servers, oldest first: those of its queue id and
    those of every queue id that carried the same Message-ID (the message relayed from one of
    our servers to another gets a new queue id there, and DSNs keep their own)."""
    ids = set()
    if queue_id:
        ids = set(
            TrackingEvent.objects.filter(queue_id__iexact=queue_id)
            .exclude(message_id="")
            .values_list("message_id", flat=True)
            .distinct()
        )
    if message_id:
        ids.add(message_id)
    condition = Q(pk__in=[])
    if queue_id:
        condition |= Q(queue_id__iexact=queue_id)
    if ids:
        condition |= Q(message_id__in=sorted(ids))
    return TrackingEvent.objects.filter(condition).order_by("at", "pk")
