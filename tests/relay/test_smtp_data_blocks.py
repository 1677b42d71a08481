"""Message data read in blocks (``relay.smtp.data``) decides exactly what a simple line-by-line
reader decides, whatever the chunks the client's bytes arrive in: the same outcome, the same
message, and nothing read past the end of data (pipelined commands stay for the command loop).
The blocks come from a real ``asyncio.StreamReader`` fed in random pieces, with aiosmtpd's line
limit, as in a session."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.smtp import policy
from relay.smtp.config import ListenerConfig
from relay.smtp.data import DataScanner, read_block
from relay.smtp.policy import DataOutcome

DEFAULT = ListenerConfig(id=1)
INCOMPLETE = ("incomplete",)

Result = tuple[object, ...]


def line_by_line(stream: bytes, config: ListenerConfig, session_bytes: int) -> Result:
    """The reference: lines up to CRLF, one at a time, as RFC 5321 4.5.2 reads them."""
    kept: list[bytes] = []
    size = 0
    problem: DataOutcome | None = None
    position = 0
    while True:
        end = stream.find(b"\r\n", position)
        if end < 0:
            return INCOMPLETE
        line = stream[position : end + 2]
        position = end + 2
        if line == b".\r\n":
            outcome = problem or DataOutcome.COMPLETE
            content = b"".join(kept) if problem is None else b""
            return (outcome, content, stream[position:])
        body = line[:-2]
        unstuffed = body[1:] if body.startswith(b".") else body
        refusal = policy.data_line_outcome(unstuffed)
        if refusal is DataOutcome.BARE_LINE_ENDING:
            return (refusal,)
        if problem is not None:
            continue
        size += len(line)
        problem = refusal or policy.data_size_outcome(size, session_bytes, config)
        if problem is None:
            kept.append(unstuffed + b"\r\n")


async def in_blocks(pieces: list[bytes], config: ListenerConfig, session_bytes: int) -> Result:
    reader = asyncio.StreamReader(limit=SMTP.line_length_limit)

    async def client() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            await asyncio.sleep(0)
        reader.feed_eof()

    sending = asyncio.create_task(client())
    scanner = DataScanner(config, session_bytes)
    try:
        while not scanner.done:
            scanner.feed(await read_block(reader, scanner))
    except asyncio.IncompleteReadError:
        await sending
        return INCOMPLETE
    await sending
    assert scanner.leftover == b""  # read_block never reads past the end of data
    if scanner.outcome is DataOutcome.BARE_LINE_ENDING:
        return (scanner.outcome,)
    return (scanner.outcome, scanner.content, await reader.read())


def read(pieces: list[bytes], config: ListenerConfig = DEFAULT, session_bytes: int = 0) -> Result:
    return asyncio.run(in_blocks(pieces, config, session_bytes))


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(stream)) for cut in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


TOKENS = [
    b"a",
    b"Subject: x",
    b".",
    b"..",
    b"\r\n",
    b"\r",
    b"\n",
    b"\x00",
    b"\r\n.\r\n",
    b".\r\n",
    b"\r\n.",
    b"\r\n.\r",
    b"x" * 997,
    b"x" * 998,
    b"x" * 999,
    b"x" * 1000,
    b"x" * 1001,
    b"x" * 1003,
    b"y" * 2500,
    b"MAIL FROM:<a@b.test>\r\n",
]
streams = st.builds(
    lambda tokens, end, after: b"".join(tokens) + (b"\r\n.\r\n" if end else b"") + after,
    st.lists(st.sampled_from(TOKENS), max_size=30),
    st.booleans(),
    st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"]),
)
limits = st.one_of(st.none(), st.integers(0, 6000))


@settings(max_examples=400, deadline=None)
@given(
    stream=streams,
    cuts=st.lists(st.integers(0, 8000), max_size=12),
    message_limit=limits,
    session_limit=limits,
    session_bytes=st.integers(0, 3000),
)
def test_blocks_decide_as_line_by_line(
    stream: bytes,
    cuts: list[int],
    message_limit: int | None,
    session_limit: int | None,
    session_bytes: int,
) -> None:
    config = replace(DEFAULT, message_size_limit=message_limit, session_size_limit=session_limit)
    expected = line_by_line(stream, config, session_bytes)
    assert read(split(stream, cuts), config, session_bytes) == expected


@settings(max_examples=200, deadline=None)
@given(stream=streams)
def test_one_octet_at_a_time_decides_as_line_by_line(stream: bytes) -> None:
    pieces = [stream[i : i + 1] for i in range(len(stream))]
    assert read(pieces) == line_by_line(stream, DEFAULT, 0)


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b".\r\nQUIT\r\n", (DataOutcome.COMPLETE, b"", b"QUIT\r\n")),
        (b"\r\n.\r\n", (DataOutcome.COMPLETE, b"\r\n", b"")),
        (b"..\r\n.\r\n", (DataOutcome.COMPLETE, b".\r\n", b"")),
        (b"a\r\n..b\r\n.\r\nNOOP\r\n", (DataOutcome.COMPLETE, b"a\r\n.b\r\n", b"NOOP\r\n")),
        (b"a\r\n\x00\r\n.\r\n", (DataOutcome.NUL, b"", b"")),
        (b"a\nb\r\n.\r\n", (DataOutcome.BARE_LINE_ENDING,)),
        (b"a\r\n.\r", INCOMPLETE),
    ],
)
def test_examples(stream: bytes, expected: Result) -> None:
    assert line_by_line(stream, DEFAULT, 0) == expected
    assert read([stream]) == expected
    assert read([stream[i : i + 1] for i in range(len(stream))]) == expected


def test_a_bare_line_feed_in_a_line_of_any_length_ends_the_session() -> None:
    # However long the line: reading it to its CRLF decides, not the reader's buffer limit.
    for length in (10, 998, 1001, 1002, 5000, 100_000):
        stream = b"x" * length + b"\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n"
        assert read([stream]) == (DataOutcome.BARE_LINE_ENDING,), length


def test_a_nul_in_a_line_of_any_length_is_refused_as_nul() -> None:
    for length in (10, 1001, 1002, 5000, 100_000):
        stream = b"\x00" + b"x" * length + b"\r\n.\r\n"
        assert read([stream]) == (DataOutcome.NUL, b"", b""), length


def test_a_line_too_long_is_not_kept_whole() -> None:
    scanner = DataScanner(replace(DEFAULT, message_size_limit=None), 0)
    for _ in range(100):
        scanner.feed(b"x" * 65536)
    assert len(scanner.pending) == 1 and scanner.long_line
    scanner.feed(b"\r\n.\r\n")
    assert scanner.outcome is DataOutcome.LINE_TOO_LONG


def test_a_refused_message_is_not_kept() -> None:
    scanner = DataScanner(replace(DEFAULT, message_size_limit=1000), 0)
    for _ in range(100):
        scanner.feed(b"y" * 78 + b"\r\n")
    assert scanner.problem is DataOutcome.MESSAGE_TOO_BIG and not scanner.parts
