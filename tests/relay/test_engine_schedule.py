"""A connector's connection schedule: outside its window nothing is sent and the queue is
Scheduled; oversize messages follow the oversize schedule."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest
from django.utils import timezone

from connectors.models import Connector
from relay.delivery.engine import sweep
from relay.delivery.schedule import grid_slot, schedule_open
from tests.relay.engine_world import Outbound, deliver, entry_of, queue_of, recipient
from tests.sinks import SinkFactory

# Monday 08:00-09:00 every day of the week (quarter hours 32-35).
EIGHT_TO_NINE_DAILY = ("0" * 32 + "1" * 4 + "0" * 60) * 7
MONDAY = datetime(2030, 1, 7)  # a Monday


def at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return day.replace(hour=hour, minute=minute)


# --- the schedule, pure ----------------------------------------------------------------


def test_the_grid_starts_on_monday_at_midnight_in_quarter_hours() -> None:
    assert grid_slot(MONDAY) == 0
    assert grid_slot(at(MONDAY, 8, 14)) == 32
    assert grid_slot(at(MONDAY, 8, 15)) == 33
    assert grid_slot(at(MONDAY + timedelta(days=6), 23, 59)) == 671


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        (at(MONDAY, 7, 59), False),
        (at(MONDAY, 8, 0), True),
        (at(MONDAY, 8, 59), True),
        (at(MONDAY, 9, 0), False),
        (at(MONDAY + timedelta(days=3), 8, 30), True),
    ],
)
def test_a_custom_grid_opens_in_its_quarter_hours(when: datetime, open_: bool) -> None:
    assert schedule_open("custom", EIGHT_TO_NINE_DAILY, None, when) is open_


def test_always_and_never_mean_what_they_say() -> None:
    assert schedule_open("always", "", None, MONDAY)
    assert not schedule_open("never", "", None, MONDAY)


@pytest.mark.parametrize(
    ("mode", "when", "open_"),
    [
        ("every_1h", at(MONDAY, 5, 0), True),
        ("every_1h", at(MONDAY, 5, 14), True),
        ("every_1h", at(MONDAY, 5, 15), False),
        ("every_2h", at(MONDAY, 4, 10), True),
        ("every_2h", at(MONDAY, 5, 10), False),
        ("every_4h", at(MONDAY, 8, 0), True),
        ("every_4h", at(MONDAY, 6, 0), False),
    ],
)
def test_the_every_n_hours_modes_open_for_the_first_quarter_hour(
    mode: str, when: datetime, open_: bool
) -> None:
    assert schedule_open(mode, "", None, when) is open_


def test_daily_opens_for_a_quarter_hour_from_its_time_even_across_midnight() -> None:
    assert schedule_open("daily", "", time(23, 0), at(MONDAY, 23, 10))
    assert not schedule_open("daily", "", time(23, 0), at(MONDAY, 23, 15))
    assert schedule_open("daily", "", time(23, 50), at(MONDAY, 0, 2))
    assert not schedule_open("daily", "", None, at(MONDAY, 23, 10))


def test_an_unreadable_grid_is_closed() -> None:
    assert not schedule_open("custom", "1" * 10, None, MONDAY)


# --- the engine ------------------------------------------------------------------------


def next_monday(hour: int, minute: int) -> datetime:
    now = timezone.localtime()
    days = (7 - now.weekday()) % 7 or 7
    day = (now + timedelta(days=days)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return day


@pytest.mark.django_db
def test_outside_its_window_a_connector_sends_nothing_and_the_sweeper_leaves_it(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    connector = outbound.connector(
        "Nightly",
        [("example.org", 1)],
        mx.smart_host,
        schedule_mode="custom",
        schedule_grid=EIGHT_TO_NINE_DAILY,
    )
    outbound.configure(outbound_expiration_minutes=30 * 24 * 60)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    closed, opened = next_monday(10, 0), next_monday(8, 30)

    assert deliver(queue, closed) == "scheduled"
    assert queue.pk not in sweep(now=closed)
    assert mx.connections == 0
    entry = entry_of(message, queue)
    assert (entry.state, entry.attempts, entry.lease_owner) == ("ready", 0, "")

    assert queue.pk in sweep(now=opened)
    assert deliver(queue, opened) == "sent"
    assert recipient(message).state == "delivered"
    assert connector.pk == queue.connector_id


@pytest.mark.django_db
def test_big_messages_follow_the_oversize_schedule(outbound: Outbound, sink: SinkFactory) -> None:
    mx = sink()
    outbound.connector(
        "Partner",
        [("example.org", 1)],
        mx.smart_host,
        oversize_schedule_enabled=True,
        oversize_threshold_kb=1,
        oversize_schedule_mode="never",
    )
    big = outbound.send(
        ["big@example.org"], content=b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 30
    )
    small = outbound.send(["small@example.org"])
    queue = queue_of(small)
    now = timezone.now()

    assert deliver(queue, now) == "sent"
    assert [m.rcpt_tos for m in mx.messages] == [["small@example.org"]]
    assert deliver(queue, now) == "scheduled"
    assert queue.pk not in sweep(now=now)
    assert recipient(big).state == "pending"

    assert queue.connector_id is not None
    Connector.objects.filter(pk=queue.connector_id).update(oversize_schedule_mode="always")
    assert deliver(queue, now) == "sent"
    assert recipient(big).state == "delivered"


@pytest.mark.django_db
def test_a_connector_holding_mail_for_etrn_sends_nothing(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.connector(
        "Remote", [("example.org", 1)], mx.smart_host, queue_for_remote_delivery=True
    )
    message = outbound.send(["bob@example.org"])

    assert deliver(queue_of(message), timezone.now()) == "remote"
    assert queue_of(message).pk not in sweep(now=timezone.now())
    assert mx.connections == 0
