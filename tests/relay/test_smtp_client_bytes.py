"""A client's bytes that cannot be stored or logged as text (invalid UTF-8, which aiosmtpd
decodes to lone surrogates; NUL, which PostgreSQL refuses; control characters) are refused
where they arrive with a 5xx saying why, or escaped: never a 451 for the client's bytes, and
never an echo that breaks the reply. Run these with DATABASE_URL pointing at PostgreSQL too."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.models import Message
from tests.relay.harness import RelayThread, wait_for
from tests.relay.wire import Wire, well_formed
from tests.relay.world import World, message

Relay = Callable[..., RelayThread]


def good_message(wire: Wire) -> bytes:
    """A whole transaction in a greeted session: the reply to the end of data."""
    assert wire.envelope().startswith(b"354")
    wire.send(message() + b".\r\n")
    return wire.reply()[-1]


@pytest.mark.parametrize(
    "name",
    [
        b"\xff\xfe.client.test",
        b"client\x00.test",
        b"client\x1b[2J.test",
        b"caf\xc3.test",
        b"a" * 63 + (b"." + b"b" * 63) * 4,  # 319 octets: more than a domain name or the column
    ],
    ids=["invalid-utf8", "nul", "escape", "truncated-utf8", "too-long"],
)
@pytest.mark.parametrize("verb", [b"EHLO", b"HELO"])
def test_it_refuses_an_ehlo_name_it_cannot_store(
    world: World, relay: Relay, verb: bytes, name: bytes
) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        refused = wire.command(verb + b" " + name)
        assert refused.startswith(b"501 5.5.2"), refused
        assert well_formed(refused)
        # Nothing of the bad name was kept: the session still needs a greeting, then works.
        assert wire.command(b"MAIL FROM:<a@outside.test>").startswith(b"503")
        assert wire.command(verb + b" client.test").startswith(b"250")
        assert good_message(wire).startswith(b"250")
    assert Message.objects.get().helo == "client.test"


def test_it_accepts_an_ehlo_name_in_utf8(world: World, relay: Relay) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command("EHLO bücher.test".encode()).startswith(b"250")
        assert good_message(wire).startswith(b"250")
    assert Message.objects.get().helo == "bücher.test"


@pytest.mark.parametrize(
    "path",
    [
        b"<\xff@outside.test>",
        b"<a\x00b@outside.test>",
        b'<"a\x00b"@outside.test>',
        b"<a@\xff.test>",
    ],
)
def test_it_refuses_a_sender_it_cannot_store_with_501(
    world: World, relay: Relay, path: bytes
) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        refused = wire.command(b"MAIL FROM:" + path)
        assert refused.startswith(b"501 5.1.7"), refused
        assert good_message(wire).startswith(b"250")


def test_it_refuses_a_recipient_it_cannot_store_with_501(world: World, relay: Relay) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        assert wire.command(b"MAIL FROM:<a@outside.test>").startswith(b"250")
        for path in (b"<\xff@smtpadmin.test>", b"<al\x00ice@smtpadmin.test>"):
            refused = wire.command(b"RCPT TO:" + path)
            assert refused.startswith(b"501 5.1.3"), refused
        assert wire.command(b"RSET").startswith(b"250")
        assert good_message(wire).startswith(b"250")


@pytest.mark.parametrize(
    "parameter", [b"SIZE=\xff", b"BODY=\xff\x00", b"X\xff=1", b"SMTPUTF8=\x00"]
)
def test_it_refuses_mail_parameters_it_cannot_read_with_5xx(
    world: World, relay: Relay, parameter: bytes
) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        refused = wire.command(b"MAIL FROM:<a@outside.test> " + parameter)
        assert refused[:1] == b"5" and well_formed(refused), refused
        assert good_message(wire).startswith(b"250")


@pytest.mark.parametrize(
    "login", [b"relay\x00user", b"relay\xffuser", b"\xed\xa0\x80", b"\x00"], ids=repr
)
def test_a_login_name_it_cannot_store_is_a_failed_login(
    world: World, relay: Relay, login: bytes
) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        assert wire.command(b"AUTH LOGIN " + base64.b64encode(login)).startswith(b"334")
        answer = wire.command(base64.b64encode(b"password"))
        assert answer.startswith(b"535 5.7.8"), answer
        assert good_message(wire).startswith(b"250")


@pytest.mark.parametrize(
    "argument", [b"\xff\xfe", b"a\x00b", b"<\xff@x.test>", b"<\xff\x00", b"@\r@"]
)
@pytest.mark.parametrize("verb", [b"VRFY", b"NOOP", b"HELP", b"EXPN"])
def test_replies_never_echo_what_cannot_be_sent_back(
    world: World, relay: Relay, verb: bytes, argument: bytes
) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        answer = wire.command(verb + b" " + argument)
        assert well_formed(answer), answer
        assert good_message(wire).startswith(b"250")


def test_an_unknown_command_with_a_carriage_return_gets_one_well_formed_reply(
    world: World, relay: Relay
) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        wire.send(b"FOO\rBAR\x00\r\nNOOP\r\n")
        first, second = wire.reply(), wire.reply()
        assert len(first) == 1 and first[0].startswith(b"500") and well_formed(first[0])
        assert second == [b"250 OK\r\n"] or second[0].startswith(b"250 ")


def test_the_protocol_log_escapes_undecodable_arguments(
    world: World, relay: Relay, settings: Any, tmp_path: Path
) -> None:
    settings.VAR_DIR = tmp_path / "var"
    world.configure(logging_enabled=True)
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        assert wire.command(b"NOOP \xff\x00x").startswith(b"250")
        assert wire.command(b"QUIT").startswith(b"221")
    logs = list((tmp_path / "var" / "logs" / f"SMTPSVC{world.vs.pk}").glob("ex*.log"))
    wait_for(lambda: "QUIT" in logs[0].read_text())
    assert " NOOP %FF%00x 250 " in logs[0].read_text()


def test_client_bytes_never_reach_the_log_unescaped(
    world: World, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        for _ in range(3):
            assert wire.command(b"FAKE\x1b[2J\r2026-01-01 ERROR forged").startswith(b"500")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        assert wire.command(b"AUTH LOGIN").startswith(b"334")
        assert wire.command(b"*").startswith(b"501")
    assert caplog.records
    for record in caplog.records:
        assert record.getMessage().isprintable() or "Traceback" in record.getMessage(), record
