"""What message data the relay refuses at DATA: NUL (a next hop that strips it would read
"\\r\\n\\x00.\\r\\n" as the end of the message) and lines over 998 octets plus CRLF. The
message is not stored and the session goes on as after RSET."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from relay.models import Message
from relay.smtp import loader
from tests.relay.harness import RelayThread
from tests.relay.wire import Wire
from tests.relay.world import World, message

Relay = Callable[..., RelayThread]

SMUGGLED = b"MAIL FROM:<admin@smtpadmin.test>\r\nRCPT TO:<bob@smtpadmin.test>\r\nDATA\r\nForged\r\n"


def test_it_refuses_nul_in_data(world: World, relay: Relay) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(b"Subject: one\r\n\r\nfirst\r\n\x00.\r\n" + SMUGGLED + b".\r\n")
        assert wire.reply()[-1].startswith(b"554 5.6.0")
    assert not Message.objects.exists()


def test_it_refuses_nul_in_a_header(world: World, relay: Relay) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(b"Subject: a\x00b\r\n\r\nbody\r\n.\r\n")
        assert wire.reply()[-1].startswith(b"554 5.6.0")
    assert not Message.objects.exists()


def test_after_refusing_nul_the_session_goes_on_as_after_rset(world: World, relay: Relay) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(b"Subject: one\r\n\r\n\x00\r\n.\r\n")
        assert wire.reply()[-1].startswith(b"554 5.6.0")
        # The refused transaction is gone: no recipient left over for a second DATA.
        assert wire.command(b"DATA").startswith(b"503")
        assert wire.envelope().startswith(b"354")
        wire.send(message() + b".\r\n")
        assert wire.reply()[-1].startswith(b"250")
    assert Message.objects.count() == 1


def test_it_accepts_a_line_of_998_octets(world: World, relay: Relay) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(message(body="x" * 998 + "\r\n") + b".\r\n")
        assert wire.reply()[-1].startswith(b"250")


def test_it_accepts_a_dot_stuffed_line_of_998_octets(world: World, relay: Relay) -> None:
    # The dot doubled for transparency does not count (RFC 5321 4.5.3.1.6).
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(message(body=".." + "x" * 997 + "\r\n") + b".\r\n")
        assert wire.reply()[-1].startswith(b"250")
    stored = Message.objects.get()
    assert b"\r\n." + b"x" * 997 + b"\r\n" in bytes(stored.content)


def test_it_refuses_a_line_of_999_octets(world: World, relay: Relay) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(message(body="x" * 999 + "\r\n") + b".\r\n")
        assert wire.reply()[-1].startswith(b"500 5.5.2")
    assert not Message.objects.exists()


def test_after_refusing_a_long_line_the_session_goes_on_as_after_rset(
    world: World, relay: Relay
) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        # Long enough to overrun the reader's buffer, with a smuggling attempt behind it.
        wire.send(message(body="y" * 5000 + "\r\n") + SMUGGLED + b".\r\n")
        assert wire.reply()[-1].startswith(b"500 5.5.2")
        assert wire.command(b"RCPT TO:<alice@smtpadmin.test>").startswith(b"503")
        assert wire.envelope().startswith(b"354")
        wire.send(message() + b".\r\n")
        assert wire.reply()[-1].startswith(b"250")
    assert Message.objects.count() == 1


def test_a_slow_client_keeps_its_message_alive_line_after_line(
    world: World, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The time-out counts from the last bytes of the message received, however few (RFC 5321
    # 4.5.3.2.6, the DATA block time-out), not from the last block the relay took whole.
    original = loader.listener_config
    monkeypatch.setattr(
        loader, "listener_config", lambda vs: replace(original(vs), connection_timeout=1.0)
    )
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(b"Subject: slow\r\n\r\n")
        for n in range(8):
            time.sleep(0.4)  # 3.2 seconds in all, never 1 second without a line
            wire.send(b"line %d\r\n" % n)
        wire.send(b".\r\n")
        assert wire.reply()[-1].startswith(b"250")
    assert Message.objects.count() == 1


def test_a_bare_line_feed_in_a_line_too_long_still_ends_the_session(
    world: World, relay: Relay
) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(b"Subject: a\r\n\r\n" + b"x" * 5000 + b"\n.\n" + SMUGGLED + b".\r\n")
        assert wire.reply()[-1].startswith(b"554 5.5.2 Bare CR or LF")
        assert wire.rest() == b""
    assert not Message.objects.exists()
