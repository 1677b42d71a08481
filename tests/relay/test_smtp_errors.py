"""Errors inside a session are handled once: the client gets "451 4.3.0" for ours or a 5xx
for its own input, never the exception's name; the log gets one line (one traceback at most)
naming the session; the session goes on, except in the middle of message data, where what
follows must never be read as commands."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import pytest
from django.db import OperationalError

from relay.models import Message
from relay.smtp import policy, protocol
from relay.smtp.data import DataScanner
from tests.relay.harness import RelayThread, wait_for
from tests.relay.wire import Wire, well_formed
from tests.relay.world import World, message

Relay = Callable[..., RelayThread]


def relay_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_megabyte_auth_login_line_gets_one_500_5_5_6(
    world: World, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        assert wire.command(b"AUTH LOGIN").startswith(b"334")
        answer = wire.command(base64.b64encode(b"u" * 750_000))
        assert answer.startswith(b"500 5.5.6") and well_formed(answer), answer
        # One reply for the one line: the next command gets its own answer.
        assert wire.command(b"NOOP").startswith(b"250")
        assert wire.command(b"AUTH PLAIN " + base64.b64encode(b"\0relayuser\0wrong")).startswith(
            b"535"
        )
    assert not [r for r in caplog.records if "Recursion" in r.getMessage()]
    assert len(relay_errors(caplog)) <= 1


def test_an_unexpected_error_is_answered_451_without_naming_it(
    world: World, relay: Relay, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("internal detail the client must not see")

    monkeypatch.setattr(policy, "sender_decision", broken)
    worker = relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        answer = wire.command(b"MAIL FROM:<a@outside.test>")
        assert answer.startswith(b"451 4.3.0") and well_formed(answer), answer
        assert b"internal detail" not in answer
        assert wire.command(b"NOOP").startswith(b"250")
    (record,) = relay_errors(caplog)
    assert record.levelno == logging.ERROR
    assert "RuntimeError" in record.getMessage()
    assert f"{worker.supervisor.runtime.worker}/" in record.getMessage()  # type: ignore[union-attr]
    text = caplog.text
    assert text.count("Traceback") <= 1


def test_an_error_in_message_data_closes_the_session(
    world: World, relay: Relay, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("data line check failed")

    monkeypatch.setattr(DataScanner, "feed", broken)
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(message() + b"NOOP\r\nNOOP\r\n.\r\n")
        answer = wire.reply()[-1]
        assert answer.startswith(b"421 4.3.0") and well_formed(answer), answer
        # The rest of the message was not taken for commands: nothing more is answered.
        assert wire.rest() == b""
    assert not Message.objects.exists()
    assert len(relay_errors(caplog)) == 1


def test_a_closed_session_whose_time_out_fires_is_dropped_quietly(
    world: World, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    # Closed while its replies cannot drain (a client that reads nothing): the time-out
    # then drops the connection instead of failing on the transport already given up.
    worker = relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")

        def close_then_time_out() -> None:
            assert worker.supervisor is not None
            (session,) = worker.supervisor.listeners[world.vs.pk].sessions
            session.close()
            session._timeout_cb()

        worker.call(close_then_time_out)
        assert wire.rest() == b""
    wait_for(lambda: worker.session_count(world.vs) == 0)
    assert relay_errors(caplog) == []


def test_auth_while_the_database_is_away_is_a_temporary_failure(
    world: World, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    def away(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(protocol, "check_credentials", away)
    relay(world.server)
    with Wire(world.port) as wire:
        assert wire.greeting().startswith(b"220")
        assert wire.command(b"EHLO client.test").startswith(b"250")
        answer = wire.command(b"AUTH PLAIN " + base64.b64encode(b"\0relayuser\0secret"))
        # A client told "535" would think its password wrong; "454" says try again later.
        assert answer.startswith(b"454 4.7.0") and well_formed(answer), answer
        assert wire.command(b"NOOP").startswith(b"250")
