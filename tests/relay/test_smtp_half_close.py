"""A client that half-closes its connection (shutdown(SHUT_WR), ``nc -N``) after pipelining its
commands still gets an answer to each, then the session ends; one that half-closes in the
middle of a message has nothing stored."""

from __future__ import annotations

import socket
from collections.abc import Callable

from relay.models import Message
from tests.relay.harness import RelayThread, wait_for
from tests.relay.wire import Wire, well_formed
from tests.relay.world import World, message

Relay = Callable[..., RelayThread]

TRANSACTION = (
    b"EHLO client.test\r\nMAIL FROM:<a@outside.test>\r\nRCPT TO:<alice@smtpadmin.test>\r\n"
    b"DATA\r\n" + message() + b".\r\n"
)


def test_a_half_closed_client_gets_every_answer(world: World, relay: Relay) -> None:
    worker = relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        wire.send(TRANSACTION + b"QUIT\r\n")
        wire.sock.shutdown(socket.SHUT_WR)
        rest = wire.rest().split(b"\r\n")
    codes = [line[:3] for line in rest if line[3:4] == b" "]
    assert codes == [b"250", b"250", b"250", b"354", b"250", b"221"], rest
    assert Message.objects.count() == 1
    wait_for(lambda: worker.session_count(world.vs) == 0)


def test_a_half_closed_client_without_quit_gets_its_answers_then_the_session_ends(
    world: World, relay: Relay
) -> None:
    worker = relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        wire.send(TRANSACTION)
        wire.sock.shutdown(socket.SHUT_WR)
        lines = [line + b"\r\n" for line in wire.rest().split(b"\r\n") if line]
    assert lines[-1].startswith(b"250 2.6.0"), lines
    assert all(well_formed(line) for line in lines)
    assert Message.objects.count() == 1
    wait_for(lambda: worker.session_count(world.vs) == 0)


def test_a_client_that_half_closes_inside_a_message_has_nothing_stored(
    world: World, relay: Relay
) -> None:
    worker = relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(message() + b"no end of data here\r\n")
        wire.sock.shutdown(socket.SHUT_WR)
        assert wire.rest() == b""
    wait_for(lambda: worker.session_count(world.vs) == 0)
    assert not Message.objects.exists()
