"""The connection limits over real sockets: the virtual server's total and the new limit per
client address. Only admitted sessions hold a slot; one that is being refused frees nothing."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.relay.harness import RelayThread, wait_for
from tests.relay.world import World

Relay = Callable[..., RelayThread]


class Client:
    """A raw SMTP connection that reads only the greeting (and keeps the slot it got)."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 10, source_address=(source, 0))
        self.reader = self.sock.makefile("rb")

    def greeting(self) -> str:
        return self.reader.readline().decode()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    with ExitStack() as stack:

        def connect(port: int, source: str = "127.0.0.1") -> Client:
            client = Client(port, source)
            stack.callback(client.close)
            return client

        yield connect


def burst(worker: RelayThread, port: int, count: int) -> list[str]:
    """``count`` clients connecting at once: the relay's loop is held while they connect, so
    it finds them all waiting together, as it would under a flood. Their greetings."""
    assert worker.loop is not None
    gate = threading.Event()
    worker.loop.call_soon_threadsafe(gate.wait, 10)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        gate.set()
        greetings = []
        for sock in socks:
            # Past the listen backlog, the kernel completes a connection a little later.
            select.select([], [sock], [], 10)
            sock.setblocking(True)
            sock.settimeout(10)
            with sock.makefile("rb") as reader:
                greetings.append(reader.readline().decode())
        return greetings
    finally:
        gate.set()
        for sock in socks:
            sock.close()


def slots(worker: RelayThread, world: World) -> tuple[int, dict[str, int]]:
    """The slots the relay counts for the virtual server: in all and per client address."""

    def count() -> tuple[int, dict[str, int]]:
        assert worker.supervisor is not None
        listener = worker.supervisor.listeners[world.vs.pk]
        return len(listener.slots), dict(listener.slots_by_client)

    return worker.call(count)


def test_a_burst_of_200_against_a_limit_of_50_admits_exactly_50(
    world: World, relay: Relay, clients: Callable[..., Client]
) -> None:
    world.configure(connection_limit=50, connection_limit_per_client=None)
    worker = relay(world.server)
    greetings = burst(worker, world.port, 200)
    codes = [greeting[:3] for greeting in greetings]
    assert codes.count("220") == 50, sorted(set(greetings))
    assert codes.count("421") == 150
    assert all(g.startswith("421 4.4.5 Too many connections") for g in greetings if g[:3] == "421")
    # The 50 are closed by now: their slots are free again, and a second burst gets 50 too.
    wait_for(lambda: slots(worker, world) == (0, {}))
    assert [g[:3] for g in burst(worker, world.port, 80)].count("220") == 50


def test_the_21st_connection_from_one_address_is_refused_by_default(
    world: World, relay: Relay, clients: Callable[..., Client]
) -> None:
    assert world.vs.connection_limit_per_client == 20
    worker = relay(world.server)
    admitted = [clients(world.port) for _ in range(20)]
    assert [c.greeting()[:3] for c in admitted] == ["220"] * 20
    refused = clients(world.port).greeting()
    assert refused.startswith(
        "421 4.7.0 Too many connections from 127.0.0.1 (limit 20 per client address)"
    ), refused
    # Another client address still gets in.
    assert clients(world.port, "127.0.0.2").greeting()[:3] == "220"
    assert slots(worker, world) == (21, {"127.0.0.1": 20, "127.0.0.2": 1})


def test_a_refused_connection_frees_no_slot_it_did_not_hold(
    world: World, relay: Relay, clients: Callable[..., Client]
) -> None:
    world.configure(connection_limit_per_client=2)
    worker = relay(world.server)
    first, second = clients(world.port), clients(world.port)
    assert (first.greeting()[:3], second.greeting()[:3]) == ("220", "220")
    for _ in range(5):  # refused, and gone: the two slots stay taken
        assert clients(world.port).greeting()[:3] == "421"
    wait_for(lambda: worker.session_count(world.vs) == 2)
    assert slots(worker, world) == (2, {"127.0.0.1": 2})
    assert clients(world.port).greeting()[:3] == "421"
    # An admitted one leaving frees its slot.
    first.close()
    wait_for(lambda: slots(worker, world)[0] == 1)
    assert clients(world.port).greeting()[:3] == "220"


def test_sessions_refused_by_connection_control_hold_no_slot(
    world: World, relay: Relay, clients: Callable[..., Client]
) -> None:
    world.configure(
        connection_limit=1,
        connection_mode="all_except_listed",
        connection_list=["127.0.0.3"],
    )
    worker = relay(world.server)
    denied = [clients(world.port, "127.0.0.3") for _ in range(3)]
    assert [c.greeting()[:3] for c in denied] == ["554"] * 3
    # The denied client never held the only slot, even while its sockets are open.
    assert clients(world.port).greeting()[:3] == "220"
    assert slots(worker, world) == (1, {"127.0.0.1": 1})


def test_zero_means_no_limit_per_client(
    world: World, relay: Relay, clients: Callable[..., Client]
) -> None:
    world.configure(connection_limit_per_client=0)
    relay(world.server)
    many = [clients(world.port) for _ in range(30)]
    assert {c.greeting()[:3] for c in many} == {"220"}
