"""Intake: from an accepted SMTP transaction to durable rows, before the 250.

``accept`` adds the Received header (and a Message-ID when there is none), routes every
recipient with the same function the routing simulator uses (``connectors.routing.resolve``),
and writes the message, its recipients, one queue entry per message x link queue and the
tracking events in one transaction. It returns only once that transaction has committed, so
a message answered 250 survives a crash that follows. The number of queries does not grow
with the number of recipients (bulk inserts), only with the batches a database needs.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from connectors.routing import Route, resolve
from connectors.snapshot import MessageFacts, Topology
from connectors.topology import shared_topologies
from relay.headers import (
    add_message_id,
    header_facts,
    make_message_id,
    protocol_name,
    received_header,
)
from relay.queue.models import (
    MESSAGE_ID_LENGTH,
    UNREACHABLE_KEY,
    LinkQueue,
    Message,
    QueueEntry,
    QueueSpec,
    Recipient,
    TrackingEvent,
    new_queue_id,
)
from relay.queue.tracking import TrackingSettings, message_event
from servers.models import VirtualServer
from smtpadmin.models import Organization

LOCAL_QUEUE_NAME = "Local delivery"
_QUEUE_ID_ATTEMPTS = 3
_ENHANCED_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_SUBJECT_LIMIT = 1000


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

    @property
    def reply(self) -> str:
        return f"250 2.6.0 Ok: queued as {self.queue_id}"


def enhanced_status(reply: str) -> str:
    """The enhanced status code (RFC 3463) in a reply, e.g. "5.1.1"; "" when there is none."""
    found = _ENHANCED_STATUS.search(reply)
    return found.group(1) if found else ""


def spread_key(queue_id: str) -> int:
    """Routing's spread key for a message: stable for the message, varied across messages,
    so equal-cost connectors and bridgeheads share the load."""
    return zlib.crc32(queue_id.encode("ascii"))


def queue_spec(route: Route, *, server_id: int) -> QueueSpec | None:
    """The link queue a route leads to (None for a refused recipient). Pure."""
    if route.kind == "local":
        return QueueSpec(
            key=f"local:{server_id}",
            kind=LinkQueue.Kind.LOCAL,
            name=LOCAL_QUEUE_NAME,
            server_id=server_id,
        )
    if route.kind == "connector" and route.connector is not None:
        connector = route.connector
        # As routing decides the next hop: DNS unless the connector forwards to smart hosts.
        if not connector.use_dns and connector.smart_hosts.strip() and route.next_hops:
            hosts = ";".join(route.next_hops)
            return QueueSpec(
                key=f"connector:{connector.id}:smart-hosts:{hosts}",
                kind=LinkQueue.Kind.CONNECTOR,
                # The hosts in the name too: the connector's queue before and after an edit
                # of its smart hosts are two rows in Queue Viewer.
                name=f"{connector.name} ({hosts})",
                connector_id=connector.id,
                smart_hosts=hosts,
            )
        return QueueSpec(
            key=f"connector:{connector.id}:domain:{route.domain}",
            kind=LinkQueue.Kind.CONNECTOR,
            name=route.domain,
            connector_id=connector.id,
            domain=route.domain,
        )
    if route.kind == "smart_host":
        hosts = ";".join(route.next_hops)
        return QueueSpec(
            key=f"smart-hosts:{hosts}",
            kind=LinkQueue.Kind.SMART_HOST,
            name=hosts,
            smart_hosts=hosts,
        )
    if route.kind == "dns":
        return QueueSpec(
            key=f"dns:{route.domain}",
            kind=LinkQueue.Kind.DNS,
            name=route.domain,
            domain=route.domain,
        )
    if route.kind == "unreachable":
        return LinkQueue.system_spec(UNREACHABLE_KEY)
    return None  # reject


@dataclass(frozen=True)
class _Timing:
    expires_at: datetime
    delay_notify_at: datetime


def _timings(
    vs: VirtualServer, other_ids: set[int], now: datetime
) -> dict[tuple[int, bool], _Timing]:
    """Expiration and delay-notification times by (virtual server id, local?), from the
    receiving virtual server and, in one query, the bridgeheads that will deliver."""
    rows: list[tuple[int, int, int, int, int]] = [
        (
            vs.pk,
            vs.outbound_expiration_minutes,
            vs.outbound_delay_notification_minutes,
            vs.local_expiration_minutes,
            vs.local_delay_notification_minutes,
        )
    ]
    if other_ids:
        rows += VirtualServer.objects.filter(pk__in=other_ids).values_list(
            "pk",
            "outbound_expiration_minutes",
            "outbound_delay_notification_minutes",
            "local_expiration_minutes",
            "local_delay_notification_minutes",
        )
    timings: dict[tuple[int, bool], _Timing] = {}
    for pk, out_expire, out_delay, local_expire, local_delay in rows:
        timings[pk, False] = _Timing(
            now + timedelta(minutes=out_expire), now + timedelta(minutes=out_delay)
        )
        timings[pk, True] = _Timing(
            now + timedelta(minutes=local_expire), now + timedelta(minutes=local_delay)
        )
    return timings


def accept(envelope: Envelope, topology: Topology | None = None) -> Accepted:
    """Store and route one message; return once it is committed. Raises on a database failure
    (the listener answers 451 4.3.0 and the client tries again later)."""
    vs = VirtualServer.objects.select_related("server").get(pk=envelope.virtual_server_id)
    tracking = TrackingSettings.of(Organization.get())
    if topology is None:
        # The relay passes the snapshot its supervisor refreshes every second, which saves
        # most of the cost of a message; other callers take the process's current one.
        topology = shared_topologies.topology(vs, include_mailboxes=False)
    for attempt in range(_QUEUE_ID_ATTEMPTS):
        queue_id = new_queue_id()
        try:
            return _accept(envelope, vs, tracking, topology, queue_id)
        except IntegrityError:
            # Two messages drew the same queue id: draw again. Anything else is an error.
            clash = Message.objects.filter(queue_id=queue_id).exists()
            if not clash or attempt == _QUEUE_ID_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _accept(
    envelope: Envelope,
    vs: VirtualServer,
    tracking: TrackingSettings,
    topology: Topology,
    queue_id: str,
) -> Accepted:
    now = timezone.now()
    fqdn = vs.effective_fqdn
    # The same address twice gets one copy (as Postfix's duplicate filter does).
    recipients = tuple(dict.fromkeys(envelope.recipients))
    protocol = protocol_name(
        esmtp=envelope.esmtp,
        tls=envelope.tls,
        authenticated=bool(envelope.auth_user),
        smtputf8=envelope.smtputf8,
    )
    facts = header_facts(envelope.content)
    content = envelope.content
    message_id = facts.message_id
    if not message_id:
        message_id = make_message_id(fqdn, queue_id, date=now)
        content = add_message_id(content, message_id)
    content = (
        received_header(
            helo=envelope.helo,
            client_address=envelope.client_address,
            client_name=envelope.client_name,
            fqdn=fqdn,
            protocol=protocol,
            queue_id=queue_id,
            recipients=recipients,
            date=now,
        )
        + content
    )
    system = envelope.sender == ""
    message_facts = MessageFacts(
        size=len(content), priority=facts.priority, system=system, spread_key=spread_key(queue_id)
    )
    routes = [resolve(r, envelope.sender, message_facts, topology) for r in recipients]
    specs = [queue_spec(route, server_id=vs.server_id) for route in routes]

    # Whose delivery settings each queue entry follows: the connector's bridgehead, else us.
    entry_vs: dict[str, int] = {}
    for route, spec in zip(routes, specs, strict=True):
        if spec is not None and spec.key not in entry_vs:
            entry_vs[spec.key] = route.bridgehead_virtual_server_id or vs.pk
    timings = _timings(vs, set(entry_vs.values()) - {vs.pk}, now)
    for key, vs_id in entry_vs.items():
        if (vs_id, False) not in timings:  # a bridgehead deleted since the snapshot
            entry_vs[key] = vs.pk

    with transaction.atomic(durable=True):
        message = Message.objects.create(
            queue_id=queue_id,
            virtual_server=vs,
            sender=envelope.sender,
            content=content,
            size=len(content),
            message_id=message_id[:MESSAGE_ID_LENGTH],
            subject=facts.subject[:_SUBJECT_LIMIT],
            priority=facts.priority,
            system=system,
            client_address=envelope.client_address,
            client_name=envelope.client_name,
            helo=envelope.helo[:255],
            auth_user=envelope.auth_user,
            protocol=protocol,
            smtputf8=envelope.smtputf8,
            received_at=now,
        )
        queues = LinkQueue.for_specs(spec for spec in specs if spec is not None)
        entries = _create_entries(message, routes, specs, queues, entry_vs, timings, now)
        _create_recipients(message, routes, specs, entries, now)
        if tracking.enabled:
            TrackingEvent.objects.bulk_create(
                _events(message, envelope, vs, routes, specs, queues, tracking, now)
            )
    local = tuple(
        entry.pk for key, entry in entries.items() if queues[key].kind == LinkQueue.Kind.LOCAL
    )
    return Accepted(queue_id=queue_id, message_pk=message.pk, local_entry_ids=local)


def _create_entries(
    message: Message,
    routes: Sequence[Route],
    specs: Sequence[QueueSpec | None],
    queues: dict[str, LinkQueue],
    entry_vs: dict[str, int],
    timings: dict[tuple[int, bool], _Timing],
    now: datetime,
) -> dict[str, QueueEntry]:
    entries: dict[str, QueueEntry] = {}
    for route, spec in zip(routes, specs, strict=True):
        if spec is None or spec.key in entries:
            continue
        vs_id = entry_vs[spec.key]
        timing = timings[vs_id, spec.kind == LinkQueue.Kind.LOCAL]
        entries[spec.key] = QueueEntry(
            message=message,
            queue=queues[spec.key],
            virtual_server_id=vs_id,
            state=QueueEntry.State.READY,
            next_attempt_at=now,
            last_response=route.status or route.queued_reason,
            expires_at=timing.expires_at,
            delay_notify_at=timing.delay_notify_at,
            created_at=now,
        )
    # Primary keys come back on PostgreSQL and on SQLite 3.35+: the recipients need them.
    QueueEntry.objects.bulk_create(entries.values())
    _enqueue_delivery_on_commit(queues[key] for key in entries)
    return entries


_OUTBOUND_KINDS = (LinkQueue.Kind.CONNECTOR, LinkQueue.Kind.SMART_HOST, LinkQueue.Kind.DNS)


def _enqueue_delivery_on_commit(queues: Iterable[LinkQueue]) -> None:
    """Once the message is committed (never before: a worker must find the rows), ask Celery
    to deliver the outbound queues it went to. Local delivery is the relay worker's own, and
    the unreachable queue waits for the sweeper. A broker that is down loses nothing: the
    sweeper finds due work in the database within seconds."""
    pks = sorted({queue.pk for queue in queues if queue.kind in _OUTBOUND_KINDS})
    if pks:
        # Imported late: relay.tasks imports the delivery engine, which imports this module.
        from relay.tasks import enqueue_queues

        transaction.on_commit(lambda: enqueue_queues(pks))


def _create_recipients(
    message: Message,
    routes: Sequence[Route],
    specs: Sequence[QueueSpec | None],
    entries: dict[str, QueueEntry],
    now: datetime,
) -> None:
    rows = []
    for route, spec in zip(routes, specs, strict=True):
        recipient = Recipient(
            message=message,
            address=route.recipient,
            domain=route.domain or route.recipient.rpartition("@")[2].lower(),
            route=route.kind,
        )
        if spec is None:
            recipient.state = Recipient.State.FAILED
            recipient.status = enhanced_status(route.status) or "5.1.0"
            recipient.last_response = route.status or route.reason
            recipient.completed_at = now
        else:
            recipient.entry = entries[spec.key]
            recipient.last_response = route.status or route.queued_reason
        rows.append(recipient)
    Recipient.objects.bulk_create(rows)


def _events(
    message: Message,
    envelope: Envelope,
    vs: VirtualServer,
    routes: Sequence[Route],
    specs: Sequence[QueueSpec | None],
    queues: dict[str, LinkQueue],
    tracking: TrackingSettings,
    now: datetime,
) -> list[TrackingEvent]:
    server_name = vs.server.name
    events = [
        message_event(
            message,
            TrackingEvent.Kind.RECEIVED,
            virtual_server=vs,
            virtual_server_name=vs.name,
            client_address=envelope.client_address,
            client_name=envelope.client_name,
            auth_user=envelope.auth_user,
            size=message.size,
            subject=message.subject if tracking.subjects else "",
            detail=f"{message.protocol} from {envelope.helo or 'no HELO'}, "
            f"{len(routes)} recipient(s)",
            at=now,
            server_name=server_name,
        )
    ]
    for route, spec in zip(routes, specs, strict=True):
        if spec is None:
            events.append(
                message_event(
                    message,
                    TrackingEvent.Kind.FAILED,
                    recipient=route.recipient,
                    response=route.status,
                    detail=route.reason,
                    at=now,
                    server_name=server_name,
                )
            )
            continue
        events.append(
            message_event(
                message,
                TrackingEvent.Kind.ROUTED,
                recipient=route.recipient,
                queue_name=queues[spec.key].name,
                connector_name=route.connector_name,
                next_hop="; ".join(route.next_hops),
                detail=route.reason,
                at=now,
                server_name=server_name,
            )
        )
    return events


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
    system, routed and queued exactly as ``accept`` does it. No client sent it, so its
    Received header says only "by <fqdn> (smtpadmin) id <queue id>". Unlike ``accept``,
    which must commit before it answers 250, it runs inside the caller's transaction when
    there is one, so a DSN and the rows that record it commit (or roll back) together.
    ``detail`` describes it in the "received" tracking event."""
    # Imported here so this addition stays in one place at the end of the module.
    from email.utils import format_datetime

    from relay.headers import fold

    vs = VirtualServer.objects.select_related("server").get(pk=virtual_server_id)
    tracking = TrackingSettings.of(Organization.get())
    topology = shared_topologies.topology(vs, include_mailboxes=False)
    now = now or timezone.now()
    envelope = Envelope(
        virtual_server_id=vs.pk,
        sender="",
        recipients=tuple(dict.fromkeys(recipients)),
        content=content,
        client_address="",
        helo=vs.effective_fqdn,
    )
    for attempt in range(_QUEUE_ID_ATTEMPTS):
        queue_id = new_queue_id()
        received = fold(
            "Received",
            f"by {vs.effective_fqdn} (smtpadmin) id {queue_id}; {format_datetime(now)}",
        )
        try:
            # A savepoint: a queue id clash rolls back this try only, not the caller's work.
            with transaction.atomic():
                return _submit_system(
                    envelope, received, vs, tracking, topology, queue_id, now, detail
                )
        except IntegrityError:
            clash = Message.objects.filter(queue_id=queue_id).exists()
            if not clash or attempt == _QUEUE_ID_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _submit_system(
    envelope: Envelope,
    received: bytes,
    vs: VirtualServer,
    tracking: TrackingSettings,
    topology: Topology,
    queue_id: str,
    now: datetime,
    detail: str,
) -> Accepted:
    facts = header_facts(envelope.content)
    content = envelope.content
    message_id = facts.message_id
    if not message_id:
        message_id = make_message_id(vs.effective_fqdn, queue_id, date=now)
        content = add_message_id(content, message_id)
    content = received + content
    message_facts = MessageFacts(
        size=len(content), priority=facts.priority, system=True, spread_key=spread_key(queue_id)
    )
    routes = [resolve(r, "", message_facts, topology) for r in envelope.recipients]
    specs = [queue_spec(route, server_id=vs.server_id) for route in routes]
    entry_vs: dict[str, int] = {}
    for route, spec in zip(routes, specs, strict=True):
        if spec is not None and spec.key not in entry_vs:
            entry_vs[spec.key] = route.bridgehead_virtual_server_id or vs.pk
    timings = _timings(vs, set(entry_vs.values()) - {vs.pk}, now)
    for key, vs_id in entry_vs.items():
        if (vs_id, False) not in timings:
            entry_vs[key] = vs.pk
    message = Message.objects.create(
        queue_id=queue_id,
        virtual_server=vs,
        sender="",
        content=content,
        size=len(content),
        message_id=message_id[:MESSAGE_ID_LENGTH],
        subject=facts.subject[:_SUBJECT_LIMIT],
        priority=facts.priority,
        system=True,
        received_at=now,
    )
    queues = LinkQueue.for_specs(spec for spec in specs if spec is not None)
    entries = _create_entries(message, routes, specs, queues, entry_vs, timings, now)
    _create_recipients(message, routes, specs, entries, now)
    if tracking.enabled:
        events = _events(message, envelope, vs, routes, specs, queues, tracking, now)
        events[0].detail = detail or f"system message, {len(routes)} recipient(s)"
        TrackingEvent.objects.bulk_create(events)
    local = tuple(
        entry.pk for key, entry in entries.items() if queues[key].kind == LinkQueue.Kind.LOCAL
    )
    return Accepted(queue_id=queue_id, message_pk=message.pk, local_entry_ids=local)
