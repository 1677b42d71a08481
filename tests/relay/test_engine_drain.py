"""A connection drains its queue: each message's outcome is recorded as its reply arrives,
more mail is claimed while the connection is open (up to "messages per connection"), a long
queue gets further connections in parallel, and every worker together keeps the virtual
server's outbound connection limits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from relay.delivery import claims
from relay.delivery.engine import asynchronous_commits
from relay.models import Recipient
from relay.queue import dispatch, outcomes
from tests.relay.engine_world import (
    Outbound,
    deliver,
    deliver_all,
    deliver_in_parallel,
    queue_of,
)
from tests.sinks import SinkFactory

pytestmark = pytest.mark.django_db


def fill(outbound: Outbound, count: int) -> Any:
    messages = [outbound.send([f"user{n}@example.org"]) for n in range(count)]
    return queue_of(messages[0])


def test_one_connection_claims_chunk_after_chunk_up_to_messages_per_connection(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    outbound.configure(messages_per_connection=2 * claims.CHUNK + 5)
    queue = fill(outbound, 3 * claims.CHUNK)

    assert deliver(queue, timezone.now()) == "sent"
    # More than one claim's worth went over the one connection, and no more than its limit.
    assert (mx.connections, len(mx.messages)) == (1, 2 * claims.CHUNK + 5)
    assert mx.verbs().count("QUIT") == 1

    assert deliver_all(queue, timezone.now()) == ["sent", "nothing"]
    assert (mx.connections, len(mx.messages)) == (2, 3 * claims.CHUNK)
    delivered = Counter(address for m in mx.messages for address in m.rcpt_tos)
    assert set(delivered.values()) == {1}


def test_each_message_is_recorded_as_soon_as_its_reply_arrives(
    outbound: Outbound, sink: SinkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the connection goes on: when message k is recorded, the next hop has taken k
    messages and not yet the next one."""
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    queue = fill(outbound, 5)
    seen: list[tuple[int, int]] = []
    real = outcomes.record

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((len(args[1]), len(mx.messages)))
        return real(*args, **kwargs)

    monkeypatch.setattr(outcomes, "record", spy)

    assert deliver(queue, timezone.now()) == "sent"
    assert seen == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]
    assert Recipient.objects.filter(state="delivered").count() == 5


def test_a_connection_broken_mid_queue_keeps_what_was_delivered_and_retries_the_rest(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    mx.drop_at("MAIL", after=3)  # takes three messages, then hangs up
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    queue = fill(outbound, 6)

    assert deliver(queue, timezone.now()) == "soft_fail"
    states = Counter(Recipient.objects.values_list("state", flat=True))
    assert states == {"delivered": 3, "deferred": 3}
    deferred = Recipient.objects.filter(state="deferred").first()
    assert deferred is not None and deferred.last_response.startswith("451 4.4.2 Lost connection")


@pytest.fixture
def published() -> Iterator[list[int]]:
    """The queue ids that wake-ups publish a deliver task for (recorded, not sent)."""
    found: list[int] = []

    def publisher(pks: Sequence[int]) -> list[int]:
        found.extend(pks)
        return []

    from relay import tasks

    dispatch.register_publisher(publisher)
    try:
        yield found
    finally:
        dispatch.register_publisher(tasks.enqueue_queues)


def test_a_long_queue_asks_for_another_connection_in_parallel(
    outbound: Outbound, sink: SinkFactory, settings: Any, published: list[int]
) -> None:
    settings.SMTPADMIN_DELIVERY_ENQUEUE = True
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    queue = fill(outbound, claims.CHUNK + 1)
    published.clear()  # intake's own wake-up
    dispatch.started(queue.pk)  # as the deliver task does first

    assert deliver(queue, timezone.now()) == "sent"
    assert published == [queue.pk]


def test_a_short_queue_asks_for_no_other_connection(
    outbound: Outbound, sink: SinkFactory, settings: Any, published: list[int]
) -> None:
    settings.SMTPADMIN_DELIVERY_ENQUEUE = True
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    queue = fill(outbound, claims.CHUNK - 1)
    published.clear()
    dispatch.started(queue.pk)

    assert deliver(queue, timezone.now()) == "sent"
    assert published == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "limits",
    [
        {"outbound_per_domain_limit": 2},
        {"outbound_connection_limit": 2, "outbound_per_domain_limit": None},
    ],
    ids=["per domain", "total"],
)
def test_parallel_workers_never_open_more_connections_than_the_limits(
    outbound: Outbound, sink: SinkFactory, limits: dict[str, Any]
) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("concurrent writers need PostgreSQL (SQLite serialises them anyway)")
    count = 40
    mx = sink()
    # Connections last long enough that more workers than the limit would overlap without it.
    mx.stall_at("DATA", 0.2)
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    outbound.configure(messages_per_connection=4, **limits)
    queue = fill(outbound, count)
    deliver_in_parallel(queue, 8, timezone.now(), timeout=120)

    assert mx.most_open <= 2
    delivered = Counter(address for m in mx.messages for address in m.rcpt_tos)
    assert sorted(delivered) == sorted(f"user{n}@example.org" for n in range(count))
    assert set(delivered.values()) == {1}


@pytest.mark.django_db(transaction=True)
def test_the_worker_commits_without_waiting_for_the_wal_flush_set_once_per_connection() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    asynchronous_commits()
    with CaptureQueriesContext(connection) as again:
        asynchronous_commits()
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("off",)
    assert len(again) == 0
