"""send_stream: messages handed to an open connection one at a time, each one's replies
reported as soon as they are in, over real loopback sinks."""

from __future__ import annotations

import socket
import time

import pytest

from relay.delivery.client import MessageResult, OutboundMessage, _Session, send_stream
from tests.relay.outbound import OK, OPTIONS, hop, message, plan
from tests.sinks import SinkFactory

pytestmark = pytest.mark.usefixtures("no_socket_left_open")


def test_each_message_is_reported_before_the_next_is_taken(sink: SinkFactory) -> None:
    mx = sink()
    waiting = [message(n, f"user{n}@example.org") for n in (1, 2, 3)]
    log: list[str] = []

    def take() -> OutboundMessage | None:
        log.append(f"take ({len(mx.messages)} at the hop)")
        return waiting.pop(0) if waiting else None

    def report(found: MessageResult, hop: str) -> None:
        log.append(f"report {found.key} ({len(mx.messages)} at the hop)")
        assert hop == f"[127.0.0.1]:{mx.port}"
        assert [str(r) for r in found.recipients.values()] == [OK]

    result = send_stream(plan(mx), take, OPTIONS, report=report)

    assert log == [
        "take (0 at the hop)",
        "report 1 (1 at the hop)",
        "take (1 at the hop)",
        "report 2 (2 at the hop)",
        "take (2 at the hop)",
        "report 3 (3 at the hop)",
        "take (3 at the hop)",
    ]
    assert [r.key for r in result.results] == [1, 2, 3]
    assert (mx.connections, result.ended) == (1, None)


def test_a_message_given_to_a_hop_that_fails_goes_to_the_next_hop(
    sink: SinkFactory, refusing_port: int
) -> None:
    mx = sink()
    waiting = [message(1), message(2)]
    taken: list[int] = []

    def take() -> OutboundMessage | None:
        if not waiting:
            return None
        taken.append(waiting[0].key)
        return waiting.pop(0)

    result = send_stream(plan(refusing_port, mx), take, OPTIONS)

    assert taken == [1, 2]  # each taken once
    assert [r.key for r in result.results] == [1, 2]
    assert len(mx.messages) == 2
    assert len(result.hop_errors) == 1


def test_a_connection_lost_mid_stream_says_what_ended_it_and_takes_no_more(
    sink: SinkFactory,
) -> None:
    mx = sink()
    mx.drop_at("MAIL", after=1)
    waiting = [message(n) for n in (1, 2, 3)]

    result = send_stream(plan(mx), lambda: waiting.pop(0) if waiting else None, OPTIONS)

    assert [r.key for r in result.results] == [1, 2]
    assert result.ended is not None and result.ended.code == 451
    assert [m.key for m in waiting] == [3]  # never taken


def test_nothing_to_take_opens_no_connection(sink: SinkFactory) -> None:
    mx = sink()
    result = send_stream(plan(mx), lambda: None, OPTIONS)
    assert (result.results, mx.connections) == ((), 0)


def test_the_connection_does_not_wait_for_delayed_acknowledgements(sink: SinkFactory) -> None:
    """Nagle's algorithm would hold each small write (a command, the final dot) until the
    next hop acknowledged the previous one: 40 ms per message against Linux's delayed ACK."""
    mx = sink()
    session = _Session(hop(mx), OPTIONS)
    try:
        assert session.open() is None
        assert session.smtp.sock is not None
        assert session.smtp.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        session.quit()
    finally:
        session.close()


def test_a_connection_the_hop_closed_while_it_waited_is_opened_again_for_the_next_message(
    sink: SinkFactory,
) -> None:
    mx = sink(timeout=0.3)  # the hop hangs up on a connection idle this long (421 first)
    waiting = [message(1), message(2, "carol@example.org")]
    reported: dict[int, list[str]] = {}

    def take() -> OutboundMessage | None:
        if len(waiting) == 1:  # the engine waits for mail of the queue, the connection idle
            deadline = time.monotonic() + 10
            while mx.open_connections and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not mx.open_connections  # the hop closed it
        return waiting.pop(0) if waiting else None

    def report(found: MessageResult, hop: str) -> None:
        reported[found.key] = [str(r) for r in found.recipients.values()]

    result = send_stream(plan(mx), take, OPTIONS, report=report)

    # The second message was not attempted on the dead connection: no 4xx, not an attempt.
    assert reported == {1: [OK], 2: [OK]}
    assert result.ended is None
    assert [m.rcpt_tos for m in mx.messages] == [["bob@example.org"], ["carol@example.org"]]
    assert mx.connections == 2
    assert mx.verbs() == ["EHLO", "MAIL", "RCPT", "DATA", "EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


def test_a_hop_that_refuses_the_new_connection_defers_only_that_message(
    sink: SinkFactory,
) -> None:
    mx = sink(timeout=0.3)
    waiting = [message(1), message(2, "carol@example.org")]
    reported: dict[int, list[str]] = {}

    def take() -> OutboundMessage | None:
        if len(waiting) == 1:
            deadline = time.monotonic() + 10
            while mx.open_connections and time.monotonic() < deadline:
                time.sleep(0.02)
            mx.greeting = "554 5.3.2 Not now"  # the next connection is refused
        return waiting.pop(0) if waiting else None

    def report(found: MessageResult, hop: str) -> None:
        reported[found.key] = [str(r) for r in found.recipients.values()]

    result = send_stream(plan(mx), take, OPTIONS, report=report)

    assert reported[1] == [OK]
    assert reported[2][0].startswith("451 4.4.2")  # a temporary failure: it waits for a retry
    assert result.ended is not None
    assert len(mx.messages) == 1
