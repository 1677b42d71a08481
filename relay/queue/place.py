"""Placement: a message becomes rows. The message, its recipients, one queue entry per message
x link queue and its tracking events, for every caller alike: SMTP intake, the relay's own
messages (DSNs) and routing again. Several messages go in the same statements (on PostgreSQL
one statement for all their rows, on SQLite one multi-row INSERT per table), so the relay's
writer commits everything its sessions finished in one transaction.

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
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from connectors.routing import Route
from relay.metrics import RECEIVED
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
from relay.queue.rows import Row, RowWriter, execute_prepared, server_cursor
from relay.queue.timings import DeliveryTimes, entry_timing
from relay.queue.tracking import MessageRef, TrackingSettings, event_row
from servers.models import VirtualServer
from smtpadmin import counters
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
    # Recipients routing refused after the client was answered 250: their sender is owed an
    # NDR (``relay.delivery.dsn.report_refused``).
    refused: bool = False


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
    results: list[Placed | Exception]
    if len(requests) > 1:
        try:
            results = list(_commit(requests, [new_queue_id() for _ in requests], cached=True))
        except Exception as error:
            log.warning(
                "placing %d messages together failed (%r); one by one", len(requests), error
            )
            forget_queues()
            results = [_commit_one(request, cached=False) for request in requests]
    else:
        results = [_commit_one(request, cached=True) for request in requests]
    received = Counter(
        request.receiver.virtual_server_name
        for request, result in zip(requests, results, strict=True)
        if isinstance(result, Placed)
    )
    for name, n in received.items():
        counters.add(RECEIVED, {"virtual_server": name}, n)  # committed: counted in memory
    return results


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
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        # The batch's rows are one statement there: it commits by itself (and waits for the
        # disk), with no BEGIN and COMMIT to wait for besides.
        placed, queues = _write(requests, queue_ids, cached=cached)
        _remember(queues)
        return placed
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
    message_rows = [
        _message(request.receiver, draft, now)
        for request, draft in zip(requests, drafts, strict=True)
    ]
    times = _times(requests, drafts)
    entries = [
        _entries(request.receiver, draft, row, queues, times, now)
        for request, draft, row in zip(requests, drafts, specs, strict=True)
    ]
    recipients = [
        list(_recipients(draft, row, by_key, now))
        for draft, row, by_key in zip(drafts, specs, entries, strict=True)
    ]
    events = [
        event
        for request, draft, row in zip(requests, drafts, specs, strict=True)
        if request.receiver.tracking.enabled
        for event in _events(request.receiver, draft, row, queues, now)
    ]
    # Local delivery is the relay worker's own; the unreachable queue waits for the sweeper.
    outbound = [
        ref.pk for key, ref in queues.items() if ref.kind in _OUTBOUND_KINDS and key in wanted
    ]
    if connection.vendor == "postgresql":
        message_pks = _insert_as_one(message_rows, entries, recipients, events, outbound, now)
    else:
        message_pks = _insert_each(message_rows, entries, recipients, events, now)
        dispatch.wake(outbound)
    placed = [
        Placed(
            queue_id=draft.queue_id,
            message_pk=message_pk,
            local_entry_ids=tuple(
                entry["id"]
                for key, entry in by_key.items()
                if queues[key].kind == LinkQueue.Kind.LOCAL
            ),
            refused=None in row,
        )
        for draft, message_pk, by_key, row in zip(drafts, message_pks, entries, specs, strict=True)
    ]
    return placed, queues


def _insert_each(
    message_rows: list[Row],
    entries: list[dict[str, Row]],
    recipients: list[list[Row]],
    events: list[Row],
    now: datetime,
) -> list[int]:
    """The rows in one multi-row INSERT per table, each waiting for the keys of the last."""
    writer = RowWriter(now)
    message_pks = writer.insert(Message, message_rows, returning=True)
    for by_key, message_pk in zip(entries, message_pks, strict=True):
        for entry in by_key.values():
            entry["message_id"] = message_pk
    entry_rows = [entry for by_key in entries for entry in by_key.values()]
    for entry, pk in zip(
        entry_rows, writer.insert(QueueEntry, entry_rows, returning=True), strict=True
    ):
        entry["id"] = pk
    rows = []
    for message_pk, by_key, message_recipients in zip(
        message_pks, entries, recipients, strict=True
    ):
        for recipient in message_recipients:
            key = recipient.pop("entry", None)
            rows.append(
                {**recipient, "message_id": message_pk, "entry_id": by_key[key]["id"]}
                if key is not None
                else {**recipient, "message_id": message_pk}
            )
    writer.insert(Recipient, rows)
    writer.insert(TrackingEvent, events)
    return message_pks


def _insert_as_one(
    message_rows: list[Row],
    entries: list[dict[str, Row]],
    recipients: list[list[Row]],
    events: list[Row],
    outbound: list[int],
    now: datetime,
) -> list[int]:
    """PostgreSQL: every row of the batch and the wake-up flags in ONE statement, so one
    round trip to the server (and, outside a transaction, its own commit). The keys are drawn
    from the sequences inside it and the rows that name them joined to them by number: the
    n-th message, the n-th entry. The statement's text depends only on whether there are
    tracking events: it is prepared, so the server parses and plans it once per connection."""
    writer = RowWriter(now)
    quote = connection.ops.quote_name
    entry_rows: list[Row] = []
    entry_messages: list[int] = []  # the message number (1-based) of each entry
    entry_numbers: list[dict[str, int]] = []  # per message: its entries' numbers by key
    for number, by_key in enumerate(entries, 1):
        numbers = {}
        for key, entry in by_key.items():
            entry_rows.append(entry)
            entry_messages.append(number)
            numbers[key] = len(entry_rows)
        entry_numbers.append(numbers)
    recipient_rows: list[Row] = []
    recipient_messages: list[int] = []
    recipient_entries: list[int | None] = []
    for number, (numbers, message_recipients) in enumerate(
        zip(entry_numbers, recipients, strict=True), 1
    ):
        for recipient in message_recipients:
            key = recipient.pop("entry", None)
            recipient_rows.append(recipient)
            recipient_messages.append(number)
            recipient_entries.append(None if key is None else numbers[key])

    messages = writer.arrays(Message, message_rows)
    queued = writer.arrays(QueueEntry, entry_rows, exclude={"message_id"})
    addressed = writer.arrays(Recipient, recipient_rows, exclude={"message_id", "entry_id"})
    flip, flip_parameters = dispatch.flip_statement(now)
    wake_ids = outbound if dispatch.publishing() else []

    def sequence(model: type[Message] | type[QueueEntry]) -> str:
        return f"pg_get_serial_sequence('{quote(model._meta.db_table)}', 'id')"

    def listed(names: Iterable[str]) -> str:
        return ", ".join(names)

    def numbered(count: int) -> str:
        return listed(f"u.c{i}" for i in range(count))

    def aliases(count: int) -> str:
        return listed(f"c{i}" for i in range(count))

    message_table = quote(Message._meta.db_table)
    entry_table = quote(QueueEntry._meta.db_table)
    recipient_table = quote(Recipient._meta.db_table)
    n_m, n_e, n_r = len(messages.columns), len(queued.columns), len(addressed.columns)
    # Table, column and type names are the models'; every value is a parameter.
    parts = [
        f"mid AS MATERIALIZED (SELECT nextval({sequence(Message)}) AS id, n "  # noqa: S608
        "FROM generate_series(1, %s::integer) AS n)",
        f"eid AS MATERIALIZED (SELECT nextval({sequence(QueueEntry)}) AS id, n "  # noqa: S608
        "FROM generate_series(1, %s::integer) AS n)",
        f"m AS (INSERT INTO {message_table} (id, {listed(messages.columns)}) "  # noqa: S608
        f"SELECT mid.id, {numbered(n_m)} FROM unnest({listed(messages.casts)}) "
        f"WITH ORDINALITY AS u({aliases(n_m)}, n) JOIN mid USING (n))",
        f"e AS (INSERT INTO {entry_table} (id, message_id, {listed(queued.columns)}) "  # noqa: S608
        f"SELECT eid.id, mid.id, {numbered(n_e)} "
        f"FROM unnest(%s::integer[], {listed(queued.casts)}) "
        f"WITH ORDINALITY AS u(mn, {aliases(n_e)}, n) "
        "JOIN eid USING (n) JOIN mid ON mid.n = u.mn)",
        f"r AS (INSERT INTO {recipient_table} (message_id, entry_id, "  # noqa: S608
        f"{listed(addressed.columns)}) SELECT mid.id, eid.id, {numbered(n_r)} "
        f"FROM unnest(%s::integer[], %s::integer[], {listed(addressed.casts)}) "
        f"WITH ORDINALITY AS u(mn, en, {aliases(n_r)}, n) "
        # In the order given: the recipients' keys follow it, as with a plain INSERT.
        "JOIN mid ON mid.n = u.mn LEFT JOIN eid ON eid.n = u.en ORDER BY u.n)",
        f"w AS ({flip})",
    ]
    parameters: list[Any] = [
        len(message_rows),
        len(entry_rows),
        *messages.values,
        entry_messages,
        *queued.values,
        recipient_messages,
        recipient_entries,
        *addressed.values,
        flip_parameters[0],
        wake_ids,
        *flip_parameters[1:],
    ]
    if events:
        tracked = writer.arrays(TrackingEvent, events)
        parts.append(
            f"t AS (INSERT INTO {quote(TrackingEvent._meta.db_table)} "  # noqa: S608
            f"({listed(tracked.columns)}) SELECT * FROM unnest({listed(tracked.casts)}))"
        )
        parameters += tracked.values
    # Idle connections holding these queues, and the flags set, are told on commit.
    notify, notify_parameters = dispatch.notify_statement(now, "w", wake_ids)
    parameters += notify_parameters
    results = "ARRAY(SELECT id FROM mid ORDER BY n), ARRAY(SELECT id FROM eid ORDER BY n)"
    sql = f"WITH {', '.join(parts)} SELECT {results}, ARRAY(SELECT id FROM w), {notify}"  # noqa: S608
    with server_cursor() as cursor:
        execute_prepared(cursor, sql, parameters)
        message_pks, entry_pks, flipped, _notified = cursor.fetchone()
    for entry, pk in zip(entry_rows, entry_pks, strict=True):
        entry["id"] = pk
    if flipped:
        if connection.in_atomic_block:
            transaction.on_commit(lambda: dispatch.committed(flipped), robust=True)
        else:
            dispatch.committed(flipped)
    return list(message_pks)


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
    draft: Draft,
    specs: Sequence[QueueSpec | None],
    entries: Mapping[str, Row],
    now: datetime,
) -> Iterable[Row]:
    for route, spec in zip(draft.routes, specs, strict=True):
        recipient: Row = {
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
            recipient["entry"] = spec.key  # the entry's id once it is known
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
