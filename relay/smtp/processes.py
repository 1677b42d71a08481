"""Several intake processes on the same listening sockets, and the supervisor above them.

One asyncio loop is held to one core by the GIL, so ``runrelay`` runs N intake processes
(``--processes``, ``SMTPADMIN_RELAY_PROCESSES``) under a parent:

* each intake process runs the listen stage (``relay.smtp.supervisor`` in its ``IntakeRole``)
  for every virtual server of the server, bound with SO_REUSEPORT so the kernel spreads the
  connections over them; it follows configuration changes itself, reports its listener states
  and its own Current Sessions (keys ``<server>/<pid>/...``) and carries out Terminate for them;
* the parent writes the heartbeat and runs the local-delivery stage: the Maildir drop folder is
  on this node's disk, and writing it costs CPU that intake no longer pays. The children write
  the ids of the queue entries to deliver now into a pipe each, which the parent's loop reads;
  due entries are swept every few seconds as before. The parent restarts a child that dies
  (backing off when it keeps dying) after removing that child's sessions, and on SIGTERM or
  SIGINT stops the children (sessions in DATA finish within the grace period) and exits once
  they have.

Children are started with fork + exec of ``manage.py runrelay`` rather than a bare fork: the
parent restarts children while its event loop and database threads run, and a fork of a
threaded process can deadlock in the child on a lock another thread held; exec also gives each
child fresh database connections. A child dies with its parent: PR_SET_PDEATHSIG where the
kernel has it, and a getppid() check on every pass everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.utils import timezone

from relay.local import deliver_due_local, deliver_local
from relay.smtp.runtime import BackgroundWork, RelayRuntime
from relay.smtp.shared_counts import SharedCounts, create_table
from relay.smtp.supervisor import LOCAL_SWEEP_SECONDS, heartbeat
from servers.models import Server, VirtualServer
from servers.models.sessions import sync_live_sessions

log = logging.getLogger("relay.processes")

T = TypeVar("T")
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
STABLE_SECONDS = 60.0  # a child that ran this long before dying starts the back-off afresh
MAX_RESTART_DELAY = 30.0
STOP_MARGIN = 10.0  # beyond the grace period, before children that will not stop are killed
READ_SIZE = 65536


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def intake_processes(requested: int | None, configured: int, cores: int) -> int:
    """How many intake processes to run: ``--processes`` when given, else the setting; 0 means
    one per core."""
    wanted = configured if requested is None else requested
    return wanted if wanted > 0 else max(1, cores)


def restart_delay(crashes: int) -> float:
    """Seconds before restarting a child that died after ``crashes`` quick deaths in a row:
    at once the first time, then doubling, at most ``MAX_RESTART_DELAY``."""
    if crashes <= 1:
        return 0.0
    return float(min(MAX_RESTART_DELAY, 0.5 * 2 ** (crashes - 2)))


def entry_ids(lines: Iterable[bytes]) -> list[int]:
    """The queue entry ids in lines a child wrote (one decimal id a line); others are ignored."""
    return [int(line) for line in (raw.strip() for raw in lines) if line.isdigit()]


def session_scope(server_name: str, pid: int) -> str:
    """The key prefix of one process's Current Sessions rows (``Supervisor.session_scope``)."""
    return f"{server_name}/{pid}/"


def child_command(
    server_name: str,
    *,
    interval: float,
    grace: float,
    parent_pid: int,
    pipe: int,
    counts: tuple[int, int] | None = None,
) -> list[str]:
    """``counts``: the shared connection counts' file descriptor and the child's row."""
    shared = (
        []
        if counts is None
        else ["--intake-counts", str(counts[0]), "--intake-row", str(counts[1])]
    )
    return [
        sys.executable,
        str(Path(settings.BASE_DIR) / "manage.py"),
        "runrelay",
        "--server",
        server_name,
        "--interval",
        repr(interval),
        "--grace",
        repr(grace),
        "--intake-of",
        str(parent_pid),
        "--intake-pipe",
        str(pipe),
        *shared,
        "--skip-checks",  # the parent ran them
    ]


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel for SIGKILL when the parent dies; False when it is already gone. A relay
    killed with -9 goes as a whole, as one process would: its sessions break off, mail not yet
    answered 250 is the client's to send again, and no orphan keeps taking connections."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before the request: then we were already handed to init.
    return os.getppid() == parent_pid


