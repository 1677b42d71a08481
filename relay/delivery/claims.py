"""Claiming queue entries for delivery, and what decides whether a queue may send now.

"Claim, then work": a conditional UPDATE takes the lease on due entries; only this table's
columns are in its WHERE clause (see ``QueueEntryQuerySet.due``), so PostgreSQL re-checks
every row after a concurrent update and each entry goes to exactly one worker. Every claim
gets a lease owner of its own (the worker id and a random suffix), so the rows a claim won
are exactly the rows carrying that owner, and a worker whose lease ran out cannot write over
its successor's work (``QueueEntry.leased_to``). Expired leases are simply due again.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from relay.delivery.schedule import windows_open
from relay.queue.models import LinkQueue, QueueEntry
from servers.models import VirtualServer
from smtpadmin.models import Organization

DEFAULT_LEASE_SECONDS = 600
# At most this many messages in one connection when the virtual server sets no limit: a
# batch must finish well within its lease.
MAX_BATCH = 100
# Claims for expiration, re-routing and the like, which do not deliver: their leases do not
# count as connections.
HOUSEKEEPING = "housekeeping"
_NOT_CONNECTIONS = (LinkQueue.Kind.LOCAL, LinkQueue.Kind.SYSTEM)

ENTRY_LOAD = ("message", "virtual_server__server", "queue__connector")


def lease_seconds() -> float:
    """``SMTPADMIN_DELIVERY_LEASE_SECONDS``: how long a claim holds. Longer than one connection
    with its batch takes; when a worker dies, its entries wait this long."""
    return float(getattr(settings, "SMTPADMIN_DELIVERY_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))


def lease_owner(worker: str) -> str:
    return f"{worker}#{secrets.token_hex(4)}"[-200:]


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


def within_connection_limits(queue: LinkQueue, vs: VirtualServer | None, now: datetime) -> bool:
    """The virtual server's outbound connection limits (total, and per destination domain),
    counted as the live claims of delivering workers: one claim is one connection. Two
    workers checking at the same moment may both pass: the limit is a ceiling kept within a
    connection or two, not a lock (Exchange's is no stricter)."""
    if vs is None:
        return True
    live = QueueEntry.objects.filter(live_leases(now)).exclude(queue__kind__in=_NOT_CONNECTIONS)
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
    """Take the lease on those of ``pks`` that are still free (and due, unless ``due`` is
    False: expiration and re-routing take entries that wait for a retry too). Returns the
    entries won, with message, virtual server and queue loaded."""
    if not pks:
        return []
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    rows = (
        QueueEntry.objects.due(now)
        if due
        else QueueEntry.objects.filter(state__in=QueueEntry.DUE_STATES).filter(free)
    )
    # Another worker may have claimed some since they were read: the UPDATE re-checks each
    # row, and the rows carrying our owner are the ones we got.
    rows.filter(pk__in=pks).update(
        lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds())
    )
    return list(
        QueueEntry.objects.filter(pk__in=pks, lease_owner=owner)
        .select_related(*ENTRY_LOAD)
        .order_by("next_attempt_at", "pk")
    )


def claim_batch(queue: LinkQueue, owner: str, now: datetime, sizes: Q) -> list[QueueEntry] | None:
    """One connection's worth of due entries of ``queue``: the oldest first, all of one
    virtual server (whose settings the connection follows), at most its "messages per
    connection". [] when nothing is due; None when its connection limits are reached."""
    due = QueueEntry.objects.due(now).filter(queue=queue).filter(sizes)
    first = due.order_by("next_attempt_at", "pk").values_list("virtual_server_id").first()
    if first is None:
        return []
    (vs_id,) = first
    vs = VirtualServer.objects.filter(pk=vs_id).first() if vs_id is not None else None
    if not within_connection_limits(queue, vs, now):
        return None
    limit = MAX_BATCH
    if vs is not None and vs.messages_per_connection:
        limit = min(limit, vs.messages_per_connection)
    same_vs = due.filter(virtual_server_id=vs_id) if vs_id else due.filter(virtual_server=None)
    pks = list(same_vs.order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit])
    return claim(pks, owner, now)


def release(entries: list[QueueEntry], owner: str) -> None:
    """Give up the lease on entries left as they were."""
    if entries:
        QueueEntry.objects.filter(pk__in=[e.pk for e in entries], lease_owner=owner).update(
            lease_owner="", lease_until=None
        )


def has_due_work(queue_pk: int, now: datetime | None = None) -> bool:
    return QueueEntry.objects.due(now or timezone.now()).filter(queue_id=queue_pk).exists()


def server_name(vs: VirtualServer | None) -> str:
    """The server a tracking event is written for: the one whose virtual server delivers."""
    if vs is not None and vs.server_id:
        return vs.server.name
    return str(getattr(settings, "SMTPADMIN_SERVER_NAME", ""))
