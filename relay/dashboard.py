"""What the dashboard shows: mail flow per minute from the counters the relay and the workers
keep (``smtpadmin.counters``, read from ``MinuteCount``), queue depth per minute from a gauge
that beat samples here, and the current figures read live with small, bounded queries (the
largest link queues, the oldest message waiting, the servers and their virtual servers).

Nothing here scans the message table: the per-minute figures are one indexed range read of
``MinuteCount`` per chart, the live ones read the open entries' partial indexes.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db.models import Count, Min, Q, QuerySet, Sum
from django.utils import timezone

from relay.admin.viewer import (
    OPEN_ENTRY_STATES,
    QueueState,
    last_error,
    outbound_disabled,
    queue_list,
    queue_state,
)
from relay.console.common import STATE_BADGES
from relay.metrics import DELIVERIES, RECEIVED
from relay.queue.models import QueueEntry
from servers.console.common import server_status, virtual_server_status
from servers.models import Server, VirtualServer
from smtpadmin.counters import labels_text
from smtpadmin.models import MinuteCount

QUEUE_DEPTH = "queue_depth"  # gauge: open queue entries at the last sample of each minute
TOP_QUEUES = 10
SERVERS_SHOWN = 20  # servers listed; the rest are behind a link to the Servers container
VIRTUAL_SERVERS_SHOWN = 50  # virtual servers of the servers listed


class Window(enum.IntEnum):
    """The chart's span in hours (the selector)."""

    HOUR = 1
    SIX_HOURS = 6
    DAY = 24

    @property
    def minutes(self) -> int:
        return self.value * 60

    @property
    def label(self) -> str:
        return "1 hour" if self is Window.HOUR else f"{self.value} hours"

    @classmethod
    def parse(cls, text: object) -> Window:
        """The window asked for in the query string; anything else is the hour."""
        try:
            return cls(int(str(text)))
        except ValueError:
            return cls.HOUR


class Flow(enum.StrEnum):
    """The lines of the mail flow chart; a tracking event kind of the same name finds them."""

    RECEIVED = "received"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"

    @property
    def counter(self) -> tuple[str, str]:
        """(counter name, a fragment of its stored labels every row of this line has)."""
        if self is Flow.RECEIVED:
            return RECEIVED, ""
        # The labels are JSON (``labels_text``): a quote inside a value is escaped, so this
        # fragment only ever matches the result label itself.
        return DELIVERIES, labels_text({"result": self.value})[1:-1]


@dataclass(frozen=True)
class Series:
    """One line of a chart: a value per minute, oldest first (None: the gauge was not sampled
    that minute)."""

    key: str
    label: str
    points: tuple[int | None, ...]

    @property
    def total(self) -> int:
        return sum(p for p in self.points if p is not None)

    @property
    def peak(self) -> int:
        return max((p for p in self.points if p is not None), default=0)

    @property
    def last(self) -> int | None:
        return next((p for p in reversed(self.points) if p is not None), None)


