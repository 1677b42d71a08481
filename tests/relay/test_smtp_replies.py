"""How replies go out: a multi-line reply (EHLO's) in one write rather than one per line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.smtp.protocol import RelaySMTP
from tests.relay.harness import RelayThread
from tests.relay.wire import Wire
from tests.relay.world import World

Relay = Callable[..., RelayThread]


def only_session(worker: RelayThread, world: World) -> RelaySMTP:
    assert worker.supervisor is not None
    (session,) = worker.supervisor.listeners[world.vs.pk].sessions
    return session


def test_a_multi_line_reply_goes_out_in_one_write(world: World, relay: Relay) -> None:
    worker = relay(world.server)
    writes: list[bytes] = []
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")

        def spy() -> None:
            writer = only_session(worker, world)._writer
            real = writer.write

            def write(data: Any) -> None:
                writes.append(bytes(data))
                real(data)

            writer.write = write  # type: ignore[method-assign]

        worker.call(spy)
        wire.send(b"EHLO client.test\r\n")
        lines = wire.reply()
        assert wire.command(b"NOOP").startswith(b"250")

    assert len(lines) > 3
    assert lines[0].startswith(b"250-") and lines[-1] == b"250 HELP\r\n"
    assert b"250-PIPELINING\r\n" in lines
    # The whole EHLO reply in the first write, the NOOP's in the second.
    assert writes[0] == b"".join(lines)
    assert len(writes) == 2
