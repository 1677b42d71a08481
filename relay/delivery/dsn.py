"""Delivery status notifications for queued mail: ``submit_dsn`` turns failed (or delayed)
recipients of a message into one report from the postmaster (``relay.delivery.dsn_report``),
queued as a system message through intake like any other mail: a local sender finds it in
their Maildir, a remote one gets it through the link queue routing picks.

It never reports on a null-sender or system message: that is a double bounce, written to the
badmail directory, with a report to the virtual server's "send copy of NDR to" address when
set. That address also gets a copy of every NDR (failures and expirations; not delays).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from relay import intake
from relay.delivery.badmail import badmail_directory, write_badmail
from relay.delivery.dsn_report import (
    DELAY,
    EXPIRATION,
    FAILURE,
    KINDS,
    DsnRecipient,
    build_dsn,
    explanation,
    format_date,
    plain_diagnostic,
)
from relay.metrics import DSNS, counted
from relay.queue.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from relay.queue.place import enhanced_status
from relay.queue.tracking import TrackingSettings, message_event
from servers.models import AcceptedDomain, VirtualServer

__all__ = [
    "DELAY",
    "EXPIRATION",
    "FAILURE",
    "KINDS",
    "DsnRecipient",
    "build_dsn",
    "explanation",
    "postmaster_address",
    "remote_mta_name",
    "report_refused",
    "submit_dsn",
]

_DEFAULT_STATUS = {FAILURE: "5.0.0", EXPIRATION: "4.4.7", DELAY: "4.0.0"}
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


def remote_mta_name(hop: str) -> str:
    """The host of a next hop as the delivery records it ("mx1.example.org [192.0.2.1]:25"
    -> "mx1.example.org", "[192.0.2.1]:2525" -> "[192.0.2.1]"); "" for local delivery."""
    hop = hop.strip()
    if not hop or hop.lower().startswith("local"):
        return ""
    first = hop.split()[0]
    if first.startswith("["):
        return first[: first.find("]") + 1] if "]" in first else first
    return first.rsplit(":", 1)[0] if first.count(":") == 1 else first


def _hops_from_tracking(message: Message, addresses: Sequence[str]) -> dict[str, str]:
    """The last next hop each recipient was tried at, from tracking (when it is kept)."""
    events = (
        TrackingEvent.objects.filter(
            queue_id=message.queue_id,
            recipient__in=[a.lower() for a in addresses],
            kind__in=[
                TrackingEvent.Kind.FAILED,
                TrackingEvent.Kind.DEFERRED,
                TrackingEvent.Kind.TRANSFERRED,
            ],
        )
        .exclude(next_hop="")
        .order_by("at", "pk")
        .values_list("recipient", "next_hop")
    )
    return {recipient: name for recipient, hop in events if (name := remote_mta_name(hop))}


def _status_of(recipient: Recipient, kind: str) -> str:
    status = recipient.status if _ENHANCED.match(recipient.status) else ""
    status = status or enhanced_status(recipient.last_response)
    if kind == EXPIRATION:
        return "4.4.7"
    if kind == DELAY and not status.startswith("4."):
        return _DEFAULT_STATUS[DELAY]
    return status or _DEFAULT_STATUS[kind]


def _report_on(
    recipients: Sequence[Recipient], kind: str, hops: Mapping[str, str]
) -> list[DsnRecipient]:
    return [
        DsnRecipient(
            address=r.address,
            action="delayed" if kind == DELAY else "failed",
            status=_status_of(r, kind),
            diagnostic=r.last_response,
            remote_mta=hops.get(r.address.lower(), ""),
            last_attempt=(r.entry.last_attempt_at if r.entry else None) or r.completed_at,
            will_retry_until=r.entry.expires_at if r.entry else None,
        )
        for r in recipients
    ]


def _virtual_server(message: Message, recipients: Sequence[Recipient]) -> VirtualServer | None:
    """The receiving virtual server; when it is gone, the one delivering, else any."""
    if message.virtual_server is not None:
        return message.virtual_server
    ids = [r.entry.virtual_server_id for r in recipients if r.entry and r.entry.virtual_server_id]
    query = VirtualServer.objects.select_related("server").order_by("pk")
    return (query.filter(pk__in=ids).first() if ids else None) or query.first()


def postmaster_address(vs: VirtualServer | None) -> str:
    """postmaster@ the default accepted domain (its postmaster mailbox exists and answers),
    else the virtual server's FQDN."""
    domain = AcceptedDomain.objects.filter(is_default=True).values_list("domain", flat=True).first()
    return f"postmaster@{domain or (vs.effective_fqdn if vs else 'localhost')}"


