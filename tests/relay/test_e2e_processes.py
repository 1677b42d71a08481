"""``runrelay --processes 2``: two intake processes on the same ports under one supervisor.

Real processes and sockets: both children take mail and report their own Current Sessions,
configuration changes and Terminate reach either, a child killed with -9 is replaced and its
sessions cleared, SIGTERM stops all (a message in DATA still gets its 250), kill -9 of the
parent takes the children with it, and local delivery happens in the parent."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings

from relay.models import QueueEntry
from relay.smtp.processes import available_cores
from servers.models import Server, SmtpSession, VirtualServer
from tests.relay.harness import free_port, process_environment, smtp, wait_for
from tests.relay.world import World, message

STARTUP = 30.0  # three Django processes on a shared machine
APPLY_WITHIN = 2.0  # seconds for a configuration change, as with one process
KEEP = 3  # sessions held per intake process


def children_of(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            facts = stat_of(int(entry.name))
            if facts is not None and facts[1] == pid and facts[0] != "Z":
                found.add(int(entry.name))
    return found


def stat_of(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent pid; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def alive(pid: int) -> bool:
    facts = stat_of(pid)
    return facts is not None and facts[0] != "Z"


def signal_quietly(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def close_quietly(client: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        client.close()


def noop(client: smtplib.SMTP) -> int:
    """NOOP's reply code; -1 once the relay has closed the connection."""
    try:
        return client.noop()[0]
    except (smtplib.SMTPServerDisconnected, OSError):
        return -1


def ended(client: smtplib.SMTP) -> bool:
    """Whether the relay ends this session within 3 seconds (421, then the connection closes)."""
    codes: list[int] = []

    def changed() -> bool:
        codes.append(noop(client))
        return codes[-1] != 250

    wait_for(changed, 3)
    return codes[-1] in (421, -1)


def greeting(port: int) -> int:
    """The code of a new connection's greeting; -1 when nothing accepts."""
    try:
        with smtp(port, timeout=2) as client:
            return client.noop()[0]
    except smtplib.SMTPConnectError as refused:
        return refused.smtp_code
    except (OSError, smtplib.SMTPException):
        return -1


def state_of(vs: VirtualServer) -> str:
    vs.refresh_from_db()
    return vs.state


@dataclass
class Relay:
    """``manage.py runrelay`` as a process, its output in a file, and the test's clients."""

    process: subprocess.Popen[bytes]
    log_path: Path
    server_name: str
    clients: list[smtplib.SMTP] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self, count: int) -> set[int]:
        """The intake processes, once there are ``count`` of them."""

        def running() -> set[int]:
            assert self.process.poll() is None, self.log()
            pids = children_of(self.pid)
            return pids if len(pids) == count else set()

        return wait_for(running, STARTUP)

    def hold_sessions(self, port: int, pids: set[int]) -> dict[int, list[smtplib.SMTP]]:
        """Open sessions (closed when the test ends) until each of ``pids`` holds one: the
        kernel spreads the connections over the intake processes. Returns them by process,
        at most ``KEEP`` each (the others are closed: the connection limits count them)."""
        by_pid: dict[int, list[smtplib.SMTP]] = {}

        def spread() -> bool:
            batch = []
            for _ in range(4):
                try:
                    client = smtp(port)
                except (OSError, smtplib.SMTPException):
                    break  # not listening yet
                client.ehlo()
                batch.append(client)
            self.clients.extend(batch)
            wait_for(lambda: placed(self.server_name, batch) or not batch, 5)
            by_pid.clear()
            for pid, clients in sessions_by_pid(self.server_name, self.clients).items():
                by_pid[pid] = clients[:KEEP]
                for extra in clients[KEEP:]:
                    close_quietly(extra)
                    self.clients.remove(extra)
            return pids <= set(by_pid)

        wait_for(spread, STARTUP, interval=0.1)
        return by_pid

    def close_clients(self) -> None:
        for client in self.clients:
            close_quietly(client)
        self.clients.clear()


