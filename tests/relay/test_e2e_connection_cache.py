"""The connection cache end to end: a real ``celery -A smtpadmin worker`` keeps a drained
connection open for ``SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS``, mail queued to the same
queue meanwhile goes out on it (counted at a real sink), QUIT when the time is up, and a next
hop that closes the idle connection costs the next message nothing."""

from __future__ import annotations

import time
from collections.abc import Callable

from relay.models import QueueEntry, Recipient
from tests.relay.celery_harness import CeleryProcess
from tests.relay.harness import RelayThread, wait_for
from tests.relay.test_e2e_delivery import DELIVERED_WITHIN, celery, internet_via, relay_mail
from tests.relay.world import World
from tests.sinks import SinkFactory

__all__ = ["celery"]

Relay = Callable[..., RelayThread]


def delivered(address: str) -> bool:
    return Recipient.objects.filter(address=address, state=Recipient.State.DELIVERED).exists()


def test_mail_queued_while_a_drained_connection_waits_goes_over_that_connection(
    world: World, relay: Relay, sink: SinkFactory, celery: Callable[..., CeleryProcess]
) -> None:
    next_hop = sink()
    internet_via(world, next_hop)
    relay(world.server)
    celery(SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS="5")

    relay_mail(world, "first@elsewhere.test")
    wait_for(lambda: delivered("first@elsewhere.test"), DELIVERED_WITHIN)
    time.sleep(0.3)  # the queue has been empty for a while: without a cache, QUIT by now
    relay_mail(world, "second@elsewhere.test")
    wait_for(lambda: delivered("second@elsewhere.test"), DELIVERED_WITHIN)

    assert [m.rcpt_tos for m in next_hop.messages] == [
        ["first@elsewhere.test"],
        ["second@elsewhere.test"],
    ]
    assert next_hop.connections == 1
    # Once the cache time is up, the connection says goodbye.
    next_hop.wait_idle(timeout=DELIVERED_WITHIN)
    assert next_hop.verbs()[-1] == "QUIT"
    assert next_hop.verbs().count("QUIT") == 1


def test_an_idle_connection_the_next_hop_closed_costs_the_next_message_no_attempt(
    world: World, relay: Relay, sink: SinkFactory, celery: Callable[..., CeleryProcess]
) -> None:
    next_hop = sink(timeout=0.5)  # hangs up on a connection idle this long
    internet_via(world, next_hop)
    relay(world.server)
    celery(SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS="30")

    relay_mail(world, "first@elsewhere.test")
    wait_for(lambda: delivered("first@elsewhere.test"), DELIVERED_WITHIN)
    next_hop.wait_idle(timeout=DELIVERED_WITHIN)  # the next hop closed the idle connection
    relay_mail(world, "second@elsewhere.test")

    # Delivered at once on a new connection, not deferred to a retry a minute later.
    wait_for(lambda: delivered("second@elsewhere.test"), DELIVERED_WITHIN)
    assert [m.rcpt_tos for m in next_hop.messages] == [
        ["first@elsewhere.test"],
        ["second@elsewhere.test"],
    ]
    assert next_hop.connections == 2
    second = QueueEntry.objects.get(recipients__address="second@elsewhere.test")
    assert second.attempts == 1  # the attempt that delivered it, nothing before
