"""Placement: a message becomes rows. The message, its recipients, one queue entry per message
x link queue and its tracking events, for every caller alike: SMTP intake, the relay's own
messages (DSNs) and routing again. Several messages go in the same few multi-row statements,
so the relay's writer commits everything its sessions finished in one transaction.

Everything per message comes from the caller (``Receiver``: the receiving virtual server,
the delivery times, the tracking switches) and from a per-process cache of link queue ids,
so placing a message reads no configuration row. A cached id whose row was deleted since
makes the commit fail; the cache is then dropped and the message placed again.
"""

from __future__ import annotations

import logging
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from connectors.routing import Route
from relay.queue import dispatch
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
from relay.queue.rows import Row, RowWriter, allocate_ids, pipelined
from relay.queue.timings import DeliveryTimes, entry_timing
from relay.queue.tracking import MessageRef, TrackingSettings, event_row
from servers.models import VirtualServer
from smtpadmin.models import Organization

log = logging.getLogger("relay.queue")

LOCAL_QUEUE_NAME = "Local delivery"
QUEUE_ID_ATTEMPTS = 3
SUBJECT_LIMIT = 1000
_ENHANCED_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_OUTBOUND_KINDS = (LinkQueue.Kind.CONNECTOR, LinkQueue.Kind.SMART_HOST, LinkQueue.Kind.DNS)
_TIMES_FIELDS = (
    "pk",
    "outbound_expiration_minutes",
    "outbound_delay_notification_minutes",
    "local_expiration_minutes",
    "local_delay_notification_minutes",
)


# --- pure helpers ------------------------------------------------------------------------


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


def delivery_times(row: Sequence[int]) -> DeliveryTimes:
    """``DeliveryTimes`` from a row of ``VirtualServer`` values in ``_TIMES_FIELDS`` order."""
    return DeliveryTimes(*row)


def all_delivery_times() -> tuple[DeliveryTimes, ...]:
    """Every virtual server's delivery times, in one query (a handful of rows)."""
    rows = VirtualServer.objects.order_by("pk").values_list(*_TIMES_FIELDS)
    return tuple(delivery_times(row) for row in rows)


# --- what a caller hands over ------------------------------------------------------------


@dataclass(frozen=True)
class Receiver:
    """The virtual server a message arrives on, as placement needs it."""

    virtual_server_id: int
    virtual_server_name: str
    server_id: int
    server_name: str
    fqdn: str  # what our Received header and Message-IDs say
    # This virtual server's delivery times and those of the bridgeheads that may deliver (a
    # bridgehead missing here is read when a message goes its way).
    times: tuple[DeliveryTimes, ...]
    tracking: TrackingSettings

    @classmethod
    def load(cls, virtual_server_id: int) -> Receiver:
        """Read from the database (callers without the relay's snapshot)."""
        return cls.of(VirtualServer.objects.select_related("server").get(pk=virtual_server_id))

    @classmethod
    def of(cls, vs: VirtualServer) -> Receiver:
        """For ``vs`` (its server loaded), reading the tracking switches. The times of other
        bridgeheads are read when a message goes their way."""
        return cls(
            virtual_server_id=vs.pk,
            virtual_server_name=vs.name,
            server_id=vs.server_id,
            server_name=vs.server.name,
            fqdn=vs.effective_fqdn,
            times=(
                DeliveryTimes(
                    vs.pk,
                    vs.outbound_expiration_minutes,
                    vs.outbound_delay_notification_minutes,
                    vs.local_expiration_minutes,
                    vs.local_delay_notification_minutes,
                ),
            ),
            tracking=TrackingSettings.of(Organization.get()),
        )


@dataclass(frozen=True)
class Draft:
    """One message ready to be written: the content as stored and a route per recipient."""

    queue_id: str
    sender: str  # "" = the null sender
    content: bytes
    message_id: str
    subject: str
    priority: str
    system: bool
    routes: tuple[Route, ...]
    received_detail: str  # what the "received" tracking event says
    client_address: str = ""
    client_name: str = ""
    helo: str = ""
    auth_user: str = ""
    protocol: str = ""
    smtputf8: bool = False


