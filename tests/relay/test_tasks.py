"""relay.tasks: the Celery tasks run eagerly here (``task.apply``); the real worker and beat
processes are the end-to-end tests' business."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from relay import tasks
from relay.models import QueueEntry
from smtpadmin.celery import app
from tests.relay.engine_world import Outbound, queue_of, recipient
from tests.relay.harness import free_port
from tests.sinks import SinkFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager(settings: Any) -> Iterator[None]:
    """Tasks sent with ``apply_async`` run at once in this process instead of on a broker
    (and are sent: the suite's default is to publish none)."""
    settings.SMTPADMIN_DELIVERY_ENQUEUE = True
    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = before


def test_the_tasks_carry_the_names_beat_and_the_workers_use() -> None:
    assert tasks.deliver.name == "relay.tasks.deliver"
    assert tasks.sweep.name == "relay.tasks.sweep"
    assert tasks.deliver.acks_late and tasks.sweep.acks_late
    assert tasks.worker_id() == f"{socket.gethostname()}/{os.getpid()}"


def test_deliver_delivers_the_queue_it_is_given(outbound: Outbound, sink: SinkFactory) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    message = outbound.send(["bob@example.org"])

    assert tasks.deliver.apply(args=(queue_of(message).pk,)).get() == "sent"
    assert recipient(message).state == "delivered"


def test_deliver_run_twice_sends_once(outbound: Outbound, sink: SinkFactory) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    queue = queue_of(outbound.send(["bob@example.org"]))

    assert tasks.deliver.apply(args=(queue.pk,)).get() == "sent"
    assert tasks.deliver.apply(args=(queue.pk,)).get() == "nothing"
    assert len(mx.messages) == 1


def test_a_queue_longer_than_one_connection_continues_in_another_task(
    outbound: Outbound, sink: SinkFactory, eager: None
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    outbound.configure(messages_per_connection=2)
    queue = queue_of(outbound.send(["one@example.org"]))
    for name in ("two", "three", "four", "five"):
        outbound.send([f"{name}@example.org"])

    tasks.deliver.apply(args=(queue.pk,)).get()

    assert len(mx.messages) == 5
    assert mx.connections == 3
    assert not QueueEntry.objects.exclude(state="done").exists()


def test_sweep_enqueues_delivery_of_every_queue_with_due_work(
    outbound: Outbound, sink: SinkFactory, eager: None, settings: Any
) -> None:
    first, second = sink(), sink()
    outbound.connector("First", [("first.example", 1)], first.smart_host)
    outbound.connector("Second", [("second.example", 1)], second.smart_host)
    # Queued while nothing was published (no deliver task is pending for either queue).
    settings.SMTPADMIN_DELIVERY_ENQUEUE = False
    one = outbound.send(["bob@first.example"])
    two = outbound.send(["bob@second.example"])
    settings.SMTPADMIN_DELIVERY_ENQUEUE = True

    assert tasks.sweep.apply().get() == 2

    assert recipient(one).state == recipient(two).state == "delivered"
    assert tasks.sweep.apply().get() == 0


def test_intake_enqueues_delivery_once_the_message_is_committed(
    outbound: Outbound,
    sink: SinkFactory,
    eager: None,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        message = outbound.send(["bob@example.org", "bob@smtpadmin.test"])
    # Nothing went out before the commit.
    assert mx.messages == []
    assert len(callbacks) == 1
    callbacks[0]()

    assert recipient(message, "bob@example.org").state == "delivered"
    # Local delivery is the relay worker's, not Celery's.
    assert recipient(message, "bob@smtpadmin.test").state == "pending"


def test_intake_enqueues_nothing_for_local_or_unreachable_mail(
    outbound: Outbound, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        outbound.send(["bob@smtpadmin.test", "bob@partner.test"])
    assert callbacks == []


def test_enqueueing_can_be_switched_off(
    outbound: Outbound, sink: SinkFactory, eager: None, settings: Any
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    message = outbound.send(["bob@example.org"])
    settings.SMTPADMIN_DELIVERY_ENQUEUE = False

    tasks.enqueue_queues([queue_of(message).pk])

    assert mx.connections == 0
    settings.SMTPADMIN_DELIVERY_ENQUEUE = True
    tasks.enqueue_queues([queue_of(message).pk])
    assert recipient(message).state == "delivered"


@pytest.mark.e2e  # a process of its own
def test_a_broker_that_cannot_be_reached_does_not_hold_up_intake(tmp_path: Path) -> None:
    # A process of its own with a broker nobody answers (a loopback port nobody listens on),
    # so this process's Celery app and its connection pools stay as they are.
    script = (
        "import django, time; django.setup()\n"
        "from relay.tasks import enqueue_queues\n"
        "for queues in ([1, 2], [3], [4]):\n"
        "    started = time.monotonic()\n"
        "    enqueue_queues(queues)\n"
        "    print(f'{time.monotonic() - started:.2f}')\n"
    )
    environment = {
        **os.environ,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "SMTPADMIN_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "smtpadmin.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=django_settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    # One failure, then nothing is tried for a while: no second wait, no exception.
    assert done.stderr.count("Could not enqueue delivery") == 1
    assert "Could not enqueue delivery of queue 1" in done.stderr
    first, second, third = (float(line) for line in done.stdout.split())
    assert first < 15
    assert second < 0.5 and third < 0.5
