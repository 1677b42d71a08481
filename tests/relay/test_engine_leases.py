"""Claims and leases: every message goes out exactly once, whoever delivers it; the lease of
a worker that died runs out and another worker delivers its mail."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from relay.delivery.claims import claim
from relay.delivery.engine import deliver_queue, sweep
from relay.models import QueueEntry, Recipient
from tests.relay.engine_world import (
    OTHER,
    Outbound,
    deliver,
    deliver_all,
    deliver_in_parallel,
    entry_of,
    queue_of,
    recipient,
)
from tests.sinks import SinkFactory
from tests.threads import TestThread


@pytest.mark.django_db
def test_a_dead_workers_lease_runs_out_and_another_worker_delivers_the_mail(
    outbound: Outbound, sink: SinkFactory, settings: Any
) -> None:
    settings.SMTPADMIN_DELIVERY_LEASE_SECONDS = 120
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    now = timezone.now()
    # A worker claims the entry, then dies before it says anything.
    (claimed,) = claim([entry_of(message, queue).pk], "dead-worker/13#1", now)
    assert claimed.lease_until == now + timedelta(seconds=120)

    assert deliver(queue, now + timedelta(seconds=119), OTHER) == "nothing"
    assert queue.pk not in sweep(now=now + timedelta(seconds=119))
    assert mx.connections == 0

    expired = now + timedelta(seconds=121)
    assert queue.pk in sweep(now=expired)  # due again: the sweeper enqueues it
    assert deliver(queue, expired, OTHER) == "sent"
    assert len(mx.messages) == 1
    entry = entry_of(message, queue)
    assert (entry.state, entry.lease_owner, entry.attempts) == ("done", "", 1)


@pytest.mark.django_db
def test_a_claim_never_takes_what_another_worker_holds_even_when_it_read_it_free(
    outbound: Outbound,
) -> None:
    message = outbound.send(["bob@example.org"])
    pk = entry_of(message, queue_of(message)).pk
    now = timezone.now()
    # Both workers read the entry as due; the first claim wins, the second finds it taken.
    assert [e.pk for e in claim([pk], "worker-a/1#1", now)] == [pk]
    assert claim([pk], "worker-b/2#1", now) == []
    assert entry_of(message, queue_of(message)).lease_owner == "worker-a/1#1"
    # Its lease runs out: now the other may take it.
    later = now + timedelta(seconds=601)
    assert [e.pk for e in claim([pk], "worker-b/2#1", later)] == [pk]


@pytest.mark.django_db
def test_a_4xx_then_250_sink_gets_every_message_exactly_once(
    outbound: Outbound, sink: SinkFactory
) -> None:
    count = 12
    mx = sink()
    tried: Counter[str] = Counter()

    def first_time_greylisted(address: str) -> str | None:
        tried[address] += 1
        return "451 4.7.1 Greylisted, come back later" if tried[address] == 1 else None

    mx.rcpt = first_time_greylisted
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    outbound.configure(messages_per_connection=5)
    messages = [outbound.send([f"user{n}@example.org"]) for n in range(count)]
    queue = queue_of(messages[0])
    now = timezone.now()

    assert deliver_all(queue, now) == ["soft_fail"] * 3 + ["nothing"]
    assert mx.messages == []
    assert deliver_all(queue, now + timedelta(minutes=9)) == ["nothing"]
    assert deliver_all(queue, now + timedelta(minutes=10)) == ["sent"] * 3 + ["nothing"]

    delivered = sorted(address for m in mx.messages for address in m.rcpt_tos)
    assert delivered == sorted(f"user{n}@example.org" for n in range(count))
    assert all(recipient(m).state == "delivered" for m in messages)
    assert set(QueueEntry.objects.values_list("state", flat=True)) == {"done"}
    assert all(entry.attempts == 2 for entry in QueueEntry.objects.all())


@pytest.mark.django_db(transaction=True)
def test_workers_delivering_one_queue_at_the_same_time_send_each_message_once(
    outbound: Outbound, sink: SinkFactory
) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("concurrent writers need PostgreSQL (SQLite serialises them anyway)")
    count = 30
    mx = sink()
    mx.stall_at("DATA", 0.02)  # connections overlap
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    outbound.configure(messages_per_connection=3)
    for n in range(count):
        outbound.send([f"user{n}@example.org"])
    queue = queue_of(Recipient.objects.first().message)  # type: ignore[union-attr]
    deliver_in_parallel(queue, 4, timezone.now(), timeout=60)

    delivered = Counter(address for m in mx.messages for address in m.rcpt_tos)
    assert sorted(delivered) == sorted(f"user{n}@example.org" for n in range(count))
    assert set(delivered.values()) == {1}
    assert Recipient.objects.exclude(state="delivered").count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_slow_batch_renews_its_lease_so_nobody_takes_its_mail_meanwhile(
    outbound: Outbound, sink: SinkFactory, settings: Any
) -> None:
    settings.SMTPADMIN_DELIVERY_LEASE_SECONDS = 1
    mx = sink()
    mx.stall_at("END-OF-DATA", 0.7)  # each message takes 0.7 s: the batch outlives 1 s
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    first = outbound.send(["one@example.org"])
    second = outbound.send(["two@example.org"])
    queue = queue_of(first)
    results: list[str] = []

    def work() -> None:
        try:
            results.append(deliver_queue(queue.pk, "slow-worker/1"))
        finally:
            connection.close()

    worker = TestThread(work)
    worker.start()
    threading.Event().wait(1.3)  # the first lease would have run out by now
    stolen = claim([entry_of(second, queue).pk], "intruder/2#1", timezone.now())
    worker.finish(10)
    assert stolen == []
    assert results == ["sent"]
    assert sorted(r for m in mx.messages for r in m.rcpt_tos) == [
        "one@example.org",
        "two@example.org",
    ]
