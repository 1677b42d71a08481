"""Real Celery processes for end-to-end delivery tests: ``celery -A smtpadmin worker`` (and beat)
against the test database and the configured broker (Redis in CI, the filesystem broker
locally), started and killed like an administrator would."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.relay.harness import process_environment

ROOT = Path(settings.BASE_DIR)


class CeleryProcess:
    """One ``celery -A smtpadmin <worker|beat>`` process; its output is kept for failures."""

    def __init__(self, *arguments: str, ready: str, env: dict[str, str]) -> None:
        self.arguments = arguments
        self.ready_text = ready
        self.env = env
        self.output: list[str] = []
        self.ready = threading.Event()
        self.process: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> CeleryProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "smtpadmin", *self.arguments],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(timeout):
            self.kill()
            pytest.fail("celery did not start:\n" + self.log())
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if self.ready_text in line:
                self.ready.set()

    def log(self) -> str:
        return "".join(self.output[-200:])

    def kill(self) -> None:
        """kill -9: no goodbye, no acknowledgement, leases left behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.reader is not None:
            self.reader.join(5)  # the rest of the output, for the failure report


def worker(pool: str = "solo", **env: str) -> CeleryProcess:
    """A worker with one process (``pool="prefork"``: one forked pool process, as production
    runs it, under the worker's own)."""
    return CeleryProcess(
        "worker",
        "--pool",
        pool,
        "--concurrency",
        "1",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        ready=" ready.",
        env=process_environment(**{"SMTPADMIN_DELIVERY_ENQUEUE": "true", **env}),
    )


def beat(schedule: Path, **env: str) -> CeleryProcess:
    return CeleryProcess(
        "beat",
        "--loglevel",
        "INFO",
        "--schedule",
        str(schedule),
        ready="beat: Starting",
        env=process_environment(**env),
    )


@pytest.fixture
def celery_processes(transactional_db: Any) -> Iterator[list[CeleryProcess]]:
    """Start processes with ``celery_processes.append(worker().start())``; all are stopped
    after the test."""
    started: list[CeleryProcess] = []
    yield started
    for process in started:
        process.stop()


def wait_until(check: Any, timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    return None
