"""Wake-ups for delivery: mail placed in a link queue publishes a deliver task only when the
queue has none pending.

A queue's ``wake_requested_at`` says a deliver task was asked for and has not started yet.
``wake`` sets it with one conditional UPDATE for the queues that do not have one pending
(inside the caller's transaction) and, once that commits, publishes a task for exactly the
queues it flipped; mail committed while the task waits rides on it. The task clears the flag
before it claims (``started``), so mail committed after that gets a wake-up of its own. A
publish that fails clears its flags again. The sweeper (``every=True``) asks for every queue
with due work as before, pending or not, so a task the broker lost is replaced within a
sweep; and a flag older than ``STALE_AFTER`` no longer holds back the wake-ups of new mail.

A caller that must answer first (the relay's writer: its sessions wait for their 250) commits
inside ``holding`` and publishes what it collected with ``publish`` after answering. A process
that dies in between loses only wake-ups: the flags it set go stale and the sweeper asks for
every queue with due work.

The queue core imports no stage: the delivery tasks register the publisher at import.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from relay.queue.models import LinkQueue

# Publishes a deliver task per queue id; returns the ids it could not publish.
Publisher = Callable[[Sequence[int]], Sequence[int]]

log = logging.getLogger("relay.queue")

STALE_AFTER = timedelta(minutes=1)
# The notification channel of wake-ups (PostgreSQL): idle connections wait on it.
CHANNEL = "smtpadmin_wake"

_publisher: Publisher | None = None
_held = threading.local()  # .pks: the wake-ups held back in this thread (None: publish)


def register_publisher(publisher: Publisher | None) -> None:
    global _publisher
    _publisher = publisher


def publishing() -> bool:
    """Whether wake-ups are published at all (the test suite's default is not to)."""
    return _publisher is not None and getattr(settings, "SMTPADMIN_DELIVERY_ENQUEUE", True)


def wake(
    queue_pks: Iterable[int],
    now: datetime | None = None,
    *,
    at_once: bool = False,
    every: bool = False,
) -> list[int]:
    """Ask for delivery of these queues once the current transaction commits (at once
    outside one, or with ``at_once`` when the caller's work needs no commit first: the
    tasks themselves). Returns the queues whose flag this call set: only those get a task;
    with ``every`` (the sweeper) that is all of them."""
    pks = sorted(set(queue_pks))
    if not pks or not publishing():
        return []
    flipped = _flip(pks, now or timezone.now(), every=every)
    if flipped and at_once:
        _publish(flipped)
    elif flipped:
        # Robust: whatever goes wrong here must not turn a committed message into an error
        # (its client would send it again); the sweeper covers a wake-up that is lost.
        transaction.on_commit(lambda: _publish_or_hold(flipped), robust=True)
    return flipped


@contextlib.contextmanager
def holding() -> Iterator[list[int]]:
    """Wake-ups of the transactions this thread commits inside are collected in the list it
    gives, not published: the caller passes them to ``publish`` when it is ready."""
    held: list[int] = []
    previous = getattr(_held, "pks", None)
    _held.pks = held
    try:
        yield held
    finally:
        _held.pks = previous


def publish(pks: Iterable[int]) -> None:
    """Publish wake-ups collected by ``holding`` (their flags are set and committed)."""
    wanted = sorted(set(pks))
    if wanted:
        _publish(wanted)


def _publish_or_hold(pks: Sequence[int]) -> None:
    held = getattr(_held, "pks", None)
    if held is None:
        _publish(pks)
    else:
        held.extend(pks)


def started(queue_pk: int, now: datetime | None = None) -> None:
    """A deliver task of this queue starts: mail committed from now on needs a new wake-up
    (a holder's mark stays: its idle connection still takes the queue's mail)."""
    LinkQueue.objects.filter(pk=queue_pk, wake_requested_at__lte=now or timezone.now()).update(
        wake_requested_at=None
    )


def flip_statement(now: datetime) -> tuple[str, list[Any]]:
    """``wake``'s UPDATE for PostgreSQL, to run inside a caller's statement (a CTE): its
    first parameter is left to the caller, the queue ids as an array. Returns the flags set.
    The caller passes them to ``committed`` once its statement has committed."""
    table = connection.ops.quote_name(LinkQueue._meta.db_table)
    # The table name is the model's and every value a parameter.
    sql = (
        f"UPDATE {table} SET wake_requested_at = %s WHERE id = ANY(%s::bigint[]) "  # noqa: S608
        "AND (wake_requested_at IS NULL OR wake_requested_at < %s) RETURNING id"
    )
    return sql, [now, now - STALE_AFTER]


def committed(flipped: Sequence[int]) -> None:
    """The flags in ``flipped`` were set by ``flip_statement`` and are committed: publish
    (or hold) their wake-ups, as ``wake`` does after its commit."""
    if flipped:
        try:
            _publish_or_hold(sorted(flipped))
        except Exception:  # as ``wake``'s robust hook: the sweeper covers a lost wake-up
            log.warning("publishing delivery wake-ups failed", exc_info=True)


def notify_statement(now: datetime, flipped: str, pks: Sequence[int]) -> tuple[str, list[Any]]:
    """For PostgreSQL, in the same statement as ``flip_statement`` (its CTE named ``flipped``):
    an expression that notifies, on ``CHANNEL``, the holders of these queues (idle connections
    waiting for their mail) and the flags set, as ``_flip`` does."""
    table = connection.ops.quote_name(LinkQueue._meta.db_table)
    # The table and CTE names are ours and every value a parameter.
    woken = (
        f"SELECT id, true AS task FROM {flipped} UNION ALL SELECT id, false AS task "  # noqa: S608
        f"FROM {table} WHERE id = ANY(%s::bigint[]) AND wake_requested_at > %s"
    )
    label = "id::text || CASE WHEN task THEN ' task' ELSE '' END"
    sql = f"(SELECT count(pg_notify(%s, {label})) FROM ({woken}) AS woken)"  # noqa: S608
    return sql, [CHANNEL, list(pks), now]


def hold(queue_pk: int, until: datetime) -> bool:
    """A worker keeps an idle connection of this queue open until ``until``: wake-ups of the
    queue publish no task meanwhile (they notify it, on PostgreSQL). False when the queue was
    frozen meanwhile (or is gone): nothing is held, its mail stays."""
    held = LinkQueue.objects.filter(pk=queue_pk, frozen=False).update(wake_requested_at=until)
    return held > 0


def unhold(queue_pk: int, until: datetime) -> None:
    """The idle connection that held the queue until ``until`` closes: wake-ups publish tasks
    again (unless a wake-up replaced the mark meanwhile)."""
    LinkQueue.objects.filter(pk=queue_pk, wake_requested_at=until).update(wake_requested_at=None)


def _flip(pks: Sequence[int], now: datetime, *, every: bool) -> list[int]:
    """One statement (PostgreSQL, SQLite 3.35+): the flags this call set, never a holder's
    (on PostgreSQL it also notifies the holders, and the flags set, on ``CHANNEL``)."""
    table = connection.ops.quote_name(LinkQueue._meta.db_table)
    marks = ", ".join(["%s"] * len(pks))
    free = "wake_requested_at IS NULL OR wake_requested_at <= %s"
    pending = free if every else "wake_requested_at IS NULL OR wake_requested_at < %s"
    # The table name is the model's and every value a parameter.
    update = f"UPDATE {table} SET wake_requested_at = %s WHERE id IN ({marks}) AND ({pending})"  # noqa: S608
    parameters: list[Any] = [now, *pks, now if every else now - STALE_AFTER]
    if connection.vendor == "postgresql":
        # The holders' rows are only read: no row lock, so placements never wait on each other.
        sql = (
            f"WITH flipped AS ({update} RETURNING id), "  # noqa: S608
            f"held AS (SELECT id FROM {table} WHERE id IN ({marks}) AND wake_requested_at > %s) "
            "SELECT id, task, pg_notify(%s, id::text || CASE WHEN task THEN ' task' ELSE '' END)"
            " FROM (SELECT id, true AS task FROM flipped"
            " UNION ALL SELECT id, false AS task FROM held) AS woken"
        )
        parameters += [*pks, now, CHANNEL]
    else:
        sql = f"{update} RETURNING id, 1"
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        return sorted(row[0] for row in cursor.fetchall() if row[1])


def _publish(pks: Sequence[int]) -> None:
    publisher = _publisher
    failed = list(pks) if publisher is None else list(publisher(pks))
    if failed:
        # Not pending after all: the next sweep (or message) may wake them again.
        LinkQueue.objects.filter(pk__in=failed).update(wake_requested_at=None)
