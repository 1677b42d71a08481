"""The processes of a ledger run, as production runs them: ``manage.py runrelay``,
``celery -A smtpadmin worker`` and ``celery -A smtpadmin beat``, against a private
PostgreSQL database and a private Redis, with the sinks and a Maildir drop on this machine."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.ledger.ledger import Census, take_census
from tests.ledger.services import PrivatePostgres, PrivateRedis
from tests.relay.celery_harness import CeleryProcess
from tests.sinks import Sink

ROOT = Path(settings.BASE_DIR)
LEASE_SECONDS = 5  # a killed worker's batch or relay's local delivery is due again this soon
BATCH = 20  # the virtual server's messages per connection (setup_world)


class RelayProcess:
    """``manage.py runrelay`` as a process; its output goes to a file kept for failures."""

    def __init__(self, server: str, port: int, env: dict[str, str], log: Path) -> None:
        self.server = server
        self.port = port
        self.env = env
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> RelayProcess:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "runrelay",
                    "--server",
                    self.server,
                    "--interval",
                    "0.2",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self.listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail("runrelay did not start:\n" + self.log())
            time.sleep(0.1)
        return self

    def listening(self) -> bool:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=2) as client:
                return client.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no goodbye, leases and half-written work left behind."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]


@dataclass
class Rig:
    """Everything one ledger run uses; the fixtures of conftest.py build it."""

    postgres: PrivatePostgres
    redis: PrivateRedis
    database: str
    env: dict[str, str]
    folder: Path
    drop: Path
    sink: Sink
    port: int
    password: str = ""
    relay: RelayProcess | None = None
    processes: list[CeleryProcess] = field(default_factory=list)

    # -- processes ---------------------------------------------------------------------------

    def start_relay(self) -> RelayProcess:
        self.relay = RelayProcess(
            "ledger1", self.port, self.env, self.folder / "runrelay.log"
        ).start()
        return self.relay

    def worker(self) -> CeleryProcess:
        process = CeleryProcess(
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            ready=" ready.",
            env=self.env,
        )
        self.processes.append(process)
        return process.start()

    def beat(self) -> CeleryProcess:
        process = CeleryProcess(
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(self.folder / "beat-schedule"),
            ready="beat: Starting",
            env=self.env,
        )
        self.processes.append(process)
        return process.start()

    def manage(self, *arguments: str) -> dict[str, object]:
        result = subprocess.run(
            [sys.executable, "-m", "tests.ledger.setup_world", *arguments],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            pytest.fail(f"setup_world {arguments} failed:\n{result.stdout}\n{result.stderr}")
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()
        if self.relay is not None:
            self.relay.stop()

    def logs(self) -> str:
        parts = [f"--- celery {' '.join(p.arguments[:1])} ---\n{p.log()}" for p in self.processes]
        if self.relay is not None:
            parts.append(f"--- runrelay ---\n{self.relay.log()}")
        return "\n".join(parts)

    # -- what happened -----------------------------------------------------------------------

    def census(self) -> Census:
        return take_census([self.sink], self.drop)

    def open_entries(self) -> int:
        """Queue entries not done yet (ready, retry or frozen)."""
        rows = self.postgres.query(
            "SELECT count(*) FROM relay_queueentry WHERE state <> 'done'", self.database
        )
        return int(rows[0][0])

    def stuck(self) -> list[tuple[Any, ...]]:
        """The open queue entries, for a failure report."""
        return self.postgres.query(
            "SELECT m.subject, q.kind, e.state, e.attempts, e.lease_owner, e.lease_until, "
            "e.next_attempt_at, e.last_response FROM relay_queueentry e "
            "JOIN relay_linkqueue q ON q.id = e.queue_id JOIN relay_message m ON m.id = "
            "e.message_id WHERE e.state <> 'done' ORDER BY e.id LIMIT 20",
            self.database,
        )

    def settle(self, accepted: set[int], timeout: float) -> bool:
        """Wait (at most ``timeout``) until everything answered 250 arrived and the queues
        are empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if accepted <= self.census().arrived():
                try:
                    if self.open_entries() == 0:
                        return True
                except Exception:  # the database restarting
                    pass
            time.sleep(0.5)
        return False


def environment(
    postgres: PrivatePostgres, redis: PrivateRedis, database: str, folder: Path, dns: str
) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "smtpadmin.settings",
        "DATABASE_URL": postgres.url(database),
        "CELERY_BROKER_URL": redis.url,
        "SMTPADMIN_VAR_DIR": str(folder / "var"),
        "SMTPADMIN_DNS_SERVERS": dns,
        "SMTPADMIN_DELIVERY_ENQUEUE": "true",
        "SMTPADMIN_DELIVERY_LEASE_SECONDS": str(LEASE_SECONDS),
        "SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS": str(LEASE_SECONDS),
        "SECRET_KEY": "test-only",
        "PYTHONUNBUFFERED": "1",
    }


Waiter = Callable[[], bool]
