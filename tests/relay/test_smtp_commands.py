"""The session's command table: aiosmtpd's commands found once per class, every command run
through the session's one dispatch point (rate, junk limit, protocol log), and what HELP
reads of a command (its syntax) kept."""

from __future__ import annotations

from collections.abc import Callable

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