# A message's draft for a queue id and an arrival time: the queue id is in the Received
# header and picks the spread of equal-cost routes, so a redrawn id means a new draft.
Drafter = Callable[[str, datetime], Draft]


@dataclass(frozen=True)
class Request:
    receiver: Receiver
    drafter: Drafter


@dataclass(frozen=True)
class Placed:
    queue_id: str
    message_pk: int
    local_entry_ids: tuple[int, ...]


# --- link queue ids, cached per process ------------------------------------------------


@dataclass(frozen=True)
class QueueRef:
    pk: int
    kind: str
    name: str


_known_queues: dict[str, QueueRef] = {}
_known_lock = threading.Lock()


def forget_queues() -> None:
    """Drop the cache (after a failed commit: one of its ids may name a deleted row)."""
    with _known_lock:
        _known_queues.clear()


def _remember(queues: Mapping[str, QueueRef]) -> None:
    with _known_lock:
        _known_queues.update(queues)


def _resolve_queues(specs: Mapping[str, QueueSpec], *, cached: bool) -> dict[str, QueueRef]:
    found: dict[str, QueueRef] = {}
    if cached:
        with _known_lock:
            found = {key: _known_queues[key] for key in specs if key in _known_queues}
    missing = [spec for key, spec in specs.items() if key not in found]
    if missing:
        rows = LinkQueue.for_specs(missing)
        found.update((key, QueueRef(q.pk, q.kind, q.name)) for key, q in rows.items())
    return found


# --- writing -------------------------------------------------------------------------------


def place_durably(requests: Sequence[Request]) -> list[Placed | Exception]:
    """Place these messages in ONE transaction and commit it; each result is the message's
    placement or the error that kept it out. After a failure every message is placed again
    in a transaction of its own, so one bad message does not fail its neighbours (and a
    queue id that clashes is drawn again). Must not run inside a transaction: a commit there
    would be no commit."""
    if len(requests) > 1:
        try:
            return list(_commit(requests, [new_queue_id() for _ in requests], cached=True))
        except Exception as error:
            log.warning(
                "placing %d messages together failed (%r); one by one", len(requests), error
            )
            forget_queues()
            return [_commit_one(request, cached=False) for request in requests]
    return [_commit_one(request, cached=True) for request in requests]


def place_within(request: Request, now: datetime | None = None) -> Placed:
    """Place one message inside the caller's transaction (when there is one), so it commits
    or rolls back with the caller's work. Reads the link queues rather than trusting the
    cache: no later commit of ours would catch a stale id."""
    for attempt in range(QUEUE_ID_ATTEMPTS):
        queue_id = new_queue_id()
        try:
            # A savepoint: a queue id clash rolls back this try only, not the caller's work.
            with transaction.atomic():
                placed, _ = _write([request], [queue_id], cached=False, now=now)
            return placed[0]
        except IntegrityError:
            if not _clash(queue_id) or attempt == QUEUE_ID_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _commit(requests: Sequence[Request], queue_ids: Sequence[str], *, cached: bool) -> list[Placed]:
    with transaction.atomic(durable=True):
        placed, queues = _write(requests, queue_ids, cached=cached)
    # Committed rows only (a test's enclosing transaction is rolled back in the end).
    if not transaction.get_connection().in_atomic_block:
        _remember(queues)
    return placed


def _commit_one(request: Request, *, cached: bool) -> Placed | Exception:
    for attempt in range(QUEUE_ID_ATTEMPTS):
        queue_id = new_queue_id()
        used_cache = cached and attempt == 0
        try:
            return _commit([request], [queue_id], cached=used_cache)[0]
        except IntegrityError as error:
            forget_queues()
            if attempt == QUEUE_ID_ATTEMPTS - 1:
                return error
            # Two messages drew the same queue id, or a cached queue was deleted: try again.
            if not _clash(queue_id) and not used_cache:
                return error
        except Exception as error:
            return error
    raise AssertionError("unreachable")  # pragma: no cover


