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


def started(queue_pk: int) -> None:
    """A deliver task of this queue starts: mail committed from now on needs a new wake-up."""
    LinkQueue.objects.filter(pk=queue_pk, wake_requested_at__isnull=False).update(
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


def _flip(pks: Sequence[int], now: datetime, *, every: bool) -> list[int]:
    """One UPDATE ... RETURNING (PostgreSQL, SQLite 3.35+): the flags this call set."""
    table = connection.ops.quote_name(LinkQueue._meta.db_table)
    marks = ", ".join(["%s"] * len(pks))
    pending = "" if every else "AND (wake_requested_at IS NULL OR wake_requested_at < %s) "
    # The table name is the model's and every value a parameter.
    sql = (
        f"UPDATE {table} SET wake_requested_at = %s WHERE id IN ({marks}) "  # noqa: S608
        f"{pending}RETURNING id"
    )
    parameters: list[Any] = [now, *pks] if every else [now, *pks, now - STALE_AFTER]
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        return sorted(row[0] for row in cursor.fetchall())


def _publish(pks: Sequence[int]) -> None:
    publisher = _publisher
    failed = list(pks) if publisher is None else list(publisher(pks))
    if failed:
        # Not pending after all: the next sweep (or message) may wake them again.
        LinkQueue.objects.filter(pk__in=failed).update(wake_requested_at=None)
