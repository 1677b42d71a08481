"""What decides whether a queue may send now, and how much of it one connection takes: the
schedules, the organization's outbound switch, the virtual server's connection limits and
messages per connection. The leases themselves are the queue's one protocol
(``relay.queue.leases``); remote delivery's claims hold for ``SMTPADMIN_DELIVERY_LEASE_SECONDS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from relay.delivery.schedule import windows_open
from relay.queue import leases
from relay.queue.leases import HOUSEKEEPING
from relay.queue.leases import delivery_lease_seconds as lease_seconds
from relay.queue.leases import new_owner as lease_owner
from relay.queue.models import LinkQueue, QueueEntry
from relay.queue.outcomes import server_name
from servers.models import VirtualServer
from smtpadmin.models import Organization

__all__ = [
    "CHUNK",
    "ENTRY_LOAD",
    "HOUSEKEEPING",
    "MAX_PER_CONNECTION",
    "Opening",
    "claim",
    "claim_more",
    "claim_opening",
    "has_due_work",
    "lease_owner",
    "lease_seconds",
    "outbound_disabled",
    "release",
    "sendable",
    "server_name",
    "within_connection_limits",
]

# At most this many messages in one connection when the virtual server sets no limit (then
# the next connection is another task: other queues get their turn in between).
MAX_PER_CONNECTION = 1000
# Entries claimed at a time for an open connection: each message's outcome is recorded as
# its reply arrives, and the next chunk is claimed before the last of these goes out.
CHUNK = 20
# Local delivery and the system queues open no connections: their leases do not count.
_NOT_CONNECTIONS = (LinkQueue.Kind.LOCAL, LinkQueue.Kind.SYSTEM)

ENTRY_LOAD = ("message", "virtual_server__server", "queue__connector")


def outbound_disabled() -> bool:
    """Queue Viewer's "Disable outbound mail", for the whole organization."""
    row = Organization.objects.filter(pk=1).values_list("outbound_mail_disabled", flat=True)
    return bool(row.first())


def sendable(queue: LinkQueue, now: datetime) -> Q | None:
    """Which due entries of ``queue`` may leave now, as a filter on the entries (None: none
    may). A connector's schedule closes its queues; with an oversize schedule, messages over
    the threshold follow that one instead. "Queue mail for remote triggered delivery" (ETRN)
    holds everything: the remote side fetches it."""
    connector = queue.connector
    if queue.kind != LinkQueue.Kind.CONNECTOR or connector is None:
        return Q()
    if connector.queue_for_remote_delivery:
        return None
    normal, oversize = windows_open(connector, now)
    if normal and oversize:
        return Q()
    threshold = connector.oversize_threshold_kb * 1024
    if normal:
        return Q(message__size__lte=threshold)
    if oversize:
        return Q(message__size__gt=threshold)
    return None


def live_leases(now: datetime) -> Q:
    return Q(lease_until__gt=now) & ~Q(lease_owner="") & ~Q(lease_owner__startswith=HOUSEKEEPING)


def within_connection_limits(
    queue: LinkQueue, vs: VirtualServer | None, now: datetime, owner: str = ""
) -> bool:
    """Whether one more connection (``owner``'s, whose own claim is not counted) keeps the
    virtual server's outbound connection limits (total, and per destination domain), counted
    across every worker as the live claims of delivering workers: one claim is one
    connection. Two workers checking at the same moment may both pass: the limit is a
    ceiling kept within a connection or two, not a lock (Exchange's is no stricter)."""
    if vs is None:
        return True
    live = (
        QueueEntry.objects.filter(live_leases(now))
        .exclude(queue__kind__in=_NOT_CONNECTIONS)
        .exclude(lease_owner=owner)
    )
    total = vs.outbound_connection_limit
    if total is not None:
        count = live.filter(virtual_server=vs).values("lease_owner").distinct().count()
        if count >= total:
            return False
    per_domain = vs.outbound_per_domain_limit
    if per_domain is not None:
        same = live.filter(queue__domain=queue.domain) if queue.domain else live.filter(queue=queue)
        if same.values("lease_owner").distinct().count() >= per_domain:
            return False
    return True


