"""Delivery end to end, as it runs in production: smtplib -> the relay worker -> the database
-> a real ``celery -A smtpadmin worker`` process (fed through the configured broker: Redis in
CI) -> a real SMTP sink on loopback. Includes the faults: a worker killed mid-delivery, a
broker that lost its tasks, a next hop that says 4xx before 250."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from connectors.models import AddressSpace, Connector
from relay.admin.actions import retry_queue_now
from relay.models import LinkQueue, QueueEntry, Recipient
from servers.models import RoutingGroup
from smtpadmin.celery import app
from tests.relay.celery_harness import CeleryProcess, worker
from tests.relay.harness import RelayThread, smtp, wait_for
from tests.relay.world import PASSWORD, World, message
from tests.sinks import Sink, SinkFactory

Relay = Callable[..., RelayThread]
DELIVERED_WITHIN = 30.0  # seconds: a worker start and a few sweeps on a busy CI machine


@pytest.fixture
def celery(transactional_db: Any, settings: Any) -> Iterator[Callable[..., CeleryProcess]]:
    """``celery(**env)`` starts a worker process; every one is stopped after the test. The
    broker is emptied first, so tasks published by earlier tests do not reach it."""
    settings.SMTPADMIN_DELIVERY_ENQUEUE = True
    lose_every_task()
    started: list[CeleryProcess] = []

    def start(**env: str) -> CeleryProcess:
        process = worker(**env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        print(f"--- celery {' '.join(process.arguments)} ---\n{process.log()}")  # on failure


def internet_via(world: World, next_hop: Sink) -> Connector:
    connector = Connector.objects.create(
        name="Internet",
        routing_group=RoutingGroup.first(),
        use_dns=False,
        smart_hosts=next_hop.smart_host,
    )
    connector.bridgeheads.set([world.vs])
    AddressSpace.objects.create(connector=connector, domain="*", cost=1)
    return connector


def relay_mail(world: World, recipient: str, *, sender: str = "alice@smtpadmin.test") -> None:
    with smtp(world.port) as client:
        client.ehlo()
        client.login("relayuser", PASSWORD)
        assert client.sendmail(sender, [recipient], message(f"to {recipient}")) == {}


def recipient_state(address: str) -> str:
    return Recipient.objects.get(address=address).state


def sweep_now() -> None:
    """What beat does every few seconds, published through the broker."""
    app.send_task("relay.tasks.sweep")


def test_mail_for_an_outside_domain_goes_through_the_connector_to_the_next_hop(
    world: World, relay: Relay, sink: SinkFactory, celery: Callable[..., CeleryProcess]
) -> None:
    next_hop = sink()
    internet_via(world, next_hop)
    relay(world.server)
    celery()

    relay_mail(world, "friend@elsewhere.test")

    wait_for(lambda: next_hop.messages, DELIVERED_WITHIN)
    (received,) = next_hop.messages
    assert received.rcpt_tos == ["friend@elsewhere.test"]
    assert b"Subject: to friend@elsewhere.test" in received.content
    wait_for(lambda: recipient_state("friend@elsewhere.test") == Recipient.State.DELIVERED)


def test_a_4xx_next_hop_makes_the_message_wait_for_its_retry_time(
    world: World, relay: Relay, sink: SinkFactory, celery: Callable[..., CeleryProcess]
) -> None:
    next_hop = sink(rcpt=lambda address: "451 4.7.1 Greylisted, try again later")
    internet_via(world, next_hop)
    relay(world.server)
    celery()

    relay_mail(world, "friend@elsewhere.test")

    entry = wait_for(
        lambda: QueueEntry.objects.filter(
            state=QueueEntry.State.RETRY, queue__kind=LinkQueue.Kind.CONNECTOR
        ).first(),
        DELIVERED_WITHIN,
    )
    assert entry is not None and entry.attempts == 1
    # The virtual server's first retry interval: 10 minutes after the attempt.
    assert entry.last_attempt_at is not None
    wait = (entry.next_attempt_at - entry.last_attempt_at).total_seconds()
    assert 9 * 60 < wait <= 10 * 60 + 5
    assert "451 4.7.1" in entry.last_response
    assert recipient_state("friend@elsewhere.test") == Recipient.State.DEFERRED
    assert next_hop.messages == []

    # The next hop is happy now; Force Connection instead of waiting ten minutes.
    next_hop.rcpt = lambda address: None
    retry_queue_now(entry.queue, by=None)
    wait_for(lambda: next_hop.messages, DELIVERED_WITHIN)
    wait_for(lambda: recipient_state("friend@elsewhere.test") == Recipient.State.DELIVERED)


def test_a_5xx_next_hop_sends_an_ndr_to_the_local_senders_maildir(
    world: World, relay: Relay, sink: SinkFactory, celery: Callable[..., CeleryProcess]
) -> None:
    next_hop = sink(rcpt=lambda address: "550 5.1.1 <nobody@elsewhere.test>: no such user")
    internet_via(world, next_hop)
    relay(world.server)
    celery()

    relay_mail(world, "nobody@elsewhere.test", sender="alice@smtpadmin.test")

    (ndr,) = world.delivered("alice@smtpadmin.test", timeout=DELIVERED_WITHIN)
    assert ndr.get_content_type() == "multipart/report"
    report = ndr.as_string()
    assert "nobody@elsewhere.test" in report and "5.1.1" in report
    assert recipient_state("nobody@elsewhere.test") == Recipient.State.FAILED


def test_a_worker_killed_during_delivery_leaves_a_lease_that_expires_and_mail_goes_out(
    world: World, relay: Relay, sink: SinkFactory, celery: Callable[..., CeleryProcess]
) -> None:
    next_hop = sink()
    next_hop.stall_at("END-OF-DATA", 60.0)
    internet_via(world, next_hop)
    relay(world.server)
    first = celery(SMTPADMIN_DELIVERY_LEASE_SECONDS="3")

    relay_mail(world, "friend@elsewhere.test")
    wait_for(lambda: QueueEntry.objects.filter(lease_until__isnull=False).exists(), 20)
    wait_for(lambda: "DATA" in next_hop.verbs(), 20)
    first.kill()
    assert next_hop.messages == []

    next_hop.calm()
    celery(SMTPADMIN_DELIVERY_LEASE_SECONDS="3")

    def delivered_after_sweeps() -> bool:
        sweep_now()
        return bool(next_hop.messages)

    wait_for(delivered_after_sweeps, DELIVERED_WITHIN, interval=1.0)
    assert len(next_hop.messages) == 1


def test_work_lost_with_the_broker_is_found_by_the_sweeper(
    world: World, relay: Relay, sink: SinkFactory, celery: Callable[..., CeleryProcess]
) -> None:
    next_hop = sink()
    internet_via(world, next_hop)
    relay(world.server)
    recipients = [f"friend{n}@elsewhere.test" for n in range(3)]
    for recipient in recipients:
        relay_mail(world, recipient)
    lose_every_task()

    celery()
    sweep_now()

    wait_for(lambda: len(next_hop.messages) == 3, DELIVERED_WITHIN)
    assert sorted(r for m in next_hop.messages for r in m.rcpt_tos) == recipients


def lose_every_task() -> None:
    """FLUSHDB on Redis; the same for the embedded filesystem broker: empty its folders."""
    url = str(settings.CELERY_BROKER_URL)
    if url.startswith("redis"):
        redis.Redis.from_url(url).flushdb()
        return
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    for key in ("data_folder_in", "data_folder_out"):
        folder = Path(options[key])
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)


def test_n_messages_through_a_4xx_then_250_next_hop_are_delivered_exactly_once(
    world: World, relay: Relay, sink: SinkFactory, celery: Callable[..., CeleryProcess]
) -> None:
    greylisted: set[str] = set()

    def greylist(address: str) -> str | None:
        if address in greylisted:
            return None
        greylisted.add(address)
        return "451 4.7.1 Greylisted"

    next_hop = sink(rcpt=greylist)
    internet_via(world, next_hop)
    world.configure(messages_per_connection=None)
    relay(world.server)
    celery()
    count = 8
    for n in range(count):
        relay_mail(world, f"friend{n}@elsewhere.test")

    wait_for(
        lambda: Recipient.objects.filter(state=Recipient.State.DEFERRED).count() == count,
        DELIVERED_WITHIN,
    )
    for queue in LinkQueue.objects.filter(kind=LinkQueue.Kind.CONNECTOR):
        retry_queue_now(queue, by=None)

    wait_for(
        lambda: Recipient.objects.filter(state=Recipient.State.DELIVERED).count() == count,
        DELIVERED_WITHIN,
    )
    delivered = [r for m in next_hop.messages for r in m.rcpt_tos]
    assert sorted(delivered) == sorted(f"friend{n}@elsewhere.test" for n in range(count))
