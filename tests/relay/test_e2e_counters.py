"""The counters written by the real processes, as they run in production: a ``runrelay``
process with intake processes counts the mail it accepts, and a prefork Celery worker (its
pool processes are forks) counts what it delivers; both reach the database by themselves."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.metrics import DELIVERIES, RECEIVED
from smtpadmin.counters import labels_text
from smtpadmin.models import TotalCount
from tests.relay.celery_harness import CeleryProcess, worker
from tests.relay.harness import smtp, start_runrelay, wait_for
from tests.relay.test_e2e_delivery import internet_via, lose_every_task, relay_mail
from tests.relay.world import World, message
from tests.sinks import SinkFactory

WRITTEN_WITHIN = 30.0  # seconds: a start, a delivery and a write every second on a busy machine


def total(name: str, **labels: str) -> int:
    row = TotalCount.objects.filter(name=name, labels=labels_text(labels)).first()
    return row.value if row else 0


@pytest.fixture
def prefork_worker(transactional_db: Any, settings: Any) -> Iterator[CeleryProcess]:
    settings.SMTPADMIN_DELIVERY_ENQUEUE = True
    lose_every_task()
    process = worker(pool="prefork", SMTPADMIN_COUNTER_FLUSH_SECONDS="1").start()
    yield process
    process.stop()


def test_a_prefork_worker_writes_what_it_delivered(
    world: World, relay: Any, sink: SinkFactory, prefork_worker: CeleryProcess
) -> None:
    internet_via(world, sink())
    relay(world.server)
    relay_mail(world, "friend@elsewhere.test")
    delivered = {"connector": "Internet", "result": "delivered"}
    assert wait_for(lambda: total(DELIVERIES, **delivered) == 1, WRITTEN_WITHIN), (
        prefork_worker.log()
    )


def test_runrelay_writes_what_its_intake_processes_accepted(world: World, tmp_path: Path) -> None:
    process = start_runrelay(
        world.server.name,
        tmp_path / "var",
        SMTPADMIN_COUNTER_FLUSH_SECONDS="1",
        SMTPADMIN_RELAY_PROCESSES="2",
    )
    try:

        def sent() -> bool:
            try:
                with smtp(world.port, timeout=2) as client:
                    client.ehlo()
                    client.sendmail("sender@outside.test", ["alice@smtpadmin.test"], message())
                return True
            except OSError:
                return False

        wait_for(sent, WRITTEN_WITHIN)
        assert wait_for(lambda: total(RECEIVED, virtual_server=world.vs.name) == 1, WRITTEN_WITHIN)
        # Stopped, nothing is counted twice.
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        assert total(RECEIVED, virtual_server=world.vs.name) == 1
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