def submit_dsn(
    message_pk: int,
    recipient_pks: Sequence[int],
    kind: str,
    now: datetime | None = None,
    *,
    remote_mta: str = "",
) -> str | None:
    """Report on these recipients of a queued message: ``kind`` "failure" (their state says
    why), "expiration" (4.4.7) or "delay". Returns the DSN's queue id, or None when there was
    none to send: a null-sender or system original (a double bounce: the original goes to
    badmail and, for failures, a report to "send copy of NDR to"), a DSN that could not even be
    routed (badmail), or recipients already reported on. ``remote_mta`` is the hop that
    answered (as the delivery names it); else tracking's last hop for each recipient.

    Runs in one transaction (the caller's when there is one): the DSN is queued, the failed
    recipients get ``dsn_sent_at`` and tracking gets a "DSN sent" event, or none of it."""
    if kind not in KINDS:
        raise ValueError(f"Unknown DSN kind {kind!r}; expected one of {', '.join(KINDS)}.")
    now = now or timezone.now()
    with transaction.atomic():
        message = Message.objects.select_related("virtual_server__server").get(pk=message_pk)
        query = Recipient.objects.filter(message=message, pk__in=list(recipient_pks))
        if kind != DELAY:
            # Two callers reporting the same failure (a sweep and a delivery): the row lock
            # makes the second wait, then find dsn_sent_at set and report nothing.
            query = query.filter(dsn_sent_at__isnull=True)
        recipients = list(
            query.select_for_update(of=("self",)).select_related("entry").order_by("pk")
        )
        if not recipients:
            return None
        if kind == DELAY and (message.null_sender or message.system):
            return None  # a delay is no bounce: nothing to tell, nothing for badmail
        vs = _virtual_server(message, recipients)
        hops = _hops_from_tracking(message, [r.address for r in recipients])
        if remote_mta_name(remote_mta):
            hops = {r.address.lower(): remote_mta_name(remote_mta) for r in recipients}
        report = _report_on(recipients, kind, hops)
        submission = _Submission(message, vs, kind, report, now)
        if message.null_sender or message.system:
            queue_id, event_kind, detail = submission.double_bounce()
        else:
            queue_id, event_kind, detail = submission.send()
        if kind != DELAY:
            Recipient.objects.filter(pk__in=[r.pk for r in recipients]).update(dsn_sent_at=now)
        if TrackingSettings.load().enabled:
            server_name = vs.server.name if vs is not None else ""
            TrackingEvent.objects.bulk_create(
                message_event(
                    message,
                    event_kind,
                    recipient=r.address,
                    response=f"{r.status} {r.diagnostic}".strip(),
                    detail=detail,
                    at=now,
                    server_name=server_name,
                )
                for r in report
            )
    return queue_id


