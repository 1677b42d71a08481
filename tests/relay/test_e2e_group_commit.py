"""The relay's writer over real sockets: concurrent sessions share one transaction, each hears
its 250 only once that transaction has committed, one bad message does not fail the others,
and the writer keeps its database connection from one batch to the next."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from relay.models import Message
from relay.queue.place import Draft, Placed, Request
from relay.smtp import runtime
from tests.relay.harness import RelayThread, connect_when_listening, smtp, wait_for
from tests.relay.world import World, message
from tests.threads import TestThread, finish_all

CLIENTS = 5


class HeldWriter:
    """Wraps the writer's batches: the first waits for ``release``. Records each batch's
    size, the commits it made and the database connection it used."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.entered: list[int] = []
        self.batches: list[int] = []
        self.commits: list[int] = []
        self.connections: list[int] = []
        real = runtime._write_batch

        def write(requests: list[Request]) -> list[Placed | Exception]:
            self.entered.append(len(requests))
            self.release.wait(20)
            wrapper = connections["default"]
            commit = wrapper.commit
            counted = [0]

            def counting_commit() -> None:
                commit()
                counted[0] += 1

            wrapper.commit = counting_commit  # type: ignore[method-assign]
            try:
                with CaptureQueriesContext(wrapper) as captured:
                    result = real(requests)
            finally:
                del wrapper.commit
            self.batches.append(len(requests))
            # A statement that writes messages and commits by itself counts as a commit
            # (PostgreSQL: the batch is one statement in autocommit).
            counted[0] += sum(
                1
                for query in captured.captured_queries
                if query["sql"].startswith("WITH") and 'INSERT INTO "relay_message"' in query["sql"]
            )
            self.commits.append(counted[0])
            self.connections.append(id(wrapper.connection))
            return result

        monkeypatch.setattr(runtime, "_write_batch", write)


def waiting(worker: RelayThread) -> int:
    """Messages waiting for the writer (finished by their sessions, not yet in a batch)."""

    def count() -> int:
        assert worker.supervisor is not None
        return len(worker.supervisor.runtime.writer.waiting)

    return worker.call(count)


def send(port: int, subject: str, replies: dict[str, tuple[int, bool]]) -> None:
    """One message; records the reply code and whether the message was in the database
    (seen through another connection) the moment the 250 arrived."""
    try:
        with smtp(port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail("sender@outside.test")
            client.rcpt("alice@smtpadmin.test")
            code, text = client.data(message(subject=subject))
            queue_id = text.decode().rsplit(" ", 1)[-1]
            replies[subject] = (code, Message.objects.filter(queue_id=queue_id).exists())
    finally:
        connections.close_all()


def start(port: int, subjects: list[str], replies: dict[str, tuple[int, bool]]) -> list[TestThread]:
    clients = [TestThread(send, port, subject, replies) for subject in subjects]
    for client in clients:
        client.start()
    return clients


def test_concurrent_sessions_share_one_transaction_and_hear_250_after_its_commit(
    world: World, relay: Callable[..., RelayThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldWriter(monkeypatch)
    worker = relay(world.server)
    connect_when_listening(world.port)
    replies: dict[str, tuple[int, bool]] = {}

    # A first message occupies the writer; the next sessions finish meanwhile.
    clients = start(world.port, ["first"], replies)
    wait_for(lambda: held.entered == [1], timeout=20)
    clients += start(world.port, [f"n{n}" for n in range(CLIENTS)], replies)
    wait_for(lambda: waiting(worker) == CLIENTS, timeout=20)
    assert replies == {}  # nobody has an answer before the commit
    assert not Message.objects.exists()

    held.release.set()
    finish_all(clients, 30)
    send(world.port, "last", replies)

    assert len(replies) == CLIENTS + 2
    assert all(code == 250 and stored for code, stored in replies.values())
    assert Message.objects.count() == CLIENTS + 2
    # One transaction for the five that waited together.
    assert held.batches == [1, CLIENTS, 1]
    # (The first batch may also commit the link queue it created.)
    assert held.commits[1:] == [1, 1]
    # The writer keeps its connection (SQLite included) from one batch to the next.
    assert len(set(held.connections)) == 1


def test_a_bad_message_in_a_batch_is_refused_alone(
    world: World, relay: Callable[..., RelayThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldWriter(monkeypatch)
    real = runtime.place_durably

    def poisoned(request: Request) -> Request:
        def drafter(queue_id: str, now: datetime) -> Draft:
            draft = request.drafter(queue_id, now)
            if b"Subject: bad" in draft.content:
                raise ValueError("cannot draft")  # as a bug or odd data would
            return draft

        return Request(receiver=request.receiver, drafter=drafter)

    def place_durably(requests: list[Request]) -> Any:
        return real([poisoned(request) for request in requests])

    monkeypatch.setattr(runtime, "place_durably", place_durably)
    worker = relay(world.server)
    connect_when_listening(world.port)
    replies: dict[str, tuple[int, bool]] = {}

    clients = start(world.port, ["first"], replies)
    wait_for(lambda: held.entered == [1], timeout=20)
    clients += start(world.port, ["good1", "bad", "good2"], replies)
    wait_for(lambda: waiting(worker) == 3, timeout=20)
    held.release.set()
    finish_all(clients, 30)

    assert held.batches == [1, 3]
    assert {subject: code for subject, (code, _) in replies.items()} == {
        "first": 250,
        "good1": 250,
        "bad": 451,
        "good2": 250,
    }
    assert Message.objects.count() == 3
