"""Mail waiting in queues, for the Queue Viewer, Find Messages and Tracking Center tests:
messages accepted through intake exactly as the relay accepts them, an "Internet" connector
that queues them per destination domain, and helpers that move entries the way delivery does
(a failure, a live lease, a delivery) without a network."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from connectors.models import Connector
from relay.intake import accept
from relay.models import LinkQueue, Message, QueueEntry, Recipient
from tests.conftest import client_for
from tests.relay.test_intake import World, envelope, make_connector, make_world

WORKER = "worker-a/100"
REMOTE_SENDER = "sender@outside.test"
LOCAL_SENDER = "alice@smtpadmin.test"
_serial = itertools.count(1)


@dataclass
class Queues:
    world: World
    internet: Connector

    def send(
        self,
        recipients: list[str],
        *,
        sender: str = REMOTE_SENDER,
        subject: str = "Quarterly report",
        body: str = "Numbers attached.",
        message_id: str = "",
        received_at: datetime | None = None,
    ) -> Message:
        """A message accepted through intake (and, with ``received_at``, made older)."""
        message_id = message_id or f"<report.{next(_serial)}@outside.test>"
        content = (
            f"From: Sender <{sender or 'mailer-daemon@outside.test'}>\r\n"
            f"To: {', '.join(recipients)}\r\n"
            f"Subject: {subject}\r\n"
            f"Message-ID: {message_id}\r\n"
            "\r\n"
            f"{body}\r\n"
        ).encode()
        accepted = accept(envelope(self.world.vs, recipients, sender=sender, content=content))
        if received_at is not None:
            Message.objects.filter(pk=accepted.message_pk).update(received_at=received_at)
        return Message.objects.get(pk=accepted.message_pk)


def make_queues(tmp_path: Path) -> Queues:
    world = make_world(tmp_path)
    internet = make_connector("Internet", [("*", 1)], [world.vs])
    return Queues(world=world, internet=internet)


def queue_named(name: str) -> LinkQueue:
    return LinkQueue.objects.get(name=name)


def entry(message: Message, queue_name: str | None = None) -> QueueEntry:
    entries = QueueEntry.objects.filter(message=message)
    if queue_name is not None:
        entries = entries.filter(queue__name=queue_name)
    return entries.get()


def fail(
    item: QueueEntry,
    response: str = "451 4.7.1 Greylisted, try again later",
    *,
    minutes: int = 10,
    now: datetime | None = None,
) -> QueueEntry:
    """What delivery records after a temporary failure: Retry, the next attempt later."""
    now = now or timezone.now()
    QueueEntry.objects.filter(pk=item.pk).update(
        state=QueueEntry.State.RETRY,
        attempts=item.attempts + 1,
        next_attempt_at=now + timedelta(minutes=minutes),
        last_attempt_at=now,
        last_response=response,
    )
    item.recipients.update(state=Recipient.State.DEFERRED, last_response=response)
    item.refresh_from_db()
    return item


def lease(item: QueueEntry, worker: str = WORKER, seconds: int = 300) -> QueueEntry:
    """A worker holds the entry (Active)."""
    QueueEntry.objects.filter(pk=item.pk).update(
        lease_owner=worker, lease_until=timezone.now() + timedelta(seconds=seconds)
    )
    item.refresh_from_db()
    return item


def deliver(item: QueueEntry, state: str = Recipient.State.DELIVERED) -> None:
    """What delivery records when every recipient of the entry is done."""
    now = timezone.now()
    item.recipients.update(state=state, completed_at=now, last_response="250 2.0.0 Ok")
    QueueEntry.objects.filter(pk=item.pk).update(state=QueueEntry.State.DONE, completed_at=now)


def logged_in(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def html_of(response: Any) -> str:
    return str(response.content.decode())


# --- fixtures shared by the Queue Viewer, message and tracking tests ---------------------


@pytest.fixture
def queues(tmp_path: Path) -> Queues:
    return make_queues(tmp_path)


@pytest.fixture
def admin_api(administrator: User) -> APIClient:
    return client_for(administrator)


@pytest.fixture
def viewer_api(view_only: User) -> APIClient:
    return client_for(view_only)