class PipeWriter:
    """A child's end of its pipe: it writes the queue entries the parent delivers locally."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, True)
        self.broken = False

    def __call__(self, ids: Sequence[int]) -> None:
        data = "".join(f"{entry_id}\n" for entry_id in ids).encode()
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as error:
            # The parent is gone: the entries stay due and the next sweep delivers them.
            if not self.broken:
                log.warning("cannot hand local deliveries to the supervisor: %s", error)
            self.broken = True


@dataclasses.dataclass
class Child:
    """One intake process as the parent sees it."""

    slot: int
    process: subprocess.Popen[bytes]
    pipe: int  # the read end
    started_at: float
    pending: bytes = b""

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclasses.dataclass
class Slot:
    """A place for one intake process; its child is replaced when it dies."""

    number: int
    child: Child | None = None
    crashes: int = 0  # quick deaths in a row
    restart_at: float = 0.0


class ProcessSupervisor:
    """The parent of the intake processes: heartbeat, local delivery, children kept running."""

    def __init__(
        self,
        server: Server,
        *,
        processes: int,
        interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        grace: float = 30.0,
        version: str = "",
        address: str = "",
    ) -> None:
        self.server_id = server.pk
        self.server_name = server.name
        self.interval = interval
        self.heartbeat_interval = heartbeat_interval
        self.grace = grace
        self.version = version
        self.address = address
        self.runtime = RelayRuntime(worker=f"{server.name}/{os.getpid()}")
        self.slots = [Slot(number) for number in range(processes)]
        self.counts_fd = create_table(processes)
        self.counts = None if self.counts_fd is None else SharedCounts(self.counts_fd, processes, 0)
        self.work = BackgroundWork("local delivery")
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()
        self.last_heartbeat = 0.0
        self.last_sweep = 0.0

    @property
    def worker(self) -> str:
        return self.runtime.worker

    def stop(self) -> None:
        self.stopping.set()

    def background(self, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        return self.work.start(work)

    # --- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            # Rows a previous run left behind (killed with -9) belong to no process any more.
            await self._guarded(self.runtime.run(sync_live_sessions, self.server_id, []))
            for slot in self.slots:
                self.start_child(slot)
            tick = min(self.interval, 0.5)
            while not self.stopping.is_set():
                try:
                    await self.run_pass()
                except Exception:
                    log.exception("relay supervisor pass failed; retrying")
                self.started.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), tick)
        finally:
            await self.shutdown()

    async def run_pass(self) -> None:
        now = time.monotonic()
        await self.reap()
        for slot in self.slots:
            if slot.child is None and now >= slot.restart_at and not self.stopping.is_set():
                self.start_child(slot)
        if now - self.last_heartbeat >= self.heartbeat_interval:
            await self.runtime.run(heartbeat, self.server_id, self.version, self.address)
            self.last_heartbeat = now
        if now - self.last_sweep >= LOCAL_SWEEP_SECONDS:
            self.last_sweep = now
            self.background(self.runtime.run(deliver_due_local, self.server_id, self.worker))

    # --- children -----------------------------------------------------------------------------
    def start_child(self, slot: Slot) -> None:
        read_end, write_end = os.pipe()
        shared = None if self.counts_fd is None else (self.counts_fd, slot.number)
        if self.counts is not None:
            self.counts.clear_row(slot.number)  # what the previous child held
        try:
            process = subprocess.Popen(  # noqa: S603 -- this interpreter, our own manage.py
                child_command(
                    self.server_name,
                    interval=self.interval,
                    grace=self.grace,
                    parent_pid=os.getpid(),
                    pipe=write_end,
                    counts=shared,
                ),
                pass_fds=(write_end,) if self.counts_fd is None else (write_end, self.counts_fd),
                cwd=Path(settings.BASE_DIR),
            )
        except OSError as error:
            os.close(read_end)
            slot.crashes += 1
            slot.restart_at = time.monotonic() + max(1.0, restart_delay(slot.crashes))
            log.error("cannot start intake process %d: %s", slot.number + 1, error)
            return
        finally:
            os.close(write_end)
        os.set_blocking(read_end, False)
        child = Child(slot.number, process, read_end, time.monotonic())
        slot.child = child
        asyncio.get_running_loop().add_reader(read_end, self.read_pipe, child)
        log.info("intake process %d started (pid %d)", slot.number + 1, child.pid)

    def read_pipe(self, child: Child) -> None:
        """Deliver the queue entries a child says are ready for local delivery."""
        try:
            data = os.read(child.pipe, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the child has gone; reap() takes it from here
            asyncio.get_running_loop().remove_reader(child.pipe)
            return
        *lines, child.pending = (child.pending + data).split(b"\n")
        for entry_id in entry_ids(lines):
            self.background(self.deliver(entry_id))

    async def deliver(self, entry_id: int) -> None:
        if await self.runtime.run(deliver_local, entry_id, self.worker):
            log.debug("queue entry %d delivered locally by %s", entry_id, self.worker)

    async def reap(self) -> None:
        """Take note of children that died: remove their sessions, plan their restart."""
        for slot in self.slots:
            child = slot.child
            if child is None or child.process.poll() is None:
                continue
            slot.child = None
            if self.counts is not None:
                self.counts.clear_row(slot.number)  # its sessions are gone
            self.drain(child)
            lived = time.monotonic() - child.started_at
            slot.crashes = 1 if lived >= STABLE_SECONDS else slot.crashes + 1
            delay = restart_delay(slot.crashes)
            slot.restart_at = time.monotonic() + delay
            if not self.stopping.is_set():
                log.warning(
                    "intake process %d (pid %d) exited with %s; restarting in %.1f s",
                    slot.number + 1,
                    child.pid,
                    describe_exit(child.process.returncode),
                    delay,
                )
            await self.forget_sessions(child)

    def drain(self, child: Child) -> None:
        """Read what a dead child wrote last, then close its pipe."""
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(child.pipe)
        with contextlib.suppress(OSError):
            while True:
                data = os.read(child.pipe, READ_SIZE)
                if not data:
                    break
                child.pending += data
        with contextlib.suppress(OSError):
            os.close(child.pipe)
        for entry_id in entry_ids(child.pending.split(b"\n")):
            self.background(self.deliver(entry_id))
        child.pending = b""

    async def forget_sessions(self, child: Child) -> None:
        scope = session_scope(self.server_name, child.pid)
        await self._guarded(self.runtime.run(sync_live_sessions, self.server_id, [], scope=scope))

    async def _guarded(self, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except Exception:
            log.exception("the relay supervisor could not write to the database")

    # --- stopping -----------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop the children (sessions in DATA finish within the grace period), then finish
        the local deliveries in hand."""
        self.stopping.set()
        children = [slot.child for slot in self.slots if slot.child is not None]
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + STOP_MARGIN
        while any(c.process.poll() is None for c in children) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the pipes are still read meanwhile
        for child in children:
            if child.process.poll() is None:
                log.error("intake process pid %d did not stop; killing it", child.pid)
                child.process.kill()
                child.process.wait()
        await self.reap()
        await self.work.wait(self.grace)
        await self._guarded(self.runtime.run(report_stopped, self.server_id))
        self.runtime.shutdown()
        if self.counts_fd is not None:
            os.close(self.counts_fd)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-returncode).name
    return f"code {returncode}"


def report_stopped(server_id: int) -> None:
    """Listeners of children that could not say so themselves (killed) are stopped too."""
    VirtualServer.objects.filter(server_id=server_id).filter(
        state__in=[
            VirtualServer.State.RUNNING,
            VirtualServer.State.PAUSED,
            VirtualServer.State.DISABLED,
        ]
    ).update(
        state=VirtualServer.State.STOPPED,
        state_reason="The relay worker stopped.",
        state_changed_at=timezone.now(),
    )
