"""The organization of the delivery engine tests: one running server with a virtual server
(the relay's intake world), connectors to loopback sinks, messages accepted through intake,
and a clock the tests hold (``now`` is passed to every engine call)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import close_old_connections, connection
from django.utils import timezone

from connectors.models import Connector
from relay.delivery.engine import deliver_queue
from relay.intake import accept
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from tests.relay.harness import free_port
from tests.relay.test_intake import World, envelope, make_connector, make_world
from tests.threads import TestThread, finish_all

WORKER = "worker-a/100"
OTHER = "worker-b/200"
LOCAL_SENDER = "alice@smtpadmin.test"
BODY = (
    b"From: Alice <alice@smtpadmin.test>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Figures\r\n"
    b"\r\n"
    b"The figures are in.\r\n"
)


@dataclass
class Outbound:
    world: World

    @property
    def vs(self) -> Any:
        return self.world.vs

    def configure(self, **fields: Any) -> None:
        """Change the virtual server (its Delivery tab, say)."""
        for name, value in fields.items():
            setattr(self.vs, name, value)
        self.vs.save()

    def connector(
        self, name: str, spaces: list[tuple[str, int]], smart_hosts: str = "", **fields: Any
    ) -> Connector:
        if smart_hosts:
            fields.update(use_dns=False, smart_hosts=smart_hosts)
        return make_connector(name, spaces, [self.vs], **fields)

    def send(
        self,
        recipients: list[str],
        *,
        sender: str = LOCAL_SENDER,
        content: bytes = BODY,
    ) -> Message:
        accepted = accept(envelope(self.vs, recipients, sender=sender, content=content))
        return Message.objects.get(pk=accepted.message_pk)


def queue_of(message: Message, address: str | None = None) -> LinkQueue:
    """The queue that holds ``address`` (the only recipient, by default) of ``message``."""
    recipients = message.recipients.select_related("entry__queue")
    recipient = recipients.get(address=address) if address else recipients.get()
    assert recipient.entry is not None
    return recipient.entry.queue


def entry_of(message: Message, queue: LinkQueue) -> QueueEntry:
    return QueueEntry.objects.get(message=message, queue=queue)


def recipient(message: Message, address: str | None = None) -> Recipient:
    return message.recipients.get(address=address) if address else message.recipients.get()


def deliver(queue: LinkQueue, now: datetime, worker: str = WORKER) -> str:
    return deliver_queue(queue.pk, worker, now=now)


def deliver_all(
    queue: LinkQueue, now: datetime, worker: str = WORKER, limit: int = 50
) -> list[str]:
    """Connections until the queue has nothing due at ``now``."""
    results = []
    for _ in range(limit):
        result = deliver(queue, now, worker)
        results.append(result)
        if result == "nothing":
            return results
    raise AssertionError(f"still due work after {limit} connections: {results}")


def deliver_in_parallel(
    queue: LinkQueue, workers: int, now: datetime, *, timeout: float, rounds: int = 200
) -> list[str]:
    """``workers`` threads (each with its own database connection, as Celery workers have)
    deliver ``queue`` until each finds nothing; what every call returned."""
    results: list[str] = []

    def work(name: str) -> None:
        try:
            for _ in range(rounds):
                result = deliver_queue(queue.pk, name, now=now)
                results.append(result)
                if result == "nothing":
                    return
        finally:
            close_old_connections()
            connection.close()

    threads = [TestThread(work, f"worker-{n}/1") for n in range(workers)]
    for thread in threads:
        thread.start()
    finish_all(threads, timeout)
    return results


def dsns_for(address: str) -> list[Message]:
    """System messages (DSNs) queued for ``address``."""
    return list(
        Message.objects.filter(system=True, sender="", recipients__address=address).order_by("pk")
    )


def events(message: Message, kind: str) -> list[TrackingEvent]:
    return list(TrackingEvent.objects.filter(queue_id=message.queue_id, kind=kind).order_by("pk"))


def dead_smart_host() -> str:
    """A loopback port nobody listens on: connections are refused."""
    return f"[127.0.0.1]:{free_port()}"


def later(**delta: float) -> datetime:
    from datetime import timedelta

    return timezone.now() + timedelta(**delta)


@pytest.fixture
def outbound(tmp_path: Path) -> Outbound:
    return Outbound(make_world(tmp_path))
