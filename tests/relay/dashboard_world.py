"""Figures for the dashboard tests: counter rows written the way the counters' writer writes
them (``MinuteCount``, one row per minute, name and labels), and servers with a heartbeat of a
chosen age."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

import pytest
from django.utils import timezone

from relay.dashboard import current_minute
from servers.models import RoutingGroup, Server, VirtualServer
from smtpadmin.counters import labels_text
from smtpadmin.models import MinuteCount

WriteCounts = Callable[..., None]


def middle_of_this_minute() -> float:
    """Now, moved to the middle of its minute: a test reading the figures "at" this moment
    never sees them shift by a minute."""
    return (time.time() // 60) * 60 + 30.0


def write_counts(
    name: str,
    by_minutes_ago: Mapping[int, int],
    labels: Mapping[str, object] | None = None,
    now: float | None = None,
) -> None:
    """``{minutes ago: value}`` rows of counter ``name`` (added to any already there), the
    minutes counted back from ``now`` (default: this minute)."""
    last = current_minute(now)
    for ago, value in by_minutes_ago.items():
        row, _ = MinuteCount.objects.get_or_create(
            minute=last - ago, name=name, labels=labels_text(labels)
        )
        MinuteCount.objects.filter(pk=row.pk).update(value=row.value + value)


@pytest.fixture
def moment() -> float:
    """The test's "now" for the figures (the middle of the minute it started in)."""
    return middle_of_this_minute()


@pytest.fixture
def counts(db: object, moment: float) -> WriteCounts:
    """``counts(name, {minutes ago: value}, labels)``: counter rows before ``moment``."""
    return functools.partial(write_counts, now=moment)


def make_server(name: str, seen_seconds_ago: float | None) -> Server:
    seen = (
        None if seen_seconds_ago is None else timezone.now() - timedelta(seconds=seen_seconds_ago)
    )
    return Server.objects.create(name=name, routing_group=RoutingGroup.first(), last_seen=seen)


@pytest.fixture
def server_with_heartbeat(db: object) -> Callable[..., Server]:
    """``server_with_heartbeat("mx1", 5)``: a server last heard of 5 s ago (None: never)."""
    return make_server


def make_virtual_server(
    server: Server, port: int, state: str, desired: str = "running"
) -> VirtualServer:
    vs = VirtualServer.objects.create(server=server, port=port, desired_state=desired)
    VirtualServer.objects.filter(pk=vs.pk).update(state=state)
    vs.refresh_from_db()
    return vs