def _clash(queue_id: str) -> bool:
    return Message.objects.filter(queue_id=queue_id).exists()


def _write(
    requests: Sequence[Request],
    queue_ids: Sequence[str],
    *,
    cached: bool,
    now: datetime | None = None,
) -> tuple[list[Placed], dict[str, QueueRef]]:
    """The rows of these messages, in one statement per table (and batch of the database):
    plain rows rather than model instances, which cost more to build and save than the
    message itself."""
    now = now or timezone.now()
    drafts = [
        request.drafter(queue_id, now)
        for request, queue_id in zip(requests, queue_ids, strict=True)
    ]
    specs = [
        [queue_spec(route, server_id=request.receiver.server_id) for route in draft.routes]
        for request, draft in zip(requests, drafts, strict=True)
    ]
    wanted = {spec.key: spec for row in specs for spec in row if spec is not None}
    queues = _resolve_queues(wanted, cached=cached)
    writer = RowWriter(now)
    message_rows = [
        _message(request.receiver, draft, now)
        for request, draft in zip(requests, drafts, strict=True)
    ]
    times = _times(requests, drafts)
    entries = [
        _entries(request.receiver, draft, row, queues, times, now)
        for request, draft, row in zip(requests, drafts, specs, strict=True)
    ]
    entry_rows = [entry for by_key in entries for entry in by_key.values()]
    # On PostgreSQL every statement of the batch goes out at once: the keys are drawn first
    # (with the transaction's BEGIN), so no row waits for the RETURNING of the rows it names.
    with pipelined():
        message_ids, entry_ids = allocate_ids(
            [(Message, len(message_rows)), (QueueEntry, len(entry_rows))]
        )
        for message, pk in zip(message_rows, message_ids, strict=False):
            message["id"] = pk
        message_pks = writer.insert(Message, message_rows, returning=not message_ids)
        message_pks = message_ids or message_pks
        for by_key, message_pk in zip(entries, message_pks, strict=True):
            for entry in by_key.values():
                entry["message_id"] = message_pk
        for entry, pk in zip(entry_rows, entry_ids, strict=False):
            entry["id"] = pk
        returned = writer.insert(QueueEntry, entry_rows, returning=not entry_ids)
        for entry, pk in zip(entry_rows, returned, strict=False):
            entry["id"] = pk
        writer.insert(
            Recipient,
            [
                recipient
                for message_pk, draft, row, by_key in zip(
                    message_pks, drafts, specs, entries, strict=True
                )
                for recipient in _recipients(message_pk, draft, row, by_key, now)
            ],
        )
        writer.insert(
            TrackingEvent,
            [
                event
                for request, draft, row in zip(requests, drafts, specs, strict=True)
                if request.receiver.tracking.enabled
                for event in _events(request.receiver, draft, row, queues, now)
            ],
        )
        # Local delivery is the relay worker's own; the unreachable queue waits for the sweeper.
        dispatch.wake(
            ref.pk for key, ref in queues.items() if ref.kind in _OUTBOUND_KINDS and key in wanted
        )
    placed = [
        Placed(
            queue_id=draft.queue_id,
            message_pk=message_pk,
            local_entry_ids=tuple(
                entry["id"]
                for key, entry in by_key.items()
                if queues[key].kind == LinkQueue.Kind.LOCAL
            ),
        )
        for draft, message_pk, by_key in zip(drafts, message_pks, entries, strict=True)
    ]
    return placed, queues


def _message(receiver: Receiver, draft: Draft, now: datetime) -> Row:
    return {
        "queue_id": draft.queue_id,
        "virtual_server_id": receiver.virtual_server_id,
        "sender": draft.sender,
        "content": draft.content,
        "size": len(draft.content),
        "message_id": draft.message_id[:MESSAGE_ID_LENGTH],
        "subject": draft.subject[:SUBJECT_LIMIT],
        "priority": draft.priority,
        "system": draft.system,
        "client_address": draft.client_address,
        "client_name": draft.client_name,
        "helo": draft.helo[:255],
        "auth_user": draft.auth_user,
        "protocol": draft.protocol,
        "smtputf8": draft.smtputf8,
        "received_at": now,
    }


