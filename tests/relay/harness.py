"""The relay worker for end-to-end tests: the real supervisor with real listeners on free
loopback ports, on its own event loop in a background thread, against the test database.

Tests that use it need committed data (``transactional_db``): the relay reads through its own
database connections, as it does in production.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.db import connection

from relay.smtp.supervisor import Supervisor
from servers.models import RoutingGroup, Server, VirtualServer

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float = 5.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting after {timeout} s for {check}")
        time.sleep(interval)


class RelayThread:
    """``runrelay`` without the process: start(), then talk SMTP to it, then stop()."""

    def __init__(self, server: Server, *, interval: float = 0.1, grace: float = 5.0) -> None:
        self.server = server
        self.interval = interval
        self.grace = grace
        self.supervisor: Supervisor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="relay-under-test", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by stop()
            self.error = error
            self.ready.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.supervisor = Supervisor(
            self.server, interval=self.interval, heartbeat_interval=1.0, grace=self.grace
        )
        waiter = asyncio.ensure_future(self.supervisor.started.wait())
        runner = asyncio.ensure_future(self.supervisor.run())
        await waiter
        self.ready.set()
        await runner

    def start(self) -> RelayThread:
        self.thread.start()
        if not self.ready.wait(15):
            raise RuntimeError("the relay did not start")
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self.loop is not None and self.supervisor is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.supervisor.stop)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the relay did not stop"
        if self.error is not None:
            raise self.error

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the relay's loop and return its result (to inspect state)."""
        assert self.loop is not None
        future: Any = asyncio.run_coroutine_threadsafe(_call(function), self.loop)
        return future.result(10)

    def listening(self, vs: VirtualServer) -> bool:
        def bound() -> bool:
            assert self.supervisor is not None
            listener = self.supervisor.listeners.get(vs.pk)
            return listener is not None and listener.server is not None

        return self.call(bound)

    def session_count(self, vs: VirtualServer) -> int:
        def count() -> int:
            assert self.supervisor is not None
            listener = self.supervisor.listeners.get(vs.pk)
            return len(listener.sessions) if listener else 0

        return self.call(count)


async def _call(function: Callable[[], T]) -> T:
    return function()


def node(name: str = "node1") -> Server:
    server, _ = Server.objects.get_or_create(
        name=name, defaults={"fqdn": f"{name}.relay.test", "routing_group": RoutingGroup.first()}
    )
    return server


def smtp(port: int, host: str = "127.0.0.1", *, timeout: float = 10.0) -> smtplib.SMTP:
    client = smtplib.SMTP(host, port, local_hostname="client.test", timeout=timeout)
    return client


def connect_when_listening(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
    def accepting() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(accepting, timeout)


@pytest.fixture
def relay(transactional_db: Any) -> Iterator[Callable[..., RelayThread]]:
    """``relay(server)`` starts the relay worker of that server; it is stopped afterwards."""
    started: list[RelayThread] = []

    def start(server: Server | None = None, **options: Any) -> RelayThread:
        worker = RelayThread(server or node(), **options).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def database_url() -> str:
    """The URL of the test database, for processes other than this one."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user, host, port = db.get("USER") or "", db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def process_environment(**extra: str) -> dict[str, str]:
    """What a relay or Celery process needs to share this test's database, broker and DNS."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": str(settings.CELERY_BROKER_URL),
        "SMTPADMIN_VAR_DIR": str(settings.VAR_DIR),
        "SMTPADMIN_DNS_SERVERS": ",".join(settings.SMTPADMIN_DNS_SERVERS),
        "SECRET_KEY": "test-only",
        "PYTHONUNBUFFERED": "1",
        # A relay subprocess without a Celery worker must not fill the broker with tasks that a
        # later test's worker would have to wade through.
        "SMTPADMIN_DELIVERY_ENQUEUE": "false",
        **extra,
    }


def start_runrelay(server_name: str, var_dir: Path, **extra: str) -> subprocess.Popen[bytes]:
    """A real ``manage.py runrelay`` process for this server, on this test's database."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "runrelay", "--server", server_name, "--interval", "0.2"],
        cwd=Path(settings.BASE_DIR),
        env=process_environment(SMTPADMIN_VAR_DIR=str(var_dir), **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
