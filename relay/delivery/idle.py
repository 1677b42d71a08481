"""The connection cache of outbound delivery: a connection whose queue has no due mail left
stays open for ``SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS`` (like Postfix's
``smtp_connection_cache_time_limit``), and mail queued to the same link queue meanwhile goes
out on it instead of on a new task and a new connection.

While it waits, the queue carries the holder's mark (``dispatch.hold``): the intake's
wake-ups publish no task for it. On PostgreSQL they notify the holder instead (LISTEN on
``dispatch.CHANNEL``, the notification sent when the placing transaction commits); on SQLite
the holder looks for due mail itself, at growing intervals. A wake-up that published a task
for another queue ends the wait at once: that task needs this worker process more than an
idle connection does. When the time is up the mark goes, and one more claim takes what was
committed while it went; then the connection says QUIT.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from relay.queue import dispatch

log = logging.getLogger("relay.delivery")

DEFAULT_CACHE_SECONDS = 2.0
# SQLite: the first look after this long, each next one after twice as long, up to the most.
FIRST_LOOK = 0.005
MOST_BETWEEN_LOOKS = 0.1

Found = TypeVar("Found")


def cache_seconds() -> float:
    """``SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS``: how long a drained connection waits
    for more mail of its queue before QUIT (0: it says QUIT at once)."""
    return max(
        0.0,
        float(
            getattr(settings, "SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS", DEFAULT_CACHE_SECONDS)
        ),
    )


class IdleWait:
    """The waits of one connection of one queue; ``close`` when the connection ends."""

    def __init__(self, queue_pk: int, seconds: float) -> None:
        self.queue_pk = queue_pk
        self.seconds = seconds
        self.mark: datetime | None = None  # the hold on the queue, while there is one
        self.listening = False
        self.other = False  # a task was published for another queue: do not wait again

    def wait(self, claim: Callable[[], list[Found]]) -> list[Found]:
        """When the queue has nothing due: wait for mail of the queue up to the cache time,
        claiming whenever it may have come. Returns what was claimed ([]: the time is up,
        or another queue needs this process)."""
        if self.seconds <= 0:
            return []
        found: list[Found] = []
        now = timezone.now()
        if self.mark is None or (self.mark - now).total_seconds() < self.seconds / 2:
            # A new (or half spent) hold. Mail committed before it went up asked for a task,
            # not for this connection: look first. While a hold lasts, every wake-up of the
            # queue is a notification, kept until read: nothing to look for before one.
            self._listen()
            mark = now + timedelta(seconds=self.seconds)
            if not dispatch.hold(self.queue_pk, mark):
                self._release()
                return []  # the queue was frozen while the connection was open
            self.mark = mark
            found = claim()
        deadline = time.monotonic() + (self.mark - now).total_seconds()
        between = FIRST_LOOK
        while not found and not self.other:
            if self.listening:
                woken = _notified(self.queue_pk, deadline)
            else:
                woken = _looked(self.queue_pk, deadline, between)
                between = min(between * 2, MOST_BETWEEN_LOOKS)
            if woken is Woken.OTHER:
                self.other = True  # another queue needs this process
            if woken is not Woken.MINE:
                break
            found = claim()
        if found:
            return found
        self._release()
        # Mail whose wake-up saw the hold and committed after the last claim: take it now.
        return claim()

    def quiet(self) -> bool:
        """PostgreSQL, while the hold lasts: whether no wake-up of the queue came since the
        last look, so a claim now would find nothing the last one did not (it left the queue
        empty). Never waits."""
        if not self.listening or self.mark is None or self.mark <= timezone.now():
            return False
        woken = _notified(self.queue_pk, time.monotonic())
        if woken is Woken.OTHER:
            self.other = True
        return woken is not Woken.MINE

    def close(self) -> None:
        """The connection ends: the mark goes, and this database connection stops listening.
        Never raises: when the database went away meanwhile, a mark left behind runs out by
        itself (the sweeper wakes the queue meanwhile), and so does the LISTEN, with the
        database connection."""
        try:
            self._release()
            if self.listening:
                self.listening = False
                with connection.cursor() as cursor:
                    cursor.execute(f"UNLISTEN {dispatch.CHANNEL}")
        except DatabaseError:
            log.warning("Could not release the idle connection's hold", exc_info=True)

    def _release(self) -> None:
        if self.mark is not None:
            mark, self.mark = self.mark, None
            dispatch.unhold(self.queue_pk, mark)

    def _listen(self) -> None:
        if self.listening or connection.vendor != "postgresql" or connection.in_atomic_block:
            return
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {dispatch.CHANNEL}")
        self.listening = True
        _drain()  # notifications from before this wait say nothing now


class Woken(enum.Enum):
    """What a wait ended with."""

    MINE = "mine"  # a wake-up of this queue (on SQLite: time to look again)
    OTHER = "other"  # a task was published for another queue
    TIME_UP = "time up"


def _drain() -> None:
    """Forget the notifications received so far."""
    raw = connection.connection
    assert raw is not None
    for _ in raw.notifies(timeout=0):
        pass


def _notified(queue_pk: int, deadline: float) -> Woken:
    """PostgreSQL: waits until a wake-up of this queue, or of another queue that published a
    task, or the deadline (``time.monotonic``; one look at what came in, even when it is
    past)."""
    raw = connection.connection
    assert raw is not None
    while True:
        mine = other = False
        left = max(0.0, deadline - time.monotonic())
        # Everything that came in one packet, after waiting for the first.
        for notify in raw.notifies(timeout=left, stop_after=1):
            pk, _, task = notify.payload.partition(" ")
            if pk == str(queue_pk):
                mine = True
            elif task:
                other = True
        if mine:
            return Woken.MINE
        if other:
            return Woken.OTHER
        if time.monotonic() >= deadline:
            return Woken.TIME_UP


def _looked(queue_pk: int, deadline: float, between: float) -> Woken:
    """SQLite: sleeps ``between`` (not past the deadline); then whether to look again."""
    left = deadline - time.monotonic()
    if left <= 0:
        return Woken.TIME_UP
    time.sleep(min(between, left))
    return Woken.OTHER if _other_waiting(queue_pk) else Woken.MINE


def _other_waiting(queue_pk: int) -> bool:
    """SQLite: whether a task was published for another queue and has not started."""
    from relay.queue.models import LinkQueue

    now = timezone.now()
    return (
        LinkQueue.objects.filter(
            wake_requested_at__lte=now, wake_requested_at__gte=now - dispatch.STALE_AFTER
        )
        .exclude(pk=queue_pk)
        .exists()
    )