def sessions_by_pid(server_name: str, clients: list[smtplib.SMTP]) -> dict[int, list[smtplib.SMTP]]:
    """Which intake process holds each client's session, from the Current Sessions rows: the
    key is ``<server>/<pid>/<n>`` and the client port tells the client."""
    rows = {
        row.client_port: int(row.key.split("/")[1])
        for row in SmtpSession.objects.filter(key__startswith=f"{server_name}/")
    }
    found: dict[int, list[smtplib.SMTP]] = {}
    for client in clients:
        if client.sock is None:
            continue
        pid = rows.get(client.sock.getsockname()[1])
        if pid is not None:
            found.setdefault(pid, []).append(client)
    return found


def placed(server_name: str, clients: list[smtplib.SMTP]) -> bool:
    """Whether every one of ``clients`` shows in Current Sessions."""
    found = sessions_by_pid(server_name, clients)
    return sum(len(held) for held in found.values()) == len(clients)


def session_pids() -> set[int]:
    return {int(key.split("/")[1]) for key in SmtpSession.objects.values_list("key", flat=True)}


Start = Callable[..., Relay]


@pytest.fixture
def start(world: World, tmp_path: Path) -> Iterator[Start]:
    """``start("--processes", "2")`` runs ``runrelay`` for the world's server; afterwards its
    clients are closed and any process left is killed."""
    started: list[Relay] = []

    def run(*arguments: str, **environment: str) -> Relay:
        log_path = tmp_path / f"runrelay-{len(started)}.log"
        command = [sys.executable, "manage.py", "runrelay", "--server", world.server.name]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [*command, "--interval", "0.2", "--grace", "10", *arguments],
                cwd=Path(settings.BASE_DIR),
                env=process_environment(SMTPADMIN_VAR_DIR=str(tmp_path / "var"), **environment),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, for Ctrl-C
            )
        relay = Relay(process, log_path, world.server.name)
        started.append(relay)
        return relay

    yield run
    for relay in started:
        relay.close_clients()
        family = children_of(relay.pid)
        if relay.process.poll() is None:
            relay.process.kill()
            relay.process.wait(10)
        for pid in family:
            signal_quietly(pid, signal.SIGKILL)


def send(client: smtplib.SMTP, subject: str = "Hello") -> None:
    assert client.sendmail("a@outside.test", ["alice@smtpadmin.test"], message(subject)) == {}


# --- tests ----------------------------------------------------------------------------------


def test_both_intake_processes_take_mail_and_report_their_own_sessions(
    world: World, start: Start
) -> None:
    relay = start("--processes", "2")
    pids = relay.children(2)
    held = relay.hold_sessions(world.port, pids)
    assert set(held) == pids
    # Each child's sessions are its own rows; neither report deletes the other's.
    wait_for(lambda: session_pids() == pids, 2)
    for pid, clients in held.items():
        send(clients[0], f"through {pid}")
    world.delivered("alice@smtpadmin.test", count=2)
    assert session_pids() == pids
    # The heartbeat comes from the parent, once for the server.
    world.server.refresh_from_db()
    assert world.server.status == Server.Status.RUNNING


def test_the_parent_delivers_local_mail_accepted_by_a_child(world: World, start: Start) -> None:
    relay = start("--processes", "2", LOG_LEVEL="DEBUG")
    pids = relay.children(2)
    held = relay.hold_sessions(world.port, pids)
    for clients in held.values():
        send(clients[0], "local")
    world.delivered("alice@smtpadmin.test", count=2)
    entries = QueueEntry.objects.filter(queue__kind="local").values_list("pk", flat=True)
    assert len(entries) == 2
    worker = f"{world.server.name}/{relay.pid}"
    lines = [f"queue entry {entry} delivered locally by {worker}" for entry in entries]
    wait_for(lambda: all(line in relay.log() for line in lines))


def test_configuration_changes_reach_every_intake_process(world: World, start: Start) -> None:
    relay = start("--processes", "2")
    pids = relay.children(2)
    relay.hold_sessions(world.port, pids)
    relay.close_clients()

    world.vs.pause()
    wait_for(lambda: state_of(world.vs) == VirtualServer.State.PAUSED, APPLY_WITHIN + 1)
    # Both processes apply it: every new connection, whichever process takes it, gets 421.
    wait_for(lambda: all(greeting(world.port) == 421 for _ in range(12)), APPLY_WITHIN)

    world.vs.start()
    old_port, new_port = world.port, free_port()
    world.configure(port=new_port)
    wait_for(lambda: greeting(new_port) == 250, APPLY_WITHIN + 1)
    # Both rebound: sessions on the new port land in both processes.
    assert set(relay.hold_sessions(new_port, pids)) == pids
    assert greeting(old_port) == -1
    relay.close_clients()

    world.vs.stop()
    wait_for(lambda: state_of(world.vs) == VirtualServer.State.STOPPED, APPLY_WITHIN + 1)
    wait_for(lambda: all(greeting(new_port) == -1 for _ in range(12)), APPLY_WITHIN)
    assert relay.process.poll() is None


