"""What every session of a relay worker shares: the organization-wide snapshots, the thread
pool that runs database work and password checks off the event loop, the DNS resolvers, and
the writer that commits the messages of all sessions (group commit)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import close_old_connections, connection, connections

from relay.dns import make_resolver
from relay.queue import dispatch
from relay.queue.place import Placed, Receiver, Request, place_durably
from relay.queue.tracking import TrackingSettings
from relay.smtp.config import Directory, ListenerConfig, OrganizationPolicy

log = logging.getLogger("relay.smtp")

T = TypeVar("T")


def _in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # Pool threads keep their own database connection; drop it when stale or broken.
    close_old_connections()
    try:
        return function(*args, **kwargs)
    finally:
        close_old_connections()


# At most this many messages in one transaction (a burst is cut into several).
BATCH_LIMIT = 256


def receiver(config: ListenerConfig, organization: OrganizationPolicy) -> Receiver:
    """What placement needs of the receiving virtual server, from the relay's snapshot."""
    return Receiver(
        virtual_server_id=config.id,
        virtual_server_name=config.name,
        server_id=config.server_id,
        server_name=config.server_name,
        fqdn=config.fqdn,
        times=config.delivery_times,
        tracking=TrackingSettings(
            enabled=organization.message_tracking_enabled,
            subjects=organization.subject_logging_enabled,
        ),
    )


def _write_batch(requests: list[Request]) -> list[Placed | Exception]:
    """In the writer's thread: one transaction for the batch. The thread keeps its database
    connection open across batches (no connect per batch, SQLite included); one that failed
    is checked before the next batch and replaced when broken."""
    if connection.errors_occurred:
        if connection.is_usable():
            connection.errors_occurred = False
        else:
            connection.close()
    return place_durably(requests)


def _write_held(requests: list[Request]) -> tuple[list[Placed | Exception], list[int]]:
    """``_write_batch``, with the delivery wake-ups of its commit held back: the link queues
    to publish once the sessions have their answers."""
    with dispatch.holding() as held:
        results = _write_batch(requests)
    return results, held


def _publish(pks: list[int]) -> None:
    try:
        dispatch.publish(pks)
    except Exception:  # the sweeper finds the work; the writer must go on
        log.warning("publishing delivery wake-ups failed", exc_info=True)


class GroupWriter:
    """The relay process's one writer. Sessions hand it their finished messages and wait;
    it writes everything waiting in ONE transaction in its own database thread, and each
    session gets its answer (its 250) only after that commit. While one batch commits the
    next accumulates, so batches grow with the load and a lone message waits for nothing.
    The batch's delivery wake-ups are published after the answers, by a thread of their own:
    no 250 waits for the broker (a wake-up lost with the process is the sweeper's)."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-writer")
        self.publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-wake")
        self.waiting: list[tuple[Request, asyncio.Future[Placed]]] = []
        self.draining: asyncio.Task[None] | None = None
        self.batches = 0  # transactions committed or tried (for tests and statistics)

    async def place(self, request: Request) -> Placed:
        """Place one message; return once it is committed (raise when it could not be)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Placed] = loop.create_future()
        self.waiting.append((request, future))
        if self.draining is None:
            self.draining = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                batch = self.waiting[:BATCH_LIMIT]
                del self.waiting[:BATCH_LIMIT]
                self.batches += 1
                requests = [request for request, _ in batch]
                held: list[int] = []
                try:
                    results, held = await loop.run_in_executor(self.executor, _write_held, requests)
                except Exception as error:  # the thread itself failed: nobody is placed
                    results = [error] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # the session is gone (cancelled)
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                if held:
                    # Queued behind the sessions' replies (the futures' callbacks run first).
                    loop.call_soon(self.publisher.submit, _publish, held)
        finally:
            self.draining = None

    def shutdown(self) -> None:
        """Finish the batch in hand, then close the writer thread's connection."""
        self.executor.submit(connections.close_all)
        self.executor.shutdown(wait=True, cancel_futures=False)
        self.publisher.submit(connections.close_all)
        self.publisher.shutdown(wait=True, cancel_futures=False)


class BackgroundWork:
    """Coroutines a relay process runs on its loop beside the sessions (local deliveries,
    refusal events): kept until done so stopping can wait for them, and a failure logged."""

    def __init__(self, what: str) -> None:
        self.what = what  # how a failure is logged: "<what> failed: ..."
        self.tasks: set[asyncio.Future[Any]] = set()

    def start(self, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed: %r", self.what, task.exception())

    async def wait(self, timeout: float) -> None:
        """Until every one has finished, at most ``timeout`` seconds."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)


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
    writer: GroupWriter = field(default_factory=GroupWriter)

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
        self.writer.shutdown()
