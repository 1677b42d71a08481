"""What the outbound client tests share: a few messages, plans of loopback sinks, and the
check that no test leaves a socket open."""

from __future__ import annotations

import gc
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import pytest

from relay.delivery.client import (
    BatchResult,
    MessageResult,
    OutboundMessage,
    OutboundOptions,
    send_stream,
)
from relay.delivery.nexthop import Hop, HopPlan
from tests.sinks import Sink

HELO = "relay.example.net"
OPTIONS = OutboundOptions(helo_name=HELO, timeout=5.0)
CONTENT = b"From: alice@corp.example\r\nTo: bob@example.org\r\nSubject: Hi\r\n\r\nHello.\r\n"


@pytest.fixture
def no_socket_left_open() -> Iterator[None]:
    """Every socket the client opens is closed before send_stream returns: an unclosed one
    would warn (ResourceWarning) when collected. Modules ask for it for all their tests with
    ``pytestmark = pytest.mark.usefixtures("no_socket_left_open")``."""
    # Garbage an earlier test left behind is collected first, so only this test's sockets count.
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port nobody listens on (bound, so nothing else takes it): refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield int(bound.getsockname()[1])


def send_all(
    plan: HopPlan,
    messages: Sequence[OutboundMessage],
    options: OutboundOptions,
    progress: Callable[[], None] | None = None,
) -> BatchResult:
    """``send_stream`` over a list of messages, with a result for every one of them: the
    messages it did not get to have the result that ended the conversation (as the SMTP
    transport records them)."""
    waiting = list(reversed(messages))
    result = send_stream(plan, lambda: waiting.pop() if waiting else None, options, progress)
    if result.ended is None:
        return result
    answered = {found.key for found in result.results}
    rest = [
        MessageResult(m.key, {address: result.ended for address in m.recipients})
        for m in messages
        if m.key not in answered
    ]
    return replace(result, results=(*result.results, *rest))


def hop(server: Sink) -> Hop:
    return Hop(server.host, server.host, server.port)


def plan(*servers: Sink | int) -> HopPlan:
    return HopPlan(
        tuple(hop(s) if isinstance(s, Sink) else Hop("127.0.0.1", "127.0.0.1", s) for s in servers)
    )


def message(key: int = 1, *recipients: str, sender: str = "alice@corp.example") -> OutboundMessage:
    return OutboundMessage(key, sender, recipients or ("bob@example.org",), CONTENT)


def replies(batch: BatchResult) -> dict[int, dict[str, str]]:
    return {
        result.key: {address: str(reply) for address, reply in result.recipients.items()}
        for result in batch.results
    }


OK = "250 2.0.0 Queued"
