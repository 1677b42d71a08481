"""The listen stage: keeps one aiosmtpd listener per enabled virtual server of this server.

Every pass (a second by default) the supervisor reads the configuration in a worker thread and
reconciles: a new virtual server starts listening, a stopped or deleted one closes (its sessions
are ended, those in DATA may finish), a changed address or port rebinds, and every other change
reaches the sessions that start afterwards. Paused listeners keep their socket and answer new
clients 421. A listener that cannot bind is reported "disabled" with the reason and retried;
the others keep running. The pass also reports states, the live sessions (Current Sessions)
and carries out Terminate requests; every few seconds it writes the heartbeat and sweeps due
local deliveries.

With several intake processes (relay.smtp.processes) each runs this supervisor in its
``IntakeRole``: its listeners share the ports (SO_REUSEPORT), it reports only its own sessions,
hands local deliveries to the parent and leaves the heartbeat and the due sweep to it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.utils import timezone

from connectors.snapshot import Topology
from relay.delivery.dsn import report_refused
from relay.local import deliver_due_local, deliver_local
from relay.smtp import policy
from relay.smtp.addresses import Reply
from relay.smtp.config import ListenerConfig
from relay.smtp.loader import RelayConfiguration, load
from relay.smtp.protocol import RelaySMTP
from relay.smtp.protocol_log import ProtocolLog
from relay.smtp.runtime import BackgroundWork, RelayRuntime
from relay.smtp.shared_counts import SharedCounts
from relay.smtp.tls import TlsContexts
from servers.models import Server, VirtualServer
from servers.models.sessions import SessionFacts, sync_live_sessions

log = logging.getLogger("relay.smtp")

BIND_RETRY_SECONDS = 10.0
LOCAL_SWEEP_SECONDS = 5.0
T = TypeVar("T")
SHUTDOWN_REPLY = "421 4.3.2 Service shutting down, closing transmission channel"


@dataclass(frozen=True)
class IntakeRole:
    """This process is one of several intake processes under a parent supervisor."""

    parent_pid: int  # it stops when this process is no longer its parent
    hand_over: Callable[[Sequence[int]], None]  # queue entries the parent delivers locally now
    counts: SharedCounts | None = None  # admitted sessions of every intake process


class Listener:
    """One virtual server's listening socket(s) and its live sessions."""

    def __init__(self, supervisor: Supervisor, config: ListenerConfig) -> None:
        self.supervisor = supervisor
        self.runtime = supervisor.runtime
        self.config = config
        self.server: asyncio.AbstractServer | None = None
        self.bound: tuple[str | None, int] | None = None
        self.sessions: dict[RelaySMTP, str] = {}
        # The sessions holding a connection slot (admitted, or past the limits and still
        # being checked), and how many of them each client address holds.
        self.slots: set[RelaySMTP] = set()
        self.slots_by_client: collections.Counter[str] = collections.Counter()
        self.tls_context: ssl.SSLContext | None = None
        self.protocol_log: ProtocolLog | None = None
        self.topology: Topology | None = None  # refreshed every pass
        self.state = VirtualServer.State.STOPPED.value
        self.reason = ""
        self.retry_at = 0.0

    # --- used by the sessions ----------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return self.config.desired_state == VirtualServer.DesiredState.PAUSED

    def take_slot(self, session: RelaySMTP) -> Reply | None:
        """Count ``session`` against the connection limits, or say why it may not connect.
        Check and count happen in one step on the loop, so a burst cannot overshoot."""
        if session in self.slots:
            return None
        client = session.client_address
        shared = self.supervisor.shared_counts
        vs_id = session.config.id
        refusal = policy.connection_limit_reply(
            len(self.slots) if shared is None else shared.sessions(vs_id),
            session.config,
            client_ip=client,
            from_client=(
                self.slots_by_client[client]
                if shared is None
                else shared.from_client(vs_id, client)
            ),
        )
        # A session already gone (unregistered) must not take a slot nobody would give back.
        if refusal is None and session in self.sessions:
            self.slots.add(session)
            self.slots_by_client[client] += 1
            if shared is not None:
                shared.take(vs_id, client)
        return refusal

    def release_slot(self, session: RelaySMTP) -> None:
        """Give back the slot ``session`` holds; nothing when it holds none."""
        if session not in self.slots:
            return
        self.slots.discard(session)
        client = session.client_address
        if self.supervisor.shared_counts is not None:
            self.supervisor.shared_counts.give_back(session.config.id, client)
        self.slots_by_client[client] -= 1
        if self.slots_by_client[client] <= 0:
            del self.slots_by_client[client]

    def register(self, session: RelaySMTP) -> None:
        self.sessions[session] = self.supervisor.new_session_key()

    def unregister(self, session: RelaySMTP) -> None:
        self.release_slot(session)
        self.sessions.pop(session, None)

    def local_address(self, transport: Any) -> str:
        if transport is None:
            return "-"
        name = transport.get_extra_info("sockname") or ("-",)
        return str(name[0])

    def background(self, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        return self.supervisor.background(work)

    def deliver_local_soon(self, entry_ids: Iterable[int]) -> None:
        self.supervisor.deliver_local_soon(entry_ids)

    def report_refused_soon(self, message_pk: int) -> None:
        self.supervisor.report_refused_soon(message_pk)

    # --- managed by the supervisor -------------------------------------------------------------
    def configure(self, config: ListenerConfig, configuration: RelayConfiguration) -> None:
        """New settings for sessions that start from now on."""
        self.config = config
        self.tls_context = None
        if config.certificate_id is not None:
            pem = configuration.certificates.get(config.certificate_id)
            if pem is not None:
                try:
                    self.tls_context = self.supervisor.tls.get(
                        config.certificate_id, config.certificate_fingerprint, pem
                    )
                except (ssl.SSLError, OSError, ValueError) as error:
                    log.error("certificate of '%s' cannot be used: %s", config.name, error)
        if config.logging_enabled:
            if self.protocol_log is None:
                self.protocol_log = ProtocolLog(
                    config.id, site_name=f"SMTPSVC{config.id}", computer_name=config.server_name
                )
        elif self.protocol_log is not None:
            self.protocol_log.close()
            self.protocol_log = None

    async def bind(self) -> bool:
        loop = asyncio.get_running_loop()
        host, port = self.config.binding
        try:
            self.server = await loop.create_server(
                lambda: RelaySMTP(self),
                host=host,
                port=port,
                reuse_address=True,
                # Intake processes share the port; a foreign socket without it still refuses us.
                reuse_port=True if self.supervisor.intake is not None else None,
            )
        except OSError as error:
            self.server = None
            self.bound = None
            self.retry_at = time.monotonic() + BIND_RETRY_SECONDS
            where = f"{host or '(All Unassigned)'}:{port}"
            self.set_state(VirtualServer.State.DISABLED, f"Cannot listen on {where}: {error}")
            log.error("virtual server '%s': %s", self.config.name, self.reason)
            return False
        self.bound = (host, port)
        log.info("virtual server '%s' listening on %s", self.config.name, self.describe())
        return True

    def describe(self) -> str:
        if self.server is None:
            return "-"
        return ", ".join(
            "[{}]:{}".format(*s.getsockname()[:2])
            if s.family == socket.AF_INET6
            else "{}:{}".format(*s.getsockname()[:2])
            for s in getattr(self.server, "sockets", ())
        )

    def unbind(self) -> None:
        if self.server is not None:
            self.server.close()
            log.info("virtual server '%s' stopped listening", self.config.name)
        self.server = None
        self.bound = None

    def set_state(self, state: str, reason: str = "") -> None:
        self.state, self.reason = str(state), reason

    async def reconcile(self) -> None:
        config = self.config
        if config.desired_state == VirtualServer.DesiredState.STOPPED:
            self.unbind()
            self.end_sessions(SHUTDOWN_REPLY)
            self.set_state(VirtualServer.State.STOPPED)
            return
        if self.server is not None and self.bound != config.binding:
            self.unbind()  # sessions on the old address go on until they end
        if self.server is None:
            if self.state == VirtualServer.State.DISABLED and time.monotonic() < self.retry_at:
                return
            if not await self.bind():
                return
        if self.paused:
            self.set_state(VirtualServer.State.PAUSED)
        else:
            self.set_state(VirtualServer.State.RUNNING)

    def end_sessions(self, reply: str, *, spare_data: bool = True) -> None:
        """Close the sessions; with ``spare_data``, one in the middle of DATA gets its answer
        first and is closed right after it."""
        for session in list(self.sessions):
            if spare_data and session.in_data:
                session.close_after_data = reply
            else:
                session.terminate(reply)

    async def close(self) -> None:
        self.unbind()
        self.end_sessions(SHUTDOWN_REPLY)
        if self.protocol_log is not None:
            self.protocol_log.close()
            self.protocol_log = None


class Supervisor:
    def __init__(
        self,
        server: Server,
        *,
        interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        grace: float = 30.0,
        version: str = "",
        address: str = "",
        intake: IntakeRole | None = None,
    ) -> None:
        self.intake = intake
        # Connection limits count the sessions of every intake process of this server.
        self.shared_counts = intake.counts if intake is not None else None
        self.server_id = server.pk
        self.server_name = server.name
        self.interval = interval
        self.heartbeat_interval = heartbeat_interval
        self.grace = grace
        self.version = version
        self.address = address
        self.runtime = RelayRuntime(worker=f"{server.name}/{os.getpid()}")
        # An intake process reports its own sessions only; alone, every session of the server.
        self.session_scope = f"{self.runtime.worker}/" if intake is not None else ""
        self.tls = TlsContexts()
        self.listeners: dict[int, Listener] = {}
        self.configuration: RelayConfiguration | None = None
        self.reported: dict[int, tuple[str, str]] = {}
        self.work = BackgroundWork("background work")
        self.session_counter = 0
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()  # set after the first pass (tests wait for it)
        self.last_heartbeat = 0.0
        self.last_sweep = 0.0

    # --- helpers for listeners --------------------------------------------------------------
    def new_session_key(self) -> str:
        self.session_counter += 1
        return f"{self.runtime.worker}/{self.session_counter}"

    def background(self, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Run ``work`` on the loop; stopping waits for it (a grace period at most)."""
        return self.work.start(work)

    def deliver_local_soon(self, entry_ids: Iterable[int]) -> None:
        if self.intake is not None:
            wanted = list(entry_ids)
            if wanted:
                self.intake.hand_over(wanted)
            return
        for entry_id in entry_ids:
            self.background(self.runtime.run(deliver_local, entry_id, self.runtime.worker))

    def report_refused_soon(self, message_pk: int) -> None:
        """The NDR for recipients routing refused after the 250, then its local delivery
        (the sweeper sends it later when this fails)."""

        async def report() -> None:
            local = await self.runtime.run(report_refused, message_pk)
            self.deliver_local_soon(local)

        self.background(report())

    # --- the loop -----------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if self.intake is not None and os.getppid() != self.intake.parent_pid:
                    log.warning("the relay supervisor is gone; this intake process stops")
                    self.stop()
                    break
                try:
                    await self.run_pass()
                except Exception:
                    # A database outage must not kill the listeners: log and try again.
                    log.exception("relay supervisor pass failed; retrying")
                self.started.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.interval)
        finally:
            await self.shutdown()

    async def run_pass(self) -> None:
        now = time.monotonic()
        alone = self.intake is None  # otherwise the parent writes the heartbeat and sweeps
        if alone and now - self.last_heartbeat >= self.heartbeat_interval:
            await self.runtime.run(heartbeat, self.server_id, self.version, self.address)
            self.last_heartbeat = now
        configuration = await self.runtime.run(load, self.server_id, self.configuration)
        await self.apply(configuration)
        await self.report()
        if alone and now - self.last_sweep >= LOCAL_SWEEP_SECONDS:
            self.last_sweep = now
            self.background(
                self.runtime.run(deliver_due_local, self.server_id, self.runtime.worker)
            )

    async def apply(self, configuration: RelayConfiguration) -> None:
        self.configuration = configuration
        self.runtime.organization = configuration.organization
        self.runtime.directory = configuration.directory
        wanted = {config.id: config for config in configuration.listeners}
        for vs_id in list(self.listeners):
            if vs_id not in wanted:
                gone = self.listeners.pop(vs_id)
                log.info("virtual server '%s' was deleted", gone.config.name)
                await gone.close()
        for vs_id, config in wanted.items():
            listener = self.listeners.get(vs_id) or Listener(self, config)
            self.listeners[vs_id] = listener
            if listener.config != config or listener.server is None:
                listener.configure(config, configuration)
            listener.topology = configuration.topologies.get(vs_id)
            await listener.reconcile()

    async def report(self) -> None:
        """Write changed listener states and the live sessions; carry out Terminate."""
        states = {
            vs_id: (listener.state, listener.reason) for vs_id, listener in self.listeners.items()
        }
        changed = {k: v for k, v in states.items() if self.reported.get(k) != v}
        if changed:
            await self.runtime.run(report_states, changed)
            self.reported.update(changed)
        facts = [
            session_facts(listener.config.id, key, session)
            for listener in self.listeners.values()
            for session, key in listener.sessions.items()
        ]
        terminate = await self.runtime.run(
            sync_live_sessions, self.server_id, facts, scope=self.session_scope
        )
        if terminate:
            for listener in self.listeners.values():
                for session, key in list(listener.sessions.items()):
                    if key in terminate:
                        session.terminate()

    async def shutdown(self) -> None:
        """Stop accepting, let sessions in DATA finish (at most ``grace`` seconds), close."""
        for listener in self.listeners.values():
            listener.unbind()
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            for listener in self.listeners.values():
                listener.end_sessions(SHUTDOWN_REPLY)
            if not any(listener.sessions for listener in self.listeners.values()):
                break
            await asyncio.sleep(0.05)
        for listener in self.listeners.values():
            listener.end_sessions(SHUTDOWN_REPLY, spare_data=False)
            await listener.close()
        await self.work.wait(self.grace)
        try:
            stopped = {
                vs_id: (VirtualServer.State.STOPPED.value, "The relay worker stopped.")
                for vs_id in self.listeners
            }
            # The other intake processes may still be serving: the parent reports the stop.
            if self.intake is None:
                await self.runtime.run(report_states, stopped)
            await self.runtime.run(sync_live_sessions, self.server_id, [], scope=self.session_scope)
        except Exception:
            log.exception("could not report the stop")
        self.runtime.shutdown()


def session_facts(virtual_server_id: int, key: str, session: RelaySMTP) -> SessionFacts:
    return SessionFacts(
        virtual_server_id=virtual_server_id,
        key=key,
        client_address=session.client_address,
        client_port=session.client_port,
        client_name=session.client_name or "",
        helo=session.helo,
        auth_user=session.login_name,
        tls=session.tls,
        connected_at=datetime.datetime.fromtimestamp(session.connected_at, tz=datetime.UTC),
        messages=session.messages,
    )


def heartbeat(server_id: int, version: str, address: str) -> None:
    Server.objects.filter(pk=server_id).update(
        last_seen=timezone.now(), version=version, address=address
    )


def report_states(states: dict[int, tuple[str, str]]) -> None:
    now = timezone.now()
    for vs_id, (state, reason) in states.items():
        VirtualServer.objects.filter(pk=vs_id).update(
            state=state, state_reason=reason[:300], state_changed_at=now
        )
