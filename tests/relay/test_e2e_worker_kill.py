"""A real ``celery -A smtpadmin worker`` killed with SIGKILL in the middle of a connection to a
slow real next hop: the messages the next hop had already taken are on record, so the worker
that takes over sends again at most the one message that was in flight. And beat's sweep
travels on a queue of its own that a worker started without -Q still consumes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from django.conf import settings

from relay.models import Recipient
from smtpadmin.celery import app
from tests.relay.celery_harness import CeleryProcess
from tests.relay.harness import RelayThread, wait_for
from tests.relay.test_e2e_delivery import celery, internet_via, relay_mail, sweep_now
from tests.relay.world import World
from tests.sinks import SinkFactory

__all__ = ["celery"]

Relay = Callable[..., RelayThread]
COUNT = 12


def test_a_worker_killed_mid_connection_sends_again_at_most_the_message_in_flight(
    world: World, relay: Relay, sink: SinkFactory, celery: Callable[..., CeleryProcess]
) -> None:
    next_hop = sink()
    next_hop.stall_at("END-OF-DATA", 0.4)  # a slow next hop: the kill comes mid-connection
    internet_via(world, next_hop)
    relay(world.server)
    recipients = [f"friend{n}@elsewhere.test" for n in range(COUNT)]
    for recipient in recipients:
        relay_mail(world, recipient)

    first = celery(SMTPADMIN_DELIVERY_LEASE_SECONDS="3")
    wait_for(lambda: len(next_hop.messages) >= 4, 60)
    first.kill()
    taken_before = len(next_hop.messages)
    assert taken_before < COUNT  # the connection was cut short

    next_hop.calm()
    celery(SMTPADMIN_DELIVERY_LEASE_SECONDS="3")

    def all_delivered() -> bool:
        sweep_now()
        return not Recipient.objects.exclude(state=Recipient.State.DELIVERED).exists()

    wait_for(all_delivered, 60, interval=1.0)
    delivered = Counter(address for m in next_hop.messages for address in m.rcpt_tos)
    assert sorted(delivered) == sorted(recipients)
    assert sum(delivered.values()) - COUNT <= 1, delivered


def test_beats_sweep_has_its_own_queue_that_a_worker_without_q_consumes(
    world: World, celery: Callable[..., CeleryProcess]
) -> None:
    routed = app.amqp.router.route({}, "relay.tasks.sweep", (), {})
    assert routed["queue"].name == "sweep"
    assert app.amqp.router.route({}, "relay.tasks.deliver", (1,), {})["queue"].name == "celery"
    assert settings.CELERY_TASK_DEFAULT_QUEUE == "celery"

    worker = celery()  # the harness starts it as the Procfile does: no -Q
    result = app.send_task("relay.tasks.sweep")

    wait_for(lambda: f"relay.tasks.sweep[{result.id}] succeeded" in worker.log(), 60, 0.2)
