"""Intake: from an accepted SMTP transaction to durable rows, before the 250.

``accept`` adds the Received header (and a Message-ID when there is none), routes every
recipient with the same function the routing simulator uses (``connectors.routing.resolve``)
and hands the message to placement (``relay.queue.place``), which writes the message, its
recipients, one queue entry per message x link queue and the tracking events in one
transaction. It returns only once that transaction has committed, so a message answered 250
survives a crash that follows. The relay itself does not call ``accept``: its writer commits
the drafts of many sessions at once (``draft_request`` makes them from the relay's snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from django.utils import timezone

from connectors.routing import resolve
from connectors.snapshot import MessageFacts, Topology
from connectors.topology import shared_topologies
from relay.headers import (
    add_message_id,
    fold,
    header_facts,
    make_message_id,
    protocol_name,
    received_header,
)
from relay.queue.models import TrackingEvent
from relay.queue.place import (
    Draft,
    Placed,
    Receiver,
    Request,
    place_durably,
    place_within,
    spread_key,
)
from relay.queue.tracking import TrackingSettings
from servers.models import VirtualServer


@dataclass(frozen=True)
class Envelope:
    virtual_server_id: int
    sender: str  # "" = null sender <>, else normal address
    recipients: tuple[str, ...]  # normal addresses, as policy accepted them
    content: bytes  # as received: CRLF, dot-unstuffed, no Received of ours yet
    client_address: str
    client_name: str = ""  # forward-confirmed rDNS ("" = unknown or not looked up)
    helo: str = ""
    auth_user: str = ""
    tls: bool = False
    esmtp: bool = True
    smtputf8: bool = False


@dataclass(frozen=True)
class Accepted:
    queue_id: str
    message_pk: int
    local_entry_ids: tuple[int, ...]
    refused: bool = False  # some recipient was refused by routing: an NDR is owed

    @property
    def reply(self) -> str:
        return f"250 2.6.0 Ok: queued as {self.queue_id}"

    @classmethod
    def of(cls, placed: Placed) -> Accepted:
        return cls(placed.queue_id, placed.message_pk, placed.local_entry_ids, placed.refused)


def accept(
    envelope: Envelope, topology: Topology | None = None, receiver: Receiver | None = None
) -> Accepted:
    """Store and route one message; return once it is committed. Raises on a database failure
    (the listener answers 451 4.3.0 and the client tries again later). Without ``topology``
    and ``receiver`` (the relay's snapshot) it reads the configuration now."""
    if receiver is None or topology is None:
        vs = VirtualServer.objects.select_related("server").get(pk=envelope.virtual_server_id)
        receiver = receiver or Receiver.of(vs)
        topology = topology or shared_topologies.topology(vs, include_mailboxes=False)
    (result,) = place_durably([draft_request(envelope, topology, receiver)])
    if isinstance(result, Exception):
        raise result
    return Accepted.of(result)


def draft_request(envelope: Envelope, topology: Topology, receiver: Receiver) -> Request:
    """What placement needs to write ``envelope``: the receiver and a drafter that adds our
    headers and routes every recipient for the queue id placement draws. Reads nothing."""
    # The same address twice gets one copy (as Postfix's duplicate filter does).
    recipients = tuple(dict.fromkeys(envelope.recipients))
    protocol = protocol_name(
        esmtp=envelope.esmtp,
        tls=envelope.tls,
        authenticated=bool(envelope.auth_user),
        smtputf8=envelope.smtputf8,
    )
    facts = header_facts(envelope.content)
    system = envelope.sender == ""
    name = receiver.fqdn

    def drafter(queue_id: str, now: datetime) -> Draft:
        content = envelope.content
        message_id = facts.message_id
        if not message_id:
            message_id = make_message_id(name, queue_id, date=now)
            content = add_message_id(content, message_id)
        content = (
            received_header(
                helo=envelope.helo,
                client_address=envelope.client_address,
                client_name=envelope.client_name,
                fqdn=name,
                protocol=protocol,
                queue_id=queue_id,
                recipients=recipients,
                date=now,
            )
            + content
        )
        message_facts = MessageFacts(
            size=len(content),
            priority=facts.priority,
            system=system,
            spread_key=spread_key(queue_id),
        )
        return Draft(
            queue_id=queue_id,
            sender=envelope.sender,
            content=content,
            message_id=message_id,
            subject=facts.subject,
            priority=facts.priority,
            system=system,
            routes=tuple(resolve(r, envelope.sender, message_facts, topology) for r in recipients),
            received_detail=f"{protocol} from {envelope.helo or 'no HELO'}, "
            f"{len(recipients)} recipient(s)",
            client_address=envelope.client_address,
            client_name=envelope.client_name,
            helo=envelope.helo,
            auth_user=envelope.auth_user,
            protocol=protocol,
            smtputf8=envelope.smtputf8,
        )

    return Request(receiver=receiver, drafter=drafter)


def record_rejected(
    *,
    virtual_server_id: int,
    client_address: str,
    sender: str,
    recipient: str,
    reply: str | tuple[int, str],
    auth_user: str = "",
    client_name: str = "",
) -> None:
    """A tracking event for a refusal during the SMTP dialogue (RCPT, DATA), when message
    tracking is on. ``reply`` is the reply sent, as text or as (code, text)."""
    if not TrackingSettings.load().enabled:
        return
    text = reply if isinstance(reply, str) else f"{reply[0]} {reply[1]}"
    vs = VirtualServer.objects.select_related("server").filter(pk=virtual_server_id).first()
    TrackingEvent.objects.create(
        kind=TrackingEvent.Kind.REJECTED,
        sender=sender.lower(),
        recipient=recipient.lower(),
        server_name=vs.server.name if vs else "",
        virtual_server=vs,
        virtual_server_name=vs.name if vs else "",
        client_address=client_address,
        client_name=client_name,
        auth_user=auth_user,
        response=text,
    )


# --- system messages (DSNs) ---------------------------------------------------------------


def submit_system_message(
    virtual_server_id: int,
    recipients: Sequence[str],
    content: bytes,
    *,
    detail: str = "",
    now: datetime | None = None,
) -> Accepted:
    """Queue a message the relay wrote itself (a DSN / NDR): from the null sender, marked
    system, routed and placed exactly as ``accept`` does it. No client sent it, so its
    Received header says only "by <fqdn> (smtpadmin) id <queue id>". Unlike ``accept``,
    which must commit before it answers 250, it runs inside the caller's transaction when
    there is one, so a DSN and the rows that record it commit (or roll back) together.
    ``detail`` describes it in the "received" tracking event."""
    vs = VirtualServer.objects.select_related("server").get(pk=virtual_server_id)
    receiver = Receiver.of(vs)
    topology = shared_topologies.topology(vs, include_mailboxes=False)
    written = now or timezone.now()
    fqdn = receiver.fqdn
    unique = tuple(dict.fromkeys(recipients))
    facts = header_facts(content)

    def drafter(queue_id: str, _: datetime) -> Draft:
        received = fold(
            "Received", f"by {fqdn} (smtpadmin) id {queue_id}; {format_datetime(written)}"
        )
        body = content
        message_id = facts.message_id
        if not message_id:
            message_id = make_message_id(fqdn, queue_id, date=written)
            body = add_message_id(body, message_id)
        body = received + body
        message_facts = MessageFacts(
            size=len(body), priority=facts.priority, system=True, spread_key=spread_key(queue_id)
        )
        return Draft(
            queue_id=queue_id,
            sender="",
            content=body,
            message_id=message_id,
            subject=facts.subject,
            priority=facts.priority,
            system=True,
            routes=tuple(resolve(r, "", message_facts, topology) for r in unique),
            received_detail=detail or f"system message, {len(unique)} recipient(s)",
        )

    return Accepted.of(place_within(Request(receiver=receiver, drafter=drafter), written))
