"""The serializers of the relay's API resources (``relay.api``): queues as Queue Viewer
shows them, messages with their recipients and properties, the bodies and answers of the
actions, and tracking events."""

from __future__ import annotations

from typing import Any

import django_filters
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from relay.admin import actions
from relay.admin.search import MessageFilter, MessageState
from relay.admin.viewer import QueueState, last_error, message_headers, queue_state, source
from relay.queue.models import (
    BulkJob,
    LinkQueue,
    Message,
    Priority,
    QueueEntry,
    Recipient,
    TrackingEvent,
)
from smtpadmin.api import StrictFieldsMixin, unstorable_text


class QueueSerializer(serializers.ModelSerializer):
    """A link queue (one next hop) or a system queue, as Queue Viewer shows it. The state is
    derived: active, ready, retry, scheduled, remote, frozen or disabled."""

    kind = serializers.ChoiceField(choices=LinkQueue.Kind.choices, read_only=True)
    state = serializers.SerializerMethodField(
        help_text="active, ready, retry, scheduled, remote, frozen or disabled."
    )
    message_count = serializers.IntegerField(read_only=True)
    total_size = serializers.SerializerMethodField(help_text="Bytes of the waiting messages.")
    oldest_message_at = serializers.DateTimeField(read_only=True, allow_null=True)
    next_retry_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_error = serializers.SerializerMethodField()
    source = serializers.SerializerMethodField(  # type: ignore[assignment]
        help_text="Connector, local delivery or DNS."
    )

    class Meta:
        model = LinkQueue
        fields = [
            "id",
            "name",
            "kind",
            "state",
            "message_count",
            "total_size",
            "oldest_message_at",
            "next_retry_at",
            "last_error",
            "last_attempt_at",
            "source",
            "frozen",
            "connector",
            "server",
            "domain",
            "smart_hosts",
            "key",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "string", "enum": QueueState.values})
    def get_state(self, queue: LinkQueue) -> str:
        now = self.context.get("now") or timezone.now()
        return queue_state(queue, now, disabled=self.context.get("outbound_disabled"))

    def get_total_size(self, queue: LinkQueue) -> int:
        return int(getattr(queue, "total_size", None) or 0)

    def get_last_error(self, queue: LinkQueue) -> str:
        return last_error(queue)

    def get_source(self, queue: LinkQueue) -> str:
        return source(queue)


class DeleteOptionsSerializer(StrictFieldsMixin, serializers.Serializer):
    """How to delete: with or without a non-delivery report."""

    ndr = serializers.BooleanField(
        default=False,
        help_text="Send a non-delivery report (4.3.2, deleted by an administrator) to the "
        "sender of each message. Default: no NDR.",
    )


class DeletedSerializer(serializers.Serializer):
    """What a delete removed."""

    messages = serializers.IntegerField(help_text="Messages with at least one recipient deleted.")
    recipients = serializers.IntegerField(help_text="Recipients deleted.")
    ndr = serializers.BooleanField()
    dsns = serializers.ListField(
        child=serializers.CharField(),
        help_text="Queue ids of the NDRs submitted ('' for one that went to badmail).",
    )
    dsn_errors = serializers.IntegerField(help_text="NDRs that could not be submitted.")


class RecipientSerializer(serializers.ModelSerializer):
    """One envelope recipient and how far it got."""

    state = serializers.ChoiceField(choices=Recipient.State.choices, read_only=True)
    queue = serializers.SerializerMethodField(help_text="The queue it waits in (id).")

    class Meta:
        model = Recipient
        fields = [
            "address",
            "domain",
            "state",
            "status",
            "last_response",
            "queue",
            "completed_at",
            "dsn_sent_at",
        ]
        read_only_fields = fields

    def get_queue(self, recipient: Recipient) -> int | None:
        entries = self.context.get("entries", {})
        entry = entries.get(recipient.entry_id)
        return entry.queue_id if entry is not None else None


