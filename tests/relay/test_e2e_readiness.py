"""The readiness files of the real processes: runrelay, a Celery worker and beat are ready once
they work, not ready once stopped (file removed) or killed (file ages)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from smtpadmin.readiness import Readiness, check
from tests.relay.celery_harness import CeleryProcess, beat, wait_until, worker
from tests.relay.harness import start_runrelay, wait_for
from tests.relay.world import World


@pytest.fixture
def celery_processes(transactional_db: Any) -> Iterator[list[CeleryProcess]]:
    started: list[CeleryProcess] = []
    yield started
    for process in started:
        process.stop()


def test_runrelay_is_ready_while_it_heartbeats_and_not_after_sigterm(
    world: World, tmp_path: Path
) -> None:
    var = tmp_path / "var"
    relay = start_runrelay(world.server.name, var)
    try:
        with override_settings(VAR_DIR=var):
            wait_for(lambda: check("relay", world.server.name).state is Readiness.READY, 30)
            relay.send_signal(signal.SIGTERM)
            relay.wait(30)
            assert check("relay", world.server.name).state is Readiness.ABSENT
    finally:
        if relay.poll() is None:
            relay.kill()
        relay.wait(10)
        if relay.stdout is not None:
            relay.stdout.close()


def test_a_worker_is_ready_once_connected_and_a_killed_one_goes_stale(
    celery_processes: list[CeleryProcess],
) -> None:
    name = f"celery@{socket.gethostname()}"
    process = worker().start()
    celery_processes.append(process)
    assert wait_until(lambda: check("worker", name).state is Readiness.READY, 30), process.log()
    process.kill()
    # Killed with -9: nothing removes the file, it only stops being touched.
    assert check("worker", name, now=time.time() + 60).state is Readiness.STALE
    stopped = worker().start()
    celery_processes.append(stopped)
    assert wait_until(lambda: check("worker", name).state is Readiness.READY, 30)
    stopped.stop()
    assert check("worker", name).state is Readiness.ABSENT, stopped.log()


def test_beat_is_ready_while_it_runs(celery_processes: list[CeleryProcess], tmp_path: Path) -> None:
    process = beat(tmp_path / "schedule").start()
    celery_processes.append(process)
    host = socket.gethostname()
    assert wait_until(lambda: check("beat", host).state is Readiness.READY, 30), process.log()
    process.stop()
    assert check("beat", host).state is Readiness.ABSENT, process.log()
    assert isinstance(process.process, subprocess.Popen)