def current_minute(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // 60)


def minutes_of(window: Window, now: float | None = None) -> range:
    """The minutes a window shows: the last ``window.minutes`` of them, this one included."""
    last = current_minute(now)
    return range(last - window.minutes + 1, last + 1)


def filled(values: dict[int, int], minutes: range, empty: int | None = 0) -> tuple[Any, ...]:
    """A value per minute of ``minutes``; ``empty`` where none was written."""
    return tuple(values.get(minute, empty) for minute in minutes)


def per_minute(name: str, minutes: range, parts: Mapping[str, str]) -> dict[str, dict[int, int]]:
    """For each part (key -> a fragment of the stored labels, "" = every label set), the sum
    of counter ``name`` per minute over the label sets that contain the fragment: one read of
    the minutes through the (name, minute) index, however many parts."""
    rows = MinuteCount.objects.filter(name=name, minute__gte=minutes.start, minute__lt=minutes.stop)
    sums = {
        key: Sum("value", filter=Q(labels__contains=fragment)) if fragment else Sum("value")
        for key, fragment in parts.items()
    }
    found: dict[str, dict[int, int]] = {key: {} for key in parts}
    for row in rows.order_by().values("minute").annotate(**sums):
        sums_of: Mapping[str, Any] = row
        for key in parts:
            if sums_of[key] is not None:
                found[key][sums_of["minute"]] = sums_of[key]
    return found


def flow_series(window: Window, now: float | None = None) -> list[Series]:
    minutes = minutes_of(window, now)
    by_counter: dict[str, dict[str, str]] = {}
    for flow in Flow:
        name, fragment = flow.counter
        by_counter.setdefault(name, {})[flow.value] = fragment
    values: dict[str, dict[int, int]] = {}
    for name, parts in by_counter.items():
        values.update(per_minute(name, minutes, parts))
    return [
        Series(flow.value, flow.value.capitalize(), filled(values[flow.value], minutes))
        for flow in Flow
    ]


def depth_series(window: Window, now: float | None = None) -> Series:
    """Queue depth per minute; a minute beat did not sample stays a gap, never a false 0."""
    minutes = minutes_of(window, now)
    values = per_minute(QUEUE_DEPTH, minutes, {QUEUE_DEPTH: ""})[QUEUE_DEPTH]
    return Series(QUEUE_DEPTH, "Queue depth", filled(values, minutes, empty=None))


# --- the gauge beat samples -------------------------------------------------------------------


def open_entries() -> QuerySet[QueueEntry]:
    return QueueEntry.objects.filter(state__in=OPEN_ENTRY_STATES)  # the open-entry indexes


def record_queue_depth(now: float | None = None) -> int:
    """Write the number of open queue entries as this minute's queue depth (set, not added:
    the last sample of a minute is its value). Returns that number."""
    depth = open_entries().count()
    MinuteCount.objects.update_or_create(
        minute=current_minute(now), name=QUEUE_DEPTH, labels="", defaults={"value": depth}
    )
    return depth


@shared_task(ignore_result=True)
def sample_queue_depth() -> int:
    return record_queue_depth()


# --- the figures read live --------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    queue_id: int
    name: str
    waiting: int
    state: str
    badge: str
    last_error: str
    oldest: datetime | None


def top_destinations(limit: int = TOP_QUEUES, now: datetime | None = None) -> list[Destination]:
    """The link queues with the most open entries, the largest first (ties by name), with
    their state and last error as Queue Viewer shows them."""
    now = now or timezone.now()
    counts = list(
        open_entries()
        .order_by()
        .values("queue")
        .annotate(n=Count("pk"))
        .order_by("-n", "queue")[:limit]
    )
    queues = {q.pk: q for q in queue_list(now).filter(pk__in=[row["queue"] for row in counts])}
    disabled = outbound_disabled()
    found = []
    for row in counts:
        queue = queues.get(row["queue"])
        if queue is None:
            continue
        state = queue_state(queue, now, disabled=disabled)
        found.append(
            Destination(
                queue_id=queue.pk,
                name=queue.name,
                waiting=row["n"],
                state=QueueState(state).label,
                badge=STATE_BADGES.get(state, ""),
                last_error=last_error(queue),
                oldest=queue.oldest_message_at,  # type: ignore[attr-defined]
            )
        )
    return sorted(found, key=lambda d: (-d.waiting, d.name))


@dataclass(frozen=True)
class Oldest:
    message_pk: int
    queue_id: str
    sender: str
    received_at: datetime
    age: timedelta
    queue_pk: int
    queue_name: str


def oldest_waiting(now: datetime | None = None) -> Oldest | None:
    """The message that has waited longest in a queue (queue ids sort by arrival, so the open
    entry of the lowest message id)."""
    now = now or timezone.now()
    first = open_entries().aggregate(m=Min("message"))["m"]
    if first is None:
        return None
    entry = (
        open_entries()
        .filter(message=first)
        .select_related("message", "queue")
        .defer("message__content")
        .order_by("queue")
        .first()
    )
    if entry is None:  # delivered between the two reads
        return None
    message = entry.message
    return Oldest(
        message_pk=message.pk,
        queue_id=message.queue_id,
        sender=message.sender,
        received_at=message.received_at,
        age=now - message.received_at,
        queue_pk=entry.queue_id,
        queue_name=entry.queue.name,
    )


@dataclass(frozen=True)
class VirtualServerState:
    pk: int
    name: str
    port: int
    badge: str
    text: str


@dataclass(frozen=True)
class ServerState:
    pk: int
    name: str
    badge: str
    text: str
    last_seen: datetime | None
    heartbeat_age: timedelta | None
    virtual_servers: tuple[VirtualServerState, ...]


def server_states(
    limit: int = SERVERS_SHOWN, now: datetime | None = None
) -> tuple[list[ServerState], bool]:
    """The first ``limit`` servers by name with their heartbeat state (as the server sheets
    show it) and their virtual servers' states; and whether there are more servers."""
    now = now or timezone.now()
    servers = list(Server.objects.order_by("name", "pk")[: limit + 1])
    more = len(servers) > limit
    servers = servers[:limit]
    by_server: dict[int, list[VirtualServerState]] = {}
    virtual = VirtualServer.objects.filter(server__in=servers).order_by("server", "port", "pk")
    for vs in virtual[:VIRTUAL_SERVERS_SHOWN]:
        badge, text = virtual_server_status(vs)
        by_server.setdefault(vs.server_id, []).append(
            VirtualServerState(vs.pk, vs.name, vs.port, badge, text)
        )
    states = []
    for server in servers:
        badge, text = server_status(server)
        states.append(
            ServerState(
                pk=server.pk,
                name=server.name,
                badge=badge,
                text=text,
                last_seen=server.last_seen,
                heartbeat_age=now - server.last_seen if server.last_seen else None,
                virtual_servers=tuple(by_server.get(server.pk, ())),
            )
        )
    return states, more


def refresh_seconds() -> int:
    return int(getattr(settings, "SMTPADMIN_DASHBOARD_REFRESH_SECONDS", 30))


# --- the charts as SVG ------------------------------------------------------------------------

WIDTH = 600  # the viewBox; the SVG is stretched to the pane's width
HEIGHT = 160


def scale_top(peak: int) -> int:
    """A round value at or above ``peak`` for the chart's top line (1, 2, 5 x 10^n)."""
    top = 1
    while True:
        for factor in (1, 2, 5):
            if top * factor >= peak:
                return top * factor
        top *= 10


def path_of(points: Sequence[int | None], top: int) -> str:
    """An SVG path through the points, left to right over WIDTH, 0 at the bottom and ``top``
    at the top; a gap (None) lifts the pen."""
    count = len(points)
    if not count:
        return ""
    step = WIDTH / max(count - 1, 1)
    parts: list[str] = []
    pen_down = False
    for index, value in enumerate(points):
        if value is None:
            pen_down = False
            continue
        x = round(index * step, 1)
        y = round(HEIGHT - value * HEIGHT / top, 1)
        parts.append(f"{'L' if pen_down else 'M'}{x:g} {y:g}")
        pen_down = True
    return " ".join(parts)


@dataclass(frozen=True)
class Chart:
    title: str
    lines: tuple[tuple[Series, str], ...]  # (series, its SVG path)
    top: int
    width: int = WIDTH
    height: int = HEIGHT


def chart(title: str, series: Iterable[Series]) -> Chart:
    chosen = list(series)
    top = scale_top(max((s.peak for s in chosen), default=0))
    return Chart(title, tuple((s, path_of(s.points, top)) for s in chosen), top)