def claim(pks: list[int], owner: str, now: datetime, *, due: bool = True) -> list[QueueEntry]:
    """Remote delivery's lease on those of ``pks`` that are still free (and due, unless
    ``due`` is False: expiration and re-routing take entries that wait for a retry too), with
    message, virtual server and queue loaded."""
    return leases.claim(pks, owner, now, seconds=lease_seconds(), due=due, load=ENTRY_LOAD)


@dataclass(frozen=True)
class Opening:
    """The first claim of a connection: its entries (oldest first, all of one virtual server,
    whose settings the connection follows) and how many messages it may carry in all."""

    entries: list[QueueEntry]
    vs_id: int | None
    limit: int
    full: bool = False  # the claim took all it asked for: more may be due


def claim_opening(
    queue: LinkQueue, owner: str, now: datetime, sizes: Q, *, chunk: int = CHUNK
) -> Opening | None:
    """The first ``chunk`` due entries of ``queue`` for a new connection (one indexed, bounded
    claim), cut to the oldest one's virtual server and its "messages per connection". None
    when that virtual server's connection limits are reached (the claim is given back);
    empty entries when nothing is due."""
    entries = _claim(queue, owner, now, sizes, limit=chunk)
    if not entries:
        return Opening([], None, 0)
    full = len(entries) == chunk
    vs = entries[0].virtual_server
    vs_id = entries[0].virtual_server_id
    limit = MAX_PER_CONNECTION
    if vs is not None and vs.messages_per_connection:
        limit = min(limit, vs.messages_per_connection)
    kept = [e for e in entries if e.virtual_server_id == vs_id][:limit]
    if not within_connection_limits(queue, vs, now, owner):
        kept = []
    if len(kept) < len(entries):
        ours = {e.pk for e in kept}
        release([e for e in entries if e.pk not in ours], owner)
    return Opening(kept, vs_id, limit, full) if kept else None


def claim_more(
    queue: LinkQueue,
    owner: str,
    now: datetime,
    sizes: Q,
    vs_id: int | None,
    limit: int,
    vs: VirtualServer | None = None,
) -> list[QueueEntry]:
    """Up to ``limit`` more due entries for an open connection of ``owner`` (its virtual
    server's only): the same claim, under the same owner, so the connection still counts as
    one. With ``vs`` (the connection's virtual server, loaded) only the messages are read:
    the entries get ``queue`` and ``vs`` as they are."""
    shared = not sizes and vs is not None and vs.pk == vs_id
    entries = _claim(
        queue,
        owner,
        now,
        sizes,
        limit=limit,
        virtual_server=vs_id or None,
        load=("message",) if shared else ENTRY_LOAD,
    )
    if shared:
        for entry in entries:
            entry.queue, entry.virtual_server = queue, vs
    return entries


def _claim(
    queue: LinkQueue,
    owner: str,
    now: datetime,
    sizes: Q,
    *,
    limit: int,
    virtual_server: int | None = leases.ANY_SERVER,
    load: Sequence[str] = ENTRY_LOAD,
) -> list[QueueEntry]:
    """One claim that also starts an attempt: the written-out statement, or the ORM's when a
    schedule's size limit filters the entries through their message."""
    if not sizes:
        return leases.take_due(
            queue.pk,
            owner,
            now,
            seconds=lease_seconds(),
            limit=limit,
            virtual_server=virtual_server,
            attempt=True,
            load=load,
        )
    where = sizes
    if virtual_server != leases.ANY_SERVER:
        where &= Q(virtual_server_id=virtual_server) if virtual_server else Q(virtual_server=None)
    return leases.claim_due(
        queue.pk,
        owner,
        now,
        seconds=lease_seconds(),
        limit=limit,
        where=where,
        attempt=True,
        load=load,
    )


def release(entries: Sequence[QueueEntry], owner: str) -> None:
    """Give up the lease on entries left as they were."""
    leases.release([e.pk for e in entries], owner)


def has_due_work(queue_pk: int, now: datetime | None = None) -> bool:
    return QueueEntry.objects.due(now or timezone.now()).filter(queue_id=queue_pk).exists()
