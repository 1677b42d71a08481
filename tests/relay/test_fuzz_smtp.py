"""Hostile SMTP clients against the live listener: generated command sequences (valid and invalid
verbs and arguments, pipelined in one burst), binary garbage, over-long lines and slow clients,
each ending in a half-close, a QUIT or a reset. Whatever they send, every reply line is
well-formed and tells nothing of the server's insides, nothing is logged as an error, the
sessions all end, and a bystander sending mail meanwhile is never disturbed.

The normal suite tries 195 inputs (100 + 50 + 40 + 5); ``SMTPADMIN_SOAK=1`` (``make soak``)
tries 16,100."""

from __future__ import annotations

import base64
import logging
import os
import smtplib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.smtp import auth
from tests.relay.harness import RelayThread, smtp, wait_for
from tests.relay.wire import Wire, well_formed
from tests.relay.world import World, message

Relay = Callable[..., RelayThread]

SOAK = os.environ.get("SMTPADMIN_SOAK", "") == "1"


def budget(fast: int, soak: int) -> Any:
    return settings(
        max_examples=soak if SOAK else fast,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# --- what hostile clients send ---------------------------------------------------------------

ADDRESSES = st.sampled_from(
    [
        b"<a@outside.test>",
        b"<alice@smtpadmin.test>",
        b"<bob@smtpadmin.test>",
        b"<>",
        b"<victim@elsewhere.test>",
        b'<"q s"@partner.test>',
        b"<@relay.test:a@partner.test>",
        b"<a%b@partner.test>",
        b"alice@smtpadmin.test",
        b"<a@[127.0.0.1]>",
        b"<=?utf-8?q?a=40b.test?=@partner.test>",
        "<jöran@smtpadmin.test>".encode(),
    ]
)
NASTY = st.one_of(
    st.binary(max_size=48),
    st.sampled_from(
        [
            b"\x00",
            b"\xff\xfe",
            b"\xed\xa0\x80",
            b"\r",
            b"\n",
            b"\r\n.\r\n",
            b"\x00.",
            b"\x1b[2J",
            b"%s%n",
            "ü".encode(),
            b"A" * 600,
        ]
    ),
)
PARAMETERS = st.sampled_from(
    [
        *(b"", b" SIZE=10", b" BODY=8BITMIME", b" SMTPUTF8", b" SIZE=99999999999", b" FOO=BAR"),
        *(b" SIZE=", b" BODY=BINARYMIME", b" AUTH=<>", b" RET=HDRS"),
    ]
)
ARGUMENTS = st.one_of(
    ADDRESSES,
    NASTY,
    st.tuples(ADDRESSES, PARAMETERS).map(b"".join),
    st.tuples(ADDRESSES, NASTY).map(b"".join),
    st.binary(max_size=12).map(base64.b64encode),
    st.just(base64.b64encode(b"\0relayuser\0s3cret-Passw0rd")),
)
VERBS = st.sampled_from(
    [
        b"EHLO",
        b"HELO",
        b"MAIL FROM:",
        b"RCPT TO:",
        b"DATA",
        b"RSET",
        b"NOOP",
        b"VRFY",
        b"EXPN",
        b"HELP",
        b"AUTH PLAIN",
        b"AUTH LOGIN",
        b"AUTH CRAM-MD5",
        b"STARTTLS",
        b"BDAT",
        b"QUIT",
        b"XCLIENT",
        b"",
        b"\xff",
    ]
)
COMMANDS = st.tuples(VERBS, st.sampled_from([b" ", b"", b"  "]), ARGUMENTS, st.booleans()).map(
    lambda p: (p[0] + p[1] + p[2]).lower() if p[3] else p[0] + p[1] + p[2]
)
BODY_LINES = st.one_of(
    st.sampled_from([b"Subject: fuzz", b"", b".", b"..x", b"\x00.", b"x" * 999, b"Received: x"]),
    st.binary(max_size=80),
)
MESSAGES = st.tuples(
    st.lists(BODY_LINES, max_size=8),
    st.sampled_from([b"\r\n.\r\n", b"\n.\n", b"\r\n.\n", b"", b"\r\n.\r\nNOOP\r\n"]),
).map(lambda p: b"DATA\r\n" + b"\r\n".join(p[0]) + p[1])
ENDINGS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
# A good start, sometimes, so that the rest gets further into the dialogue.
OPENINGS = st.sampled_from(
    [
        b"",
        b"EHLO fuzz.test\r\n",
        b"EHLO fuzz.test\r\nMAIL FROM:<a@outside.test>\r\nRCPT TO:<alice@smtpadmin.test>\r\n",
        b"EHLO fuzz.test\r\nAUTH PLAIN "
        + base64.b64encode(b"\0relayuser\0s3cret-Passw0rd")
        + b"\r\n",
    ]
)
SEQUENCES = st.tuples(
    OPENINGS,
    st.lists(st.tuples(st.one_of(COMMANDS, COMMANDS, MESSAGES), ENDINGS), max_size=12),
).map(lambda p: p[0] + b"".join(command + ending for command, ending in p[1]))
GARBAGE = st.binary(min_size=1, max_size=4096)
CONTEXTS = st.sampled_from(
    [
        b"",
        b"EHLO fuzz.test\r\n",
        b"EHLO fuzz.test\r\nAUTH LOGIN\r\n",
        b"EHLO fuzz.test\r\nAUTH PLAIN\r\n",
        b"EHLO fuzz.test\r\nMAIL FROM:<a@outside.test>\r\n"
        b"RCPT TO:<alice@smtpadmin.test>\r\nDATA\r\n",
    ]
)
LONG_LINES = st.tuples(
    CONTEXTS,
    st.integers(min_value=990, max_value=70_000),
    st.sampled_from([b"x", b"QUFB", b"\x00", b"\xff", b"a\rb", b"a\nb", b". "]),
    st.sampled_from([b"", b"EHLO ", b"MAIL FROM:<", b"NOOP ", b"."]),
).map(lambda p: p[0] + p[3] + (p[2] * (p[1] // len(p[2]) + 1))[: p[1]] + b"\r\nNOOP\r\n")
END = st.sampled_from(["half-close", "quit", "reset"])


# --- one hostile session ---------------------------------------------------------------------


def converse(port: int, payload: bytes, end: str, *, pause: float = 0.0, chunk: int = 0) -> None:
    """Send ``payload`` (in chunks of ``chunk`` bytes, ``pause`` seconds apart, when given),
    end the way ``end`` says, and check every reply line received until the server closes."""
    received = bytearray()
    reset = False
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            if chunk:
                for start in range(0, len(payload), chunk):
                    sock.sendall(payload[start : start + chunk])
                    time.sleep(pause)
            else:
                sock.sendall(payload)
            if end == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if end == "quit":
                sock.sendall(b"\r\nQUIT\r\n")
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # EPIPE, ECONNRESET, ENOTCONN: the server closed first (too many errors)
            reset = True
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                reset = True
                break
            if not data:
                break
            received += data
    lines = bytes(received).split(b"\r\n")
    unfinished = lines.pop()
    assert not unfinished or reset, f"a reply line without CRLF: {unfinished!r}"
    assert not lines or lines[0].startswith(b"220 "), lines[0]
    for line in lines:
        assert well_formed(line + b"\r\n"), f"bad reply line {line!r} to {payload[:300]!r}"


# --- the listener under fire -----------------------------------------------------------------


class Bystander:
    """A well-behaved client sending mail in a loop while the fuzzing goes on."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.sent = 0
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with smtp(self.port) as client:
                    client.ehlo()
                    refused = client.sendmail("b@outside.test", ["bob@smtpadmin.test"], message())
                if refused:
                    self.failures.append(repr(refused))
                self.sent += 1
            except (OSError, smtplib.SMTPException) as error:
                self.failures.append(repr(error))
            self.stop.wait(0.05)


@pytest.fixture
def under_fire(
    world: World, relay: Relay, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[int]:
    """The listener's port, with a bystander sending mail; afterwards: no session left, a
    fresh session still gets 250 for a good message, nothing logged as an error."""
    # Failed logins are slowed down by seconds; the fuzzer tries hundreds.
    monkeypatch.setattr(auth, "SECONDS_PER_FAILURE", 0.0)
    monkeypatch.setattr(auth, "MAX_DELAY", 0.0)
    caplog.set_level(logging.INFO)
    worker = relay(world.server)
    bystander = Bystander(world.port)
    bystander.thread.start()
    try:
        yield world.port
    finally:
        bystander.stop.set()
        bystander.thread.join(30)
    assert bystander.failures == [] and bystander.sent > 0
    wait_for(lambda: worker.session_count(world.vs) == 0, timeout=15)
    with Wire(world.port) as wire:
        assert wire.transaction().startswith(b"354")
        wire.send(message() + b".\r\n")
        assert wire.reply()[-1].startswith(b"250 2.6.0")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert "Traceback" not in caplog.text


@budget(fast=100, soak=10_000)
@given(payload=SEQUENCES, end=END)
def test_command_sequences_get_well_formed_replies(
    under_fire: int, payload: bytes, end: str
) -> None:
    converse(under_fire, payload, end)


@budget(fast=50, soak=4000)
@given(payload=GARBAGE, end=END)
def test_binary_garbage_gets_well_formed_replies(under_fire: int, payload: bytes, end: str) -> None:
    converse(under_fire, payload, end)


@budget(fast=40, soak=2000)
@given(payload=LONG_LINES, end=END)
def test_over_long_lines_get_well_formed_replies(under_fire: int, payload: bytes, end: str) -> None:
    converse(under_fire, payload, end)


@budget(fast=5, soak=100)
@given(
    payload=SEQUENCES,
    chunk=st.integers(min_value=8, max_value=64),
    pause=st.floats(min_value=0.001, max_value=0.02),
)
def test_slow_clients_get_well_formed_replies(
    under_fire: int, payload: bytes, chunk: int, pause: float
) -> None:
    # At most 75 pauses: a second and a half per slow client.
    converse(under_fire, payload[:600], "half-close", pause=pause, chunk=chunk)
