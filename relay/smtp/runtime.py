"""What every session of a relay worker shares: the organization-wide snapshots, the thread
pool that runs database work and password checks off the event loop, and the DNS resolvers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import close_old_connections, connections

from relay.dns import make_resolver
from relay.smtp.config import Directory, OrganizationPolicy

log = logging.getLogger("relay.smtp")

T = TypeVar("T")


def _in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # Pool threads keep their own database connection; drop it when stale or broken.
    close_old_connections()
    try:
        return function(*args, **kwargs)
    finally:
        close_old_connections()


@dataclass
class RelayRuntime:
    """Shared by the listeners of one worker; the supervisor swaps the snapshots in place."""

    worker: str  # "<server name>/<pid>": lease owner and session key prefix
    organization: OrganizationPolicy = field(default_factory=OrganizationPolicy)
    directory: Directory = field(default_factory=Directory)
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=8, thread_name_prefix="relay-db")
    )
    resolvers: dict[tuple[str, ...], Any] = field(default_factory=dict)

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work (ORM, hashing) in the pool and wait for it without blocking."""
        loop = asyncio.get_running_loop()
        call = functools.partial(_in_thread, function, *args, **kwargs)
        return await loop.run_in_executor(self.executor, call)

    def resolver(self, servers: tuple[str, ...]) -> Any:
        """The DNS resolver for a virtual server's external DNS servers (or the default)."""
        resolver = self.resolvers.get(servers)
        if resolver is None:
            resolver = self.resolvers[servers] = make_resolver(list(servers))
        return resolver

    def shutdown(self) -> None:
        """Finish the work in hand, then close every pool thread's database connection (a
        thread that ends does not close its own: PostgreSQL would keep the sessions)."""
        size = self.executor._max_workers
        everyone = threading.Barrier(size, timeout=10)

        def close_connections() -> None:
            # The barrier makes each of the pool's threads take exactly one of these jobs.
            with contextlib.suppress(threading.BrokenBarrierError):
                everyone.wait()
            connections.close_all()

        for _ in range(size):
            self.executor.submit(close_connections)
        self.executor.shutdown(wait=True, cancel_futures=False)