def report_refused(message_pk: int, now: datetime | None = None) -> tuple[int, ...]:
    """The failure DSN for the recipients of a message that routing refused after the client
    was answered 250 (no queue entry ever carried them); returns the DSN's local queue entries,
    for local delivery to pick up at once. Nothing when they were reported on already."""
    with transaction.atomic():
        refused = list(
            Recipient.objects.filter(
                message_id=message_pk,
                state=Recipient.State.FAILED,
                entry__isnull=True,
                dsn_sent_at__isnull=True,
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        queue_id = submit_dsn(message_pk, refused, FAILURE, now) if refused else None
        if queue_id is None:
            return ()
        return tuple(
            QueueEntry.objects.filter(
                message__queue_id=queue_id, queue__kind=LinkQueue.Kind.LOCAL
            ).values_list("pk", flat=True)
        )


@dataclass
class _Submission:
    message: Message
    vs: VirtualServer | None
    kind: str
    report: list[DsnRecipient]
    now: datetime

    @property
    def reporting_mta(self) -> str:
        return self.vs.effective_fqdn if self.vs is not None else "localhost"

    @property
    def copy_to(self) -> str:
        return self.vs.ndr_copy_to.strip() if self.vs is not None else ""

    def build(self, *, to: str, note: str = "") -> bytes:
        return build_dsn(
            original=self.message.raw,
            sender=self.message.sender,
            recipients=self.report,
            reporting_mta=self.reporting_mta,
            arrival=self.message.received_at,
            kind=self.kind,
            queue_id=self.message.queue_id,
            now=self.now,
            to=to,
            postmaster=postmaster_address(self.vs),
            note=note,
        )

    def badmail(self, content: Message | int | bytes, reason: str) -> Path:
        lines = [
            reason,
            "",
            f"Queue ID: {self.message.queue_id}",
            f"Sender: <{self.message.sender}>",
            f"Arrived: {format_date(self.message.received_at)}",
            f"Written: {format_date(self.now)}",
            "Recipients:",
        ]
        lines += [
            f"  {r.address}: {r.status} {plain_diagnostic(r.diagnostic)}" for r in self.report
        ]
        return write_badmail(badmail_directory(self.vs), content, "\n".join(lines), now=self.now)

    def submit(self, recipients: list[str], content: bytes, detail: str) -> intake.Accepted:
        if self.vs is None:
            raise RuntimeError("No virtual server is left to send a DSN through.")
        return intake.submit_system_message(
            self.vs.pk, recipients, content, detail=detail, now=self.now
        )

    def send(self) -> tuple[str | None, str, str]:
        """The DSN to the sender, and for failures a copy to "send copy of NDR to" (an extra
        envelope recipient: the same report, the To header still the sender's)."""
        sender = self.message.sender
        recipients = [sender]
        copy = self.copy_to
        if self.kind != DELAY and copy and copy.lower() != sender.lower():
            recipients.append(copy)
        content = self.build(to=sender)
        accepted = self.submit(recipients, content, f"{self.kind} DSN for {self.message.queue_id}")
        unroutable = list(
            Recipient.objects.filter(
                message_id=accepted.message_pk, state=Recipient.State.FAILED
            ).values_list("address", "last_response")
        )
        also = f" and a copy to <{copy}>" if len(recipients) > 1 else ""
        if any(address.lower() == sender.lower() for address, _ in unroutable):
            # The report cannot even be routed back: that is a double bounce already.
            reason = "; ".join(response for _, response in unroutable)
            path = self.badmail(
                accepted.message_pk,
                f"The {self.kind} DSN {accepted.queue_id} could not be routed to the sender: "
                f"{reason}",
            )
            Recipient.objects.filter(message_id=accepted.message_pk).filter(
                state=Recipient.State.FAILED
            ).update(dsn_sent_at=self.now)
            detail = f"{self.kind} DSN {accepted.queue_id} unroutable{also}; badmail: {path}"
            return None, TrackingEvent.Kind.BADMAIL, detail
        counted(DSNS, {"kind": self.kind})
        return (
            accepted.queue_id,
            TrackingEvent.Kind.DSN_SENT,
            f"{self.kind} DSN {accepted.queue_id} to <{sender}>{also}",
        )

    def double_bounce(self) -> tuple[None, str, str]:
        """No DSN for a null-sender or system message: it goes to badmail, and the postmaster
        ("send copy of NDR to") gets the report, unless that address is what failed (the
        report about a failed report would fail the same way, for ever)."""
        path = self.badmail(
            self.message,
            "Delivery failed for a message from the null sender <> (a DSN or other system "
            "message). No DSN is sent for such a message (it would be a double bounce).",
        )
        copy = self.copy_to
        failed = {r.address.lower() for r in self.report}
        detail = f"double bounce: no DSN for the null sender; badmail: {path}"
        if copy and copy.lower() not in failed:
            note = (
                f"This message came from the null sender <> (a delivery notification or another "
                f"system message), so no notification goes back to its sender. A copy of it was "
                f"written to the badmail directory of {self.reporting_mta}: {path.name}."
            )
            accepted = self.submit(
                [copy],
                self.build(to=copy, note=note),
                f"double bounce report for {self.message.queue_id}",
            )
            detail += f"; report {accepted.queue_id} to <{copy}>"
        return None, TrackingEvent.Kind.BADMAIL, detail
