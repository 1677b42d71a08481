"""The one lease protocol of the queue: every stage that works on queue entries (remote
delivery, local delivery, expiration, re-routing) claims them here, renews and releases them
here, and writes its results only while it still holds them (``QueueEntry.leased_to``).

"Claim, then work": a conditional UPDATE takes the lease on entries that are due (waiting,
their time has come, nobody holds a live lease). Only this table's columns are in the
UPDATE's WHERE clause (see ``QueueEntryQuerySet.due``), so PostgreSQL re-checks every row
after a concurrent update and each entry goes to exactly one claim. Every claim has an owner
of its own (the worker's name and a random suffix): the rows a claim won are exactly the rows
carrying that owner, and a worker whose lease ran out cannot write over its successor's work.
An expired lease needs no cleanup: the entry is simply due again.

How long a lease holds is the caller's to say (``seconds``): remote delivery holds a whole
SMTP batch (``SMTPADMIN_DELIVERY_LEASE_SECONDS``), local delivery a few Maildir writes
(``SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from relay.queue.models import QueueEntry

DEFAULT_DELIVERY_LEASE_SECONDS = 600
DEFAULT_LOCAL_LEASE_SECONDS = 60
# The worker name of claims that do not deliver (expiration, re-routing): their leases do
# not count as outbound connections.
HOUSEKEEPING = "housekeeping"


def delivery_lease_seconds() -> float:
    """``SMTPADMIN_DELIVERY_LEASE_SECONDS``: how long a remote delivery's claim holds. Longer
    than one connection with its batch takes; when a worker dies, its entries wait this long."""
    return float(
        getattr(settings, "SMTPADMIN_DELIVERY_LEASE_SECONDS", DEFAULT_DELIVERY_LEASE_SECONDS)
    )


def local_lease_seconds() -> float:
    """``SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS``: how long a local delivery holds its entries,
    and so how long their mail waits when the relay dies. Shorter than the remote lease: a
    Maildir delivery takes milliseconds and, being idempotent, costs only a redundant look
    when a lease runs out too soon."""
    return float(
        getattr(settings, "SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS", DEFAULT_LOCAL_LEASE_SECONDS)
    )


def new_owner(worker: str) -> str:
    """The owner of one claim: ``worker`` ("host/pid") and a suffix no other claim has."""
    return f"{worker}#{secrets.token_hex(4)}"[-200:]


def free(now: datetime) -> Q:
    """Nobody holds a live lease."""
    return Q(lease_until__isnull=True) | Q(lease_until__lt=now)


def _until(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def _won(pks: Iterable[int], owner: str, load: Sequence[str]) -> list[QueueEntry]:
    return list(
        QueueEntry.objects.filter(pk__in=list(pks), lease_owner=owner)
        .select_related(*load)
        .order_by("next_attempt_at", "pk")
    )


def claim(
    pks: Sequence[int],
    owner: str,
    now: datetime,
    *,
    seconds: float,
    due: bool = True,
    load: Sequence[str] = (),
) -> list[QueueEntry]:
    """Take the lease on those of ``pks`` that are still free (and due, unless ``due`` is
    False: expiration and re-routing take entries that wait for a retry too) for ``seconds``.
    Returns the entries won, oldest first, with the relations in ``load`` loaded."""
    if not pks:
        return []
    rows = (
        QueueEntry.objects.due(now)
        if due
        else QueueEntry.objects.filter(state__in=QueueEntry.DUE_STATES).filter(free(now))
    )
    # Another worker may have claimed some since they were read: the UPDATE re-checks each
    # row, and the rows carrying our owner are the ones we got.
    rows.filter(pk__in=list(pks)).update(lease_owner=owner, lease_until=_until(now, seconds))
    return _won(pks, owner, load)


def claim_due(
    queue_id: int,
    owner: str,
    now: datetime,
    *,
    seconds: float,
    limit: int,
    where: Q | None = None,
    attempt: bool = False,
    load: Sequence[str] = (),
) -> list[QueueEntry]:
    """Take the lease on up to ``limit`` due entries of one link queue (the oldest first;
    ``where`` narrows them further, and may follow relations) for ``seconds``; with
    ``attempt`` the claim is also when an attempt begins (``last_attempt_at``; the entries
    returned keep the time of the attempt before).

    In one transaction: the candidates are read with the relations in ``load`` (on
    PostgreSQL ``FOR UPDATE SKIP LOCKED``: two workers claiming from one queue at once take
    different rows instead of the second waiting for the first and then finding most of its
    candidates gone), then taken by an UPDATE that re-checks, on every database, that each
    is still due. Two statements, not ``UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR
    UPDATE)``: PostgreSQL may run such a subquery again for every row, and it then skips the
    rows the UPDATE already changed and takes more than ``limit``. When the UPDATE took them
    all (always, on PostgreSQL: they are locked), the rows read are the claim; otherwise the
    ones carrying ``owner`` are read again."""
    candidates = QueueEntry.objects.due(now).filter(queue_id=queue_id)
    if where is not None:
        candidates = candidates.filter(where)
    candidates = candidates.select_related(*load).order_by("next_attempt_at", "pk")
    if connection.features.has_select_for_update_skip_locked:
        candidates = candidates.select_for_update(skip_locked=True, of=("self",))
    until = _until(now, seconds)
    began = {"last_attempt_at": now} if attempt else {}
    with transaction.atomic():
        found = list(candidates[: max(limit, 0)])
        if not found:
            return []
        pks = [entry.pk for entry in found]
        taken = (
            QueueEntry.objects.due(now)
            .filter(pk__in=pks)
            .update(lease_owner=owner, lease_until=until, **began)
        )
    if taken != len(found):
        return _won(pks, owner, load)
    for entry in found:
        entry.lease_owner, entry.lease_until = owner, until
    return found


# ``take_due``'s virtual server when the claim takes entries of any.
ANY_SERVER = -1


def take_due(
    queue_id: int,
    owner: str,
    now: datetime,
    *,
    seconds: float,
    limit: int,
    virtual_server: int | None = ANY_SERVER,
    attempt: bool = False,
    load: Sequence[str] = (),
) -> list[QueueEntry]:
    """``claim_due`` in one statement written out (no ORM query to build for a claim that
    finds nothing, as most claims of an open connection do), for entries of one virtual server
    (``virtual_server``; None: of none) or any. With ``attempt`` the claim is also when an
    attempt begins (``last_attempt_at``). On PostgreSQL the candidates are locked ``SKIP
    LOCKED`` in a materialized CTE (evaluated once, so never more than ``limit``), on SQLite
    (one writer at a time) a subquery; both use the queue's due index and stop at ``limit``.
    Returns the entries won, oldest first, with the relations in ``load`` loaded."""
    if limit <= 0:
        return []
    table = connection.ops.quote_name(QueueEntry._meta.db_table)
    at = connection.ops.adapt_datetimefield_value(now)
    until = connection.ops.adapt_datetimefield_value(_until(now, seconds))
    states = [str(state) for state in QueueEntry.DUE_STATES]
    where = (
        "queue_id = %s AND state IN (%s, %s) AND next_attempt_at <= %s "
        "AND (lease_until IS NULL OR lease_until < %s)"
    )
    parameters: list[Any] = [queue_id, *states, at, at]
    if virtual_server is None:
        where += " AND virtual_server_id IS NULL"
    elif virtual_server != ANY_SERVER:
        where += " AND virtual_server_id = %s"
        parameters.append(virtual_server)
    parameters.append(limit)
    assign = "lease_owner = %s, lease_until = %s" + (", last_attempt_at = %s" if attempt else "")
    values: list[Any] = [owner, until, *([at] if attempt else [])]
    # The table name is the model's and every value a parameter.
    candidates = f"SELECT id FROM {table} WHERE {where} ORDER BY next_attempt_at, id LIMIT %s"  # noqa: S608
    if connection.vendor == "postgresql":
        sql = (
            f"WITH c AS MATERIALIZED ({candidates} FOR UPDATE SKIP LOCKED) "  # noqa: S608
            f"UPDATE {table} AS e SET {assign} FROM c WHERE e.id = c.id RETURNING e.id"
        )
        arguments = [*parameters, *values]
    else:
        sql = f"UPDATE {table} SET {assign} WHERE id IN ({candidates}) RETURNING id"  # noqa: S608
        arguments = [*values, *parameters]
    with connection.cursor() as cursor:
        cursor.execute(sql, arguments)
        pks = [row[0] for row in cursor.fetchall()]
    if not pks:
        return []
    return list(
        QueueEntry.objects.filter(pk__in=pks)
        .select_related(*load)
        .order_by("next_attempt_at", "pk")
    )


def renew(pks: Iterable[int], owner: str, *, seconds: float, now: datetime | None = None) -> int:
    """Extend the lease on those of ``pks`` that ``owner`` still holds: a lease that ran out
    and was taken by another claim is not taken back. Returns how many were extended."""
    until = _until(now or timezone.now(), seconds)
    return QueueEntry.objects.filter(pk__in=list(pks), lease_owner=owner).update(lease_until=until)


def release(pks: Iterable[int], owner: str) -> int:
    """Give up the lease on those of ``pks`` that ``owner`` holds, leaving them as they were
    (due again at once when their time has come)."""
    pks = list(pks)
    if not pks:
        return 0
    return QueueEntry.objects.filter(pk__in=pks, lease_owner=owner).update(
        lease_owner="", lease_until=None
    )


def begin_attempt(entries: Sequence[QueueEntry], owner: str, now: datetime) -> frozenset[int]:
    """Mark that an attempt at these claimed entries begins (``last_attempt_at``, which
    nothing clears, not even freezing). Returns the entries no attempt had begun on before:
    nothing of theirs can be anywhere yet, so an idempotent transport need not look for what
    a dead attempt left behind. Called before the transport writes anything."""
    first = frozenset(e.pk for e in entries if e.last_attempt_at is None)
    if entries:
        QueueEntry.objects.filter(pk__in=[e.pk for e in entries], lease_owner=owner).update(
            last_attempt_at=now
        )
    return first