class QueueEntrySerializer(serializers.ModelSerializer):
    """The message in one queue: its attempts, next attempt and last reply."""

    queue_name = serializers.CharField(source="queue.name", read_only=True)
    state = serializers.ChoiceField(choices=QueueEntry.State.choices, read_only=True)

    class Meta:
        model = QueueEntry
        fields = [
            "id",
            "queue",
            "queue_name",
            "state",
            "attempts",
            "next_attempt_at",
            "last_attempt_at",
            "last_response",
            "expires_at",
            "delay_notify_at",
            "lease_until",
            "created_at",
            "completed_at",
        ]
        read_only_fields = fields


#: A message's derived state ("queued" is only a filter: one of the first four).
MESSAGE_STATES = [c for c in MessageState.choices if c[0] != MessageState.QUEUED]


class MessageSerializer(serializers.ModelSerializer):
    """An accepted message: envelope, per-recipient state and its derived state."""

    state = serializers.ChoiceField(
        choices=MESSAGE_STATES,
        read_only=True,
        help_text="ready, retry, active or frozen while queued; then delivered, failed, "
        "deleted or completed (mixed outcomes).",
    )
    recipients = serializers.SerializerMethodField()
    priority = serializers.ChoiceField(choices=Priority.choices, read_only=True)
    expires_at = serializers.SerializerMethodField(
        help_text="When the message expires if still undelivered (the earliest of its queues)."
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "queue_id",
            "message_id",
            "sender",
            "recipients",
            "state",
            "subject",
            "size",
            "priority",
            "system",
            "received_at",
            "expires_at",
            "virtual_server",
            "client_address",
            "client_name",
            "helo",
            "auth_user",
            "protocol",
        ]
        read_only_fields = fields

    @extend_schema_field(RecipientSerializer(many=True))
    def get_recipients(self, message: Message) -> Any:
        entries = {e.pk: e for e in message.entries.all()}
        return RecipientSerializer(
            message.recipients.all(), many=True, context={**self.context, "entries": entries}
        ).data

    @extend_schema_field({"type": "string", "format": "date-time", "nullable": True})
    def get_expires_at(self, message: Message) -> Any:
        waiting = [e.expires_at for e in message.entries.all() if e.state != "done"]
        return serializers.DateTimeField().to_representation(min(waiting)) if waiting else None


class HeaderSerializer(serializers.Serializer):
    """One header field of the message as stored."""

    name = serializers.CharField()
    value = serializers.CharField()


class MessageDetailSerializer(MessageSerializer):
    """A message's properties: envelope, headers, size, submission and expiry time, its
    queues and its recipients with their last responses."""

    entries = QueueEntrySerializer(many=True, read_only=True)
    headers = serializers.SerializerMethodField()

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "entries", "headers"]
        read_only_fields = fields

    @extend_schema_field(HeaderSerializer(many=True))
    def get_headers(self, message: Message) -> list[dict[str, str]]:
        return [{"name": n, "value": v} for n, v in message_headers(message.raw)]


def _filter_schema(filter_: Any) -> dict[str, Any]:
    extra = filter_.extra
    if isinstance(filter_, django_filters.ModelChoiceFilter):
        return {"type": "integer", "description": "A queue id."}
    if isinstance(filter_, django_filters.NumberFilter):
        limits = {"minimum": extra.get("min_value"), "maximum": extra.get("max_value")}
        return {"type": "integer", **{k: v for k, v in limits.items() if v is not None}}
    if isinstance(filter_, django_filters.ChoiceFilter):
        return {"type": "string", "enum": [value for value, _label in extra["choices"]]}
    # Text is stripped: a filter of spaces only would filter nothing.
    return {"type": "string", "pattern": r"\S", "maxLength": extra.get("max_length", 1000)}


def _bulk_filter_problem(filter_: Any, value: Any) -> str:
    if value is None or value == "":
        return "Give a value, or leave the filter out."
    if isinstance(filter_, django_filters.NumberFilter | django_filters.ModelChoiceFilter):
        if isinstance(value, bool) or not isinstance(value, int):
            return "Give a number."
        return ""
    if not isinstance(value, str):
        return "Give a string."
    return unstorable_text(value)


BULK_FILTER_SCHEMA = {
    "type": "object",
    "description": "Find Messages' filters, as for the list; at least one.",
    "properties": {
        name: {**_filter_schema(filter_), "description": str(filter_.label or name)}
        for name, filter_ in MessageFilter.base_filters.items()
    },
    "additionalProperties": False,
    "minProperties": 1,
}