def _times(requests: Sequence[Request], drafts: Sequence[Draft]) -> dict[int, DeliveryTimes]:
    """The delivery times of every virtual server these messages' entries follow: from the
    receivers, and in one query those of bridgeheads they do not know."""
    times = {t.virtual_server_id: t for request in requests for t in request.receiver.times}
    wanted = {
        route.bridgehead_virtual_server_id
        for draft in drafts
        for route in draft.routes
        if route.bridgehead_virtual_server_id
    }
    if missing := wanted - set(times):
        rows = VirtualServer.objects.filter(pk__in=missing).values_list(*_TIMES_FIELDS)
        times.update((row[0], delivery_times(row)) for row in rows)
    return times


def _entries(
    receiver: Receiver,
    draft: Draft,
    specs: Sequence[QueueSpec | None],
    queues: Mapping[str, QueueRef],
    times: Mapping[int, DeliveryTimes],
    now: datetime,
) -> dict[str, Row]:
    """One entry per link queue the message goes to, following the delivery settings of the
    connector's bridgehead, else of the receiving virtual server. The message's key is set
    once it is known."""
    entries: dict[str, Row] = {}
    for route, spec in zip(draft.routes, specs, strict=True):
        if spec is None or spec.key in entries:
            continue
        vs_id = route.bridgehead_virtual_server_id or receiver.virtual_server_id
        if vs_id not in times:  # a bridgehead deleted since the snapshot
            vs_id = receiver.virtual_server_id
        own = times.get(vs_id) or DeliveryTimes(vs_id)
        timing = entry_timing(own, local=spec.kind == LinkQueue.Kind.LOCAL, now=now)
        entries[spec.key] = {
            "queue_id": queues[spec.key].pk,
            "virtual_server_id": vs_id,
            "state": QueueEntry.State.READY,
            "next_attempt_at": now,
            "last_response": route.status or route.queued_reason,
            "expires_at": timing.expires_at,
            "delay_notify_at": timing.delay_notify_at,
            "created_at": now,
            # Given here, the database's copy from the message row is skipped.
            "message_size": len(draft.content),
        }
    return entries


def _recipients(
    message_pk: int,
    draft: Draft,
    specs: Sequence[QueueSpec | None],
    entries: Mapping[str, Row],
    now: datetime,
) -> Iterable[Row]:
    for route, spec in zip(draft.routes, specs, strict=True):
        recipient: Row = {
            "message_id": message_pk,
            "address": route.recipient,
            "domain": route.domain or route.recipient.rpartition("@")[2].lower(),
            "route": route.kind,
        }
        if spec is None:
            recipient["state"] = Recipient.State.FAILED
            recipient["status"] = enhanced_status(route.status) or "5.1.0"
            recipient["last_response"] = route.status or route.reason
            recipient["completed_at"] = now
        else:
            recipient["entry_id"] = entries[spec.key]["id"]
            recipient["last_response"] = route.status or route.queued_reason
        yield recipient


def _events(
    receiver: Receiver,
    draft: Draft,
    specs: Sequence[QueueSpec | None],
    queues: Mapping[str, QueueRef],
    now: datetime,
) -> list[Row]:
    server_name = receiver.server_name
    about = MessageRef(draft.queue_id, draft.message_id[:MESSAGE_ID_LENGTH], draft.sender)
    events = [
        event_row(
            about,
            TrackingEvent.Kind.RECEIVED,
            virtual_server_id=receiver.virtual_server_id,
            virtual_server_name=receiver.virtual_server_name,
            client_address=draft.client_address,
            client_name=draft.client_name,
            auth_user=draft.auth_user,
            size=len(draft.content),
            subject=draft.subject[:SUBJECT_LIMIT] if receiver.tracking.subjects else "",
            detail=draft.received_detail,
            at=now,
            server_name=server_name,
        )
    ]
    for route, spec in zip(draft.routes, specs, strict=True):
        if spec is None:
            events.append(
                event_row(
                    about,
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
            event_row(
                about,
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