def test_terminate_ends_a_session_in_either_process(world: World, start: Start) -> None:
    relay = start("--processes", "2")
    pids = relay.children(2)
    held = relay.hold_sessions(world.port, pids)
    victims = {pid: clients[0] for pid, clients in held.items()}
    ports = {client.sock.getsockname()[1] for client in victims.values() if client.sock}
    for row in SmtpSession.objects.filter(client_port__in=ports):
        row.request_termination()
    for client in victims.values():
        assert ended(client)
    survivors = [c for c in relay.clients if all(c is not v for v in victims.values())]
    assert all(noop(client) == 250 for client in survivors)
    wait_for(lambda: not SmtpSession.objects.filter(client_port__in=ports).exists(), 3)


def test_a_child_killed_with_9_is_replaced_and_its_sessions_cleared(
    world: World, start: Start
) -> None:
    relay = start("--processes", "2")
    pids = relay.children(2)
    held = relay.hold_sessions(world.port, pids)
    victim, survivor = sorted(pids)
    os.kill(victim, signal.SIGKILL)

    replaced: set[int] = wait_for(lambda: children_of(relay.pid) - pids, STARTUP)
    assert victim not in children_of(relay.pid)
    # The dead child's sessions are gone from Current Sessions, the other's remain.
    wait_for(lambda: victim not in session_pids(), 5)
    assert survivor in session_pids()
    assert all(noop(client) == 250 for client in held[survivor])
    # Mail is still accepted, by the survivor and by the new child alike.
    relay.close_clients()
    fresh = relay.hold_sessions(world.port, {survivor, *replaced})
    for clients in fresh.values():
        send(clients[0], "after the kill")
    assert "exited with SIGKILL; restarting" in relay.log()


def test_a_child_that_exits_is_restarted_and_the_virtual_server_stays_running(
    world: World, start: Start
) -> None:
    relay = start("--processes", "2")
    pids = relay.children(2)
    wait_for(lambda: state_of(world.vs) == VirtualServer.State.RUNNING, STARTUP)
    leaving = min(pids)
    os.kill(leaving, signal.SIGTERM)  # a clean exit, not asked for by the parent
    states = set()

    def replaced() -> bool:
        states.add(state_of(world.vs))
        return len(children_of(relay.pid) - pids) == 1

    wait_for(replaced, STARTUP)
    (new,) = children_of(relay.pid) - pids
    wait_for(lambda: f"'{world.server.name}' started (pid {new})" in relay.log(), STARTUP)
    watch_until = time.monotonic() + 1.5  # its first passes
    while time.monotonic() < watch_until:
        states.add(state_of(world.vs))
        time.sleep(0.02)
    # The other process kept serving all along: the virtual server never showed as stopped.
    assert states == {VirtualServer.State.RUNNING}
    assert greeting(world.port) == 250


def test_sigterm_stops_every_process_and_a_message_in_data_gets_its_250(
    world: World, start: Start
) -> None:
    relay = start("--processes", "2")
    pids = relay.children(2)
    held = relay.hold_sessions(world.port, pids)
    writers = [clients[0] for clients in held.values()]
    for client in writers:
        client.mail("a@outside.test")
        client.rcpt("alice@smtpadmin.test")
        assert client.docmd("DATA")[0] == 354
        client.send(b"Subject: last words\r\n\r\nhalf of it\r\n")

    relay.process.send_signal(signal.SIGTERM)
    wait_for(lambda: not any(noop(c) == 250 for c in relay.clients if c not in writers), 5)
    for client in writers:
        client.send(b"the other half\r\n.\r\n")
        code, reply = client.getreply()
        assert code == 250, reply
    assert relay.process.wait(30) == 0, relay.log()
    assert not any(alive(pid) for pid in pids)
    assert "Traceback" not in relay.log()
    assert state_of(world.vs) == VirtualServer.State.STOPPED
    assert not SmtpSession.objects.exists()
    assert len(world.delivered("alice@smtpadmin.test", count=2)) == 2


