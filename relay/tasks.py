"""Celery tasks of outbound delivery: thin, idempotent, and nothing kept on the broker.

They take ids and call plain functions of ``relay.delivery.engine`` that claim their work in
the database. A task delivered twice finds nothing due the second time; a task lost with the
broker is replaced by the sweeper (``sweep``, every few seconds from beat), which finds due
work in the database. Retry times are columns, never ETAs or countdowns on the broker.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable

from celery import shared_task
from django.conf import settings

from relay.delivery import engine
from relay.queue import dispatch

log = logging.getLogger("relay.delivery")

# Seconds without publishing after the broker failed (the sweeper covers the gap; when the
# broker is down, beat's sweeps wait for it too, so nothing is lost either way).
BROKER_PAUSE = 30
_paused_until = 0.0

# deliver_queue results after which the queue may hold more due work right away.
_WORKED = (engine.SENT, engine.SOFT_FAIL, engine.HARD_FAIL, engine.REROUTED)


def worker_id() -> str:
    """Who holds a lease: this host and process (the engine adds a per-call suffix)."""
    return f"{socket.gethostname()}/{os.getpid()}"


@shared_task(acks_late=True, ignore_result=True)
def deliver(queue_pk: int) -> str:
    """One connection's worth of due mail of one link queue: the connection keeps taking the
    queue's due mail, mail queued meanwhile included, up to "messages per connection". When
    more is due afterwards, the next connection is another task, so other queues get their
    turn in between; a long queue also asks for a second task at once, so several
    connections share it (up to the connection limits). The queue's wake-up is cleared
    before the claim: mail committed from then on asks for a task of its own, and mail
    committed before it is this task's. A connection left with nothing to send waits a
    moment for more (``SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS``): mail queued meanwhile
    goes out on it without a task of its own."""
    dispatch.started(queue_pk)
    result = engine.deliver_queue(queue_pk, worker_id())
    if result in _WORKED and engine.has_due_work(queue_pk):
        dispatch.wake([queue_pk], at_once=True)
    return result


@shared_task(acks_late=True, ignore_result=True)
def sweep() -> int:
    """Expirations, delay notifications and lost work (expired leases, tasks the broker lost):
    enqueues ``deliver`` for every queue with due work, a task pending or not (the broker may
    have lost it). Returns how many."""
    queues = engine.sweep()
    dispatch.wake(queues, at_once=True, every=True)
    return len(queues)


def enqueue_queues(queue_pks: Iterable[int]) -> list[int]:
    """Ask for delivery of these queues now (intake calls this once a message is committed).
    Never raises: when the broker cannot be reached the sweeper finds the work anyway, and the
    caller (an SMTP client waiting for its 250) must not wait for retries. After a failure
    this process publishes nothing for ``BROKER_PAUSE`` seconds: a broker that is down costs
    one wait (the Redis client alone retries for seconds), not one per message. Returns the
    queues it published nothing for."""
    global _paused_until
    pks = list(dict.fromkeys(queue_pks))
    if not getattr(settings, "SMTPADMIN_DELIVERY_ENQUEUE", True):
        return pks
    if time.monotonic() < _paused_until:
        return pks
    for index, pk in enumerate(pks):
        try:
            deliver.apply_async((pk,), retry=False)
        except Exception:  # any broker trouble: the sweeper is the fallback
            _paused_until = time.monotonic() + BROKER_PAUSE
            log.warning(
                "Could not enqueue delivery of queue %s; the sweeper will find the work "
                "(no delivery tasks published for %d s)",
                pk,
                BROKER_PAUSE,
                exc_info=True,
            )
            return pks[index:]
    return []


# Wake-ups of the queue core publish through this module's task.
dispatch.register_publisher(enqueue_queues)