@extend_schema_field(BULK_FILTER_SCHEMA)
class BulkFilterField(serializers.DictField):
    """The filters of a bulk action (checked by ``BulkActionSerializer.validate_filter``)."""


class BulkActionSerializer(StrictFieldsMixin, serializers.Serializer):
    """An action on every message a filter finds."""

    filter = BulkFilterField(
        help_text="Find Messages' filters, as for the list: sender, recipient, domain, "
        "subject, message_id, queue_id, state, older_than_minutes, newer_than_minutes, "
        "min_size_kb, max_size_kb, queue. At least one."
    )
    action = serializers.ChoiceField(
        choices=list(actions.BULK_ACTIONS),
        error_messages={"invalid_choice": "Choose freeze, unfreeze or delete."},
    )
    ndr = serializers.BooleanField(
        default=False, help_text="With delete: send an NDR to each sender."
    )

    def validate_filter(self, value: dict[str, Any]) -> MessageFilter:
        known = MessageFilter.base_filters
        errors: dict[str, list[str]] = {}
        data: dict[str, str] = {}
        for key, item in value.items():
            if key not in known:
                errors[key] = ["This filter does not exist."]
            elif problem := _bulk_filter_problem(known[key], item):
                errors[key] = [problem]
            else:
                data[key] = str(item)
        if errors:
            raise serializers.ValidationError(errors)
        found = MessageFilter(data=data, queryset=Message.objects.all())
        if not found.is_valid():
            raise serializers.ValidationError(found.errors.get_json_data(escape_html=False))
        if not found.criteria:
            raise serializers.ValidationError(
                "Give at least one filter: a bulk action on every message is not an accident "
                "this API helps with."
            )
        return found


class BulkResultSerializer(serializers.Serializer):
    """What a bulk action did."""

    action = serializers.CharField()
    ndr = serializers.BooleanField()
    matched = serializers.IntegerField(help_text="Messages the filter found.")
    changed = serializers.IntegerField(help_text="Messages the action changed.")
    recipients = serializers.IntegerField(help_text="Recipients deleted.")
    dsns = serializers.IntegerField(help_text="NDRs submitted.")
    dsn_errors = serializers.IntegerField(help_text="NDRs that could not be submitted.")


class TrackingEventSerializer(serializers.ModelSerializer):
    """One event of Message Tracking: received, routed, transferred, delivered, deferred,
    failed, dsn_sent, deleted (``by`` names the administrator), expired or rejected."""

    kind = serializers.ChoiceField(choices=TrackingEvent.Kind.choices, read_only=True)

    class Meta:
        model = TrackingEvent
        fields = [
            "id",
            "at",
            "kind",
            "queue_id",
            "message_id",
            "sender",
            "recipient",
            "server_name",
            "virtual_server",
            "virtual_server_name",
            "client_address",
            "client_name",
            "auth_user",
            "size",
            "subject",
            "queue_name",
            "connector_name",
            "next_hop",
            "response",
            "by",
            "detail",
        ]
        read_only_fields = fields


class BulkJobSerializer(serializers.ModelSerializer):
    """A bulk action running in the background: its progress, then its outcome."""

    action = serializers.ChoiceField(choices=BulkJob.Action.choices, read_only=True)
    state = serializers.ChoiceField(
        choices=BulkJob.State.choices,
        read_only=True,
        help_text="pending (waiting for a worker), running, done or failed.",
    )
    percent = serializers.IntegerField(read_only=True)
    url = serializers.SerializerMethodField(help_text="This job in the API.")

    class Meta:
        model = BulkJob
        fields = [
            "id",
            "url",
            "action",
            "ndr",
            "queue",
            "criteria",
            "description",
            "state",
            "total",
            "done",
            "percent",
            "changed",
            "recipients",
            "dsns",
            "dsn_errors",
            "error",
            "username",
            "created_at",
            "updated_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_url(self, job: BulkJob) -> str:
        return reverse("bulk-job-detail", args=[job.pk])
