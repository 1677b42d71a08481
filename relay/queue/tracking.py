"""Writing message tracking events (SPEC section 6) the same way from every stage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay.queue.models import Message, TrackingEvent
from smtpadmin.models import Organization


@dataclass(frozen=True)
class TrackingSettings:
    enabled: bool = True
    subjects: bool = False  # subject logging

    @classmethod
    def load(cls) -> TrackingSettings:
        row = (
            Organization.objects.filter(pk=1)
            .values_list("message_tracking_enabled", "subject_logging_enabled")
            .first()
        )
        if row is None:  # no organization row yet: the model's defaults
            return cls()
        return cls(enabled=row[0], subjects=row[1])

    @classmethod
    def of(cls, organization: Organization) -> TrackingSettings:
        return cls(
            enabled=organization.message_tracking_enabled,
            subjects=organization.subject_logging_enabled,
        )


def message_event(
    message: Message,
    kind: str,
    *,
    at: datetime,
    server_name: str,
    recipient: str = "",
    **fields: Any,
) -> TrackingEvent:
    """An unsaved event about ``message`` carrying the message's own facts as text, so the
    event stays readable after the message is gone (bulk-create a list of them)."""
    return TrackingEvent(
        kind=kind,
        at=at,
        queue_id=message.queue_id,
        message_id=message.message_id,
        sender=message.sender.lower(),
        recipient=recipient.lower(),
        server_name=server_name,
        **fields,
    )
