"""Wake-ups while a worker holds an idle connection of a queue (``dispatch.hold``): mail
placed meanwhile publishes no task, the holder hears of it (a PostgreSQL notification when
the placing transaction commits), and once the hold is released wake-ups publish again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from relay.intake import accept
from relay.models import LinkQueue
from relay.queue import dispatch
from tests.relay.test_intake import World, envelope, make_world


@pytest.fixture
def held_world(tmp_path: Path) -> World:
    return make_world(tmp_path)


@pytest.mark.django_db
def test_mail_to_a_held_queue_publishes_no_task_until_the_hold_is_released(
    held_world: World,
    published: list[list[int]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        accept(envelope(held_world.vs, ["x@one.test"]))
    queue = LinkQueue.objects.get(key="dns:one.test")
    assert published == [[queue.pk]]
    dispatch.started(queue.pk)

    until = timezone.now() + timedelta(seconds=30)
    dispatch.hold(queue.pk, until)
    for n in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            accept(envelope(held_world.vs, [f"y{n}@one.test"]))
    dispatch.started(queue.pk)  # a task that starts meanwhile leaves the hold alone
    with django_capture_on_commit_callbacks(execute=True):
        accept(envelope(held_world.vs, ["z@one.test"]))
    assert published == [[queue.pk]]

    dispatch.unhold(queue.pk, until)
    with django_capture_on_commit_callbacks(execute=True):
        accept(envelope(held_world.vs, ["w@one.test"]))
    assert published == [[queue.pk], [queue.pk]]


@pytest.mark.django_db(transaction=True)
def test_the_holder_is_notified_when_mail_for_its_queue_is_committed(
    held_world: World, published: list[list[int]]
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("notifications are PostgreSQL's (on SQLite the holder looks itself)")
    accept(envelope(held_world.vs, ["x@one.test"]))
    queue = LinkQueue.objects.get(key="dns:one.test")
    dispatch.started(queue.pk)
    dispatch.hold(queue.pk, timezone.now() + timedelta(seconds=30))
    settings_dict = connection.settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"],
        dbname=settings_dict["NAME"],
        autocommit=True,
    ) as listener:
        listener.execute(f"LISTEN {dispatch.CHANNEL}")
        accept(envelope(held_world.vs, ["y@one.test"]))  # the held queue: no task
        accept(envelope(held_world.vs, ["z@two.test"]))  # another queue: a task
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
    two = LinkQueue.objects.get(key="dns:two.test")
    assert sorted(payloads) == sorted([str(queue.pk), f"{two.pk} task"])
    assert published == [[queue.pk], [two.pk]]


@pytest.mark.django_db
def test_a_frozen_queue_is_not_held(held_world: World) -> None:
    accept(envelope(held_world.vs, ["x@one.test"]))
    queue = LinkQueue.objects.get(key="dns:one.test")
    LinkQueue.objects.filter(pk=queue.pk).update(frozen=True)

    assert dispatch.hold(queue.pk, timezone.now() + timedelta(seconds=30)) is False
    assert LinkQueue.objects.get(pk=queue.pk).wake_requested_at is None