def test_ctrl_c_stops_the_process_group_without_restarting_a_child(
    world: World, start: Start
) -> None:
    relay = start("--processes", "2")
    pids = relay.children(2)
    relay.hold_sessions(world.port, pids)
    os.killpg(relay.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert relay.process.wait(30) == 0, relay.log()
    assert not any(alive(pid) for pid in pids)
    # The parent alone took the signal and stopped its children.
    assert relay.log().count("received SIGINT") == 1
    assert "restarting" not in relay.log()
    assert "Traceback" not in relay.log()


def test_kill_9_of_the_parent_takes_the_children_with_it(world: World, start: Start) -> None:
    relay = start("--processes", "2")
    pids = relay.children(2)
    relay.hold_sessions(world.port, pids)
    relay.process.kill()
    relay.process.wait(10)
    wait_for(lambda: not any(alive(pid) for pid in pids), 5)
    assert greeting(world.port) == -1


def test_a_port_held_by_a_foreign_socket_is_reported_disabled(world: World, start: Start) -> None:
    # A socket without SO_REUSEPORT: the intake processes cannot share its port.
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        busy = VirtualServer.objects.create(
            server=world.server, name="Busy", ip_address="127.0.0.1", port=blocker.getsockname()[1]
        )
        relay = start("--processes", "2")
        relay.children(2)
        wait_for(lambda: state_of(busy) == VirtualServer.State.DISABLED, STARTUP)
        assert "in use" in busy.state_reason.lower() or "98" in busy.state_reason
        assert greeting(world.port) == 250  # the others keep running
    finally:
        blocker.close()


def test_by_default_there_is_one_intake_process_per_core(
    world: World, start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMTPADMIN_RELAY_PROCESSES", raising=False)
    cores = available_cores()
    relay = start()
    if cores > 1:
        assert len(relay.children(cores)) == cores
        assert re.search(rf"running {cores} intake processes", relay.log())
    wait_for(lambda: greeting(world.port) == 250, STARTUP)


def test_one_process_runs_everything_itself(world: World, start: Start) -> None:
    relay = start("--processes", "1")
    wait_for(lambda: greeting(world.port) == 250, STARTUP)
    assert children_of(relay.pid) == set()
    with smtp(world.port) as client:
        send(client, "alone")
    world.delivered("alice@smtpadmin.test")


def connect_from(port: int, source: str) -> smtplib.SMTP | int:
    """A session from ``source`` (a loopback address), or the code of the refusal."""
    try:
        client = smtplib.SMTP(
            "127.0.0.1", port, local_hostname="client.test", timeout=10, source_address=(source, 0)
        )
    except smtplib.SMTPConnectError as refused:
        return refused.smtp_code
    client.ehlo()
    return client


def refused(port: int, source: str) -> bool:
    """Whether a new session from ``source`` is refused with 421 (one admitted is closed)."""
    client = connect_from(port, source)
    if isinstance(client, smtplib.SMTP):
        close_quietly(client)
        return False
    return client == 421


def test_connection_limits_count_the_sessions_of_both_processes(world: World, start: Start) -> None:
    relay = start("--processes", "2")
    pids = relay.children(2)
    relay.hold_sessions(world.port, pids)  # both listen
    relay.close_clients()
    world.configure(connection_limit=5, connection_limit_per_client=3)

    def hold(source: str) -> None:
        client = connect_from(world.port, source)
        assert isinstance(client, smtplib.SMTP), client
        relay.clients.append(client)

    for _ in range(3):
        hold("127.0.0.2")
    # Whichever process a fourth connection from that address reaches, it is one too many.
    wait_for(lambda: all(refused(world.port, "127.0.0.2") for _ in range(8)), APPLY_WITHIN + 1)
    for _ in range(2):
        hold("127.0.0.3")
    # Five in all: the virtual server is full for every other address too.
    assert all(refused(world.port, "127.0.0.4") for _ in range(8))
    relay.close_clients()
    wait_for(lambda: not refused(world.port, "127.0.0.4"), 5)
