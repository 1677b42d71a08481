"""The relay answers 250 once the message is committed, and only then publishes the delivery
wake-up of its link queue: no client waits for the broker. A wake-up the process never got
to publish (it died right after the 250) loses nothing: the message is in the database and
the sweeper asks for its queue."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from relay import tasks
from relay.models import LinkQueue, QueueEntry
from relay.queue import dispatch
from relay.smtp import runtime
from tests.relay.harness import RelayThread, connect_when_listening, smtp, wait_for
from tests.relay.world import World, message

Relay = Callable[..., RelayThread]
REMOTE = "friend@elsewhere.test"


class Broker:
    """A publisher that records the queues it is asked to wake, and can be held."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.asked = threading.Event()
        self.published: list[list[int]] = []

    def __call__(self, pks: Any) -> list[int]:
        self.asked.set()
        self.release.wait(30)
        self.published.append(list(pks))
        return []


@pytest.fixture
def broker(settings: Any) -> Iterator[Broker]:
    settings.SMTPADMIN_DELIVERY_ENQUEUE = True
    broker = Broker()
    dispatch.register_publisher(broker)
    try:
        yield broker
    finally:
        broker.release.set()
        dispatch.register_publisher(tasks.enqueue_queues)


def send_remote(port: int) -> int:
    with smtp(port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("sender@outside.test")
        client.rcpt(REMOTE)
        code, _ = client.data(message())
    return code


def test_the_250_does_not_wait_for_the_wake_up(world: World, relay: Relay, broker: Broker) -> None:
    world.configure(relay_list=["127.0.0.0/24"])
    relay(world.server)
    connect_when_listening(world.port)
    broker.release.clear()  # the broker hangs

    assert send_remote(world.port) == 250

    wait_for(broker.asked.is_set, timeout=10)  # published after the reply, not instead of it
    assert broker.published == []
    broker.release.set()
    queue = LinkQueue.objects.get(key="dns:elsewhere.test")
    wait_for(lambda: broker.published == [[queue.pk]], timeout=10)


def test_a_wake_up_lost_after_the_250_is_found_by_the_sweeper(
    world: World, relay: Relay, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.configure(relay_list=["127.0.0.0/24"])
    # The process dies between the 250 and the publish: nothing is published.
    monkeypatch.setattr(runtime, "_publish", lambda pks: None)
    relay(world.server)
    connect_when_listening(world.port)

    assert send_remote(world.port) == 250

    entry = QueueEntry.objects.get()
    assert entry.state == QueueEntry.State.READY
    assert broker.published == []
    # Its queue's flag says a task is pending; the sweep asks for it all the same.
    assert LinkQueue.objects.get(pk=entry.queue_id).wake_requested_at is not None
    assert tasks.sweep.apply().get() == 1
    assert broker.published == [[entry.queue_id]]
