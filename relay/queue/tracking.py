"""Writing message tracking events the same way from every stage."""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from relay.queue.models import Message, TrackingEvent
from servers.models import VirtualServer
from smtpadmin.models import Organization

ADDRESS_LIMIT = 320  # TrackingEvent.sender / recipient
RESPONSE_LIMIT = 1000


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


@dataclass(frozen=True)
class MessageRef:
    """What every event of a message repeats about it."""

    queue_id: str
    message_id: str
    sender: str


def event_row(
    message: MessageRef,
    kind: str,
    *,
    at: datetime,
    server_name: str,
    recipient: str = "",
    **fields: Any,
) -> dict[str, Any]:
    """An event about ``message`` as a row of column values (attribute names), carrying the
    message's own facts as text, so the event stays readable after the message is gone."""
    return {
        "kind": kind,
        "at": at,
        "queue_id": message.queue_id,
        "message_id": message.message_id,
        "sender": message.sender.lower(),
        "recipient": recipient.lower(),
        "server_name": server_name,
        **fields,
    }


def message_event(
    message: Message,
    kind: str,
    *,
    at: datetime,
    server_name: str,
    recipient: str = "",
    **fields: Any,
) -> TrackingEvent:
    """An unsaved event about ``message`` (bulk-create a list of them)."""
    ref = MessageRef(message.queue_id, message.message_id, message.sender)
    return TrackingEvent(
        **event_row(ref, kind, at=at, server_name=server_name, recipient=recipient, **fields)
    )


# --- refusals during the SMTP dialogue ----------------------------------------------------

ADDRESSES_SHOWN = 5  # the first refused recipients a summary names
CLASSES_SHOWN = 8  # reply classes a summary counts one by one; the rest are "other"
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
# Words of our own refusals -> the class an administrator reads in the summary.
_CLASS_WORDS = (
    ("Relaying denied", "relaying denied"),
    ("no such mailbox", "unknown mailbox"),
    ("recipient filter", "recipient filter"),
    ("sender filter", "sender filter"),
    ("Bad recipient address", "bad address"),
    ("Bad sender address", "bad address"),
    ("cannot route a local part", "unroutable local part"),
    ("null address", "null recipient"),
    ("Too many hops", "looping message"),
)


def refusal_class(reply: str) -> str:
    """``550 5.7.1 Relaying denied: ...`` -> ``550 5.7.1 relaying denied``: the reply code, its
    enhanced status and what kind of refusal it is, without the address it names."""
    code, _, text = reply.partition(" ")
    enhanced = _ENHANCED.match(text)
    label = next((name for words, name in _CLASS_WORDS if words in text), "")
    return " ".join(part for part in (code, enhanced[1] if enhanced else "", label) if part)


@dataclass(frozen=True)
class RefusalReport:
    """What one session's tracking event says about its refusals (plain data for a thread)."""

    at: datetime
    sender: str
    recipient: str
    response: str  # the first refusal's reply, as sent
    detail: str
    refusals: int


@dataclass
class RefusalTally:
    """The refusals of one SMTP session, kept for a single tracking event: a client refused
    a thousand times costs one row, not a thousand, and the row still says who was refused
    how often and why."""

    first: RefusalReport | None = None
    recipients: int = 0
    senders: int = 0
    addresses: list[str] = field(default_factory=list)
    classes: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def refusals(self) -> int:
        return self.recipients + self.senders

    def add(self, sender: str, recipient: str, reply: str, at: datetime) -> bool:
        """Count one refusal; True for the session's first."""
        if recipient:
            self.recipients += 1
            if len(self.addresses) < ADDRESSES_SHOWN and recipient.lower() not in self.addresses:
                self.addresses.append(recipient.lower())
        else:
            self.senders += 1
        kind = refusal_class(reply)
        if kind not in self.classes and len(self.classes) >= CLASSES_SHOWN:
            kind = "other"
        self.classes[kind] += 1
        if self.first is not None:
            return False
        self.first = RefusalReport(
            at=at,
            sender=sender.lower(),
            recipient=recipient.lower(),
            response=reply,
            detail="",
            refusals=1,
        )
        return True

    def report(self) -> RefusalReport | None:
        if self.first is None:
            return None
        counts = [f"{self.recipients} recipient{'s' * (self.recipients != 1)}"]
        if self.senders:
            counts.append(f"{self.senders} sender{'s' * (self.senders != 1)}")
        classes = "; ".join(f"{n} x {kind}" for kind, n in self.classes.most_common())
        detail = f"Refused in this session: {', '.join(counts)} ({classes})."
        if self.addresses:
            more = self.recipients - len(self.addresses)
            named = ", ".join(self.addresses) + (f" and {more} more" if more > 0 else "")
            detail += f" Recipients: {named}."
        return replace(self.first, detail=detail, refusals=self.refusals)


def record_refusals(
    event_id: int | None,
    report: RefusalReport,
    *,
    virtual_server_id: int,
    client_address: str,
    client_name: str = "",
    auth_user: str = "",
) -> int | None:
    """Write a session's refusals as its one "rejected" tracking event: create it (``event_id``
    None) or bring it up to date. The event's id, or None when message tracking is off."""
    if not TrackingSettings.load().enabled:
        return None
    summary = {"detail": report.detail, "response": report.response[:RESPONSE_LIMIT]}
    if event_id is not None:
        TrackingEvent.objects.filter(pk=event_id).update(**summary)
        return event_id
    vs = VirtualServer.objects.select_related("server").filter(pk=virtual_server_id).first()
    event = TrackingEvent.objects.create(
        kind=TrackingEvent.Kind.REJECTED,
        at=report.at,
        sender=report.sender[:ADDRESS_LIMIT],
        recipient=report.recipient[:ADDRESS_LIMIT],
        server_name=vs.server.name if vs else "",
        virtual_server=vs,
        virtual_server_name=vs.name if vs else "",
        client_address=client_address,
        client_name=client_name,
        auth_user=auth_user[:255],
        **summary,
    )
    return event.pk
