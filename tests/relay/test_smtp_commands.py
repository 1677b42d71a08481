"""The session's command table: aiosmtpd's commands found once per class, every command run
through the session's one dispatch point (rate, junk limit, protocol log), and what HELP
reads of a command (its syntax) kept; the command rate budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from relay.smtp import protocol
from relay.smtp.config import ListenerConfig, OrganizationPolicy
from relay.smtp.protocol import CommandTable, RelaySMTP
from tests.relay.harness import RelayThread
from tests.relay.wire import Wire
from tests.relay.world import World

Relay = Callable[..., RelayThread]


def sessions_of(worker: RelayThread, world: World) -> list[RelaySMTP]:
    assert worker.supervisor is not None
    return list(worker.supervisor.listeners[world.vs.pk].sessions)


def test_help_names_the_commands_and_their_syntax(world: World, relay: Relay) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        listed = wire.command(b"HELP")
        assert listed.startswith(b"250 Supported commands: ")
        assert {b"AUTH", b"DATA", b"EHLO", b"MAIL", b"QUIT", b"RCPT"} <= set(listed.split()[3:])
        assert wire.command(b"HELP MAIL").startswith(b"250 Syntax: MAIL FROM: <address>")


def test_sessions_share_the_class_command_table_and_bind_a_command_once(
    world: World, relay: Relay
) -> None:
    worker = relay(world.server)
    with Wire(world.port) as one, Wire(world.port) as two:
        assert one.greeting().startswith(b"220") and two.greeting().startswith(b"220")
        assert one.command(b"NOOP").startswith(b"250")
        assert one.command(b"NOOP").startswith(b"250")

        def check() -> None:
            first, second = sessions_of(worker, world)
            table, other = first._smtp_methods, second._smtp_methods
            assert isinstance(table, CommandTable) and isinstance(other, CommandTable)
            assert table.commands is other.commands
            assert set(table) >= {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "AUTH", "QUIT"}
            assert table["NOOP"] is table["NOOP"]
            # Outside aiosmtpd's introspection, dir() of a session is complete.
            assert {"push", "listener", "dispatch"} <= set(dir(first))

        worker.call(check)


def test_every_command_passes_the_dispatch_point(world: World, relay: Relay) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        for _ in range(100):
            wire.send(b"RSET\r\n")
        for _ in range(100):
            assert wire.reply()[-1].startswith(b"250")
        # The junk limit is counted at the dispatch point: the 101st junk command is refused.
        assert wire.command(b"NOOP").startswith(b"421 4.7.0 Too many commands")


def test_the_command_budget_slows_a_client_down_after_the_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(protocol.time, "monotonic", lambda: clock[0])
    listener = SimpleNamespace(
        runtime=SimpleNamespace(organization=OrganizationPolicy(), directory=None),
        config=ListenerConfig(id=1),
        tls_context=None,
    )

    async def session() -> RelaySMTP:
        return RelaySMTP(listener)  # type: ignore[arg-type]

    smtp = asyncio.run(session())
    assert [smtp._take_token() for _ in range(protocol.COMMAND_BURST)] == [0.0] * 1000
    assert smtp._take_token() == pytest.approx(1 / protocol.COMMANDS_PER_SECOND)
    assert smtp._take_token() == pytest.approx(2 / protocol.COMMANDS_PER_SECOND)
    clock[0] += 0.01 + 1.0  # the two waits, then one second: a second's worth is free again
    waits = [smtp._take_token() for _ in range(int(protocol.COMMANDS_PER_SECOND) + 1)]
    assert waits[:-1] == [0.0] * int(protocol.COMMANDS_PER_SECOND)
    assert waits[-1] > 0
