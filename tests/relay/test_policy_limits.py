"""Limits and DATA checks: hop count, the lines of message data (bare line endings for SMTP
smuggling, NUL, length), message and session size, recipients per message, messages per
connection."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.smtp.config import KB, ListenerConfig, OrganizationPolicy
from relay.smtp.data import DataScanner
from relay.smtp.policy import (
    DataOutcome,
    data_ends_session,
    data_line_outcome,
    data_reply,
    data_size_outcome,
    declared_size_reply,
    hop_count,
    hop_count_reply,
    message_count_reply,
    recipient_count_reply,
    session_size_reply,
    size_refusal,
)

DEFAULT = ListenerConfig(id=1)
ORG = OrganizationPolicy()
BARE_LINE_ENDING = DataOutcome.BARE_LINE_ENDING
NUL_IN_DATA = DataOutcome.NUL
LINE_TOO_LONG = DataOutcome.LINE_TOO_LONG


def data_line_refusal(line: bytes) -> DataOutcome | None:
    """A line as read up to and including its CRLF (or what came before the end of input)."""
    return data_line_outcome(line[:-2] if line.endswith(b"\r\n") else line)


def received(n: int) -> bytes:
    return b"".join(
        b"Received: from a%d.test by b%d.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n" % (i, i)
        for i in range(n)
    )


# --- hop count ----------------------------------------------------------------------------


def test_it_counts_the_received_headers_of_the_header_block() -> None:
    headers = received(3) + b"From: a@b.test\r\nSubject: hi\r\n"

    assert hop_count(headers) == 3
    assert hop_count(b"") == 0


def test_header_names_are_case_insensitive_and_may_have_blanks_before_the_colon() -> None:
    assert hop_count(b"RECEIVED: x\r\nreceived : y\r\nReceived\t: z\r\n") == 3


def test_continuation_lines_and_look_alike_headers_do_not_count() -> None:
    headers = (
        b"Received: from a.test\r\n"
        b"  by b.test\r\n"
        b"\tReceived: folded, not a header\r\n"
        b"X-Received: x\r\n"
        b"Received-SPF: pass\r\n"
        b"ReceivedX: y\r\n"
    )

    assert hop_count(headers) == 1


def test_counting_stops_at_the_end_of_the_header_block() -> None:
    message = received(2) + b"Subject: x\r\n\r\n" + received(30)

    assert hop_count(message) == 2


def test_a_message_with_up_to_the_maximum_hop_count_is_accepted() -> None:
    assert hop_count_reply(received(15), DEFAULT) is None
    assert hop_count_reply(received(3), replace(DEFAULT, max_hop_count=3)) is None


def test_a_message_over_the_maximum_hop_count_is_refused_as_a_loop() -> None:
    assert str(hop_count_reply(received(16), DEFAULT)) == (
        "554 5.4.6 Too many hops: 16 Received headers, the limit is 15; "
        "the message is probably looping"
    )
    assert hop_count_reply(received(4), replace(DEFAULT, max_hop_count=3)) is not None


# --- bare line endings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"text\n.\nMAIL FROM:<x@y>\r\n",  # \n.\n
        b"text\r.\rMAIL FROM:<x@y>\r\n",  # \r.\r
        b"text\n.\r\n",  # \n.\r\n
        b"text\r\n.\r",  # \r\n.\r (as one chunk: the CRLF is not final)
        b"bare LF line\n",
        b"bare LF\nin the middle\r\n",
        b"bare CR\rinside a line\r\n",
        b"ends with a bare CR\r",
        b"\n",
        b"\r",
        b"\r\r\n",
        b"\n\r\n",
    ],
)
def test_a_bare_cr_or_lf_in_a_line_is_refused(line: bytes) -> None:
    assert data_line_refusal(line) == BARE_LINE_ENDING


@pytest.mark.parametrize("line", [b"plain text\r\n", b"\r\n", b".\r\n", b".stuffed\r\n", b""])
def test_a_line_ending_in_one_crlf_is_clean(line: bytes) -> None:
    assert data_line_refusal(line) is None


@pytest.mark.parametrize("line", [b"\x00.\r\n", b"a\x00b\r\n", b"\x00", b"x" * 2000 + b"\x00\r\n"])
def test_a_nul_in_a_line_is_refused(line: bytes) -> None:
    assert data_line_refusal(line) == NUL_IN_DATA
    assert str(data_reply(NUL_IN_DATA, DEFAULT)).startswith("554 5.6.0 ")


def test_a_line_is_refused_past_998_octets_before_its_crlf() -> None:
    assert data_line_refusal(b"x" * 998 + b"\r\n") is None
    assert data_line_refusal(b"x" * 999 + b"\r\n") == LINE_TOO_LONG
    assert data_line_refusal(b"x" * 999) == LINE_TOO_LONG
    assert str(data_reply(LINE_TOO_LONG, DEFAULT)).startswith("500 5.5.2 ")


def test_a_bare_line_ending_outranks_the_other_refusals() -> None:
    # It is the one that ends the session: what follows might be smuggled commands.
    assert data_line_refusal(b"\x00" + b"x" * 2000 + b"\n.\n\r\n") == BARE_LINE_ENDING


def scanned(stream: bytes) -> DataOutcome | None:
    """What the relay's DATA reader makes of ``stream`` followed by the end of data."""
    scanner = DataScanner(DEFAULT, 0)
    scanner.feed(stream + b"\r\n.\r\n")
    return scanner.outcome


SMUGGLING = [
    b"Subject: a\r\n\r\nfirst\n.\nMAIL FROM:<evil@x.test>\nRCPT TO:<v@y.test>\nDATA\n",
    b"Subject: a\r\n\r\nfirst\r.\rMAIL FROM:<evil@x.test>\r",
    b"Subject: a\r\n\r\nfirst\n.\r\nMAIL FROM:<evil@x.test>\r\n",
    b"Subject: a\r\n\r\nfirst\r\n.\rMAIL FROM:<evil@x.test>\r\n",
    b"Subject: a\r\n\r\nbare LF line\nnext\r\n",
    b"Subject: a\r\n\r\nbare CR\rinside\r\n",
]


@pytest.mark.parametrize("stream", SMUGGLING)
def test_every_smuggling_sequence_is_caught_as_the_relay_reads_it(stream: bytes) -> None:
    assert scanned(stream) is BARE_LINE_ENDING
    assert data_ends_session(BARE_LINE_ENDING)
    assert str(data_reply(BARE_LINE_ENDING, DEFAULT)).startswith("554 5.5.2 Bare CR or LF")


def test_a_clean_message_passes() -> None:
    message = b"Subject: hi\r\n\r\nline one\r\n.dot\r\n\r\nlast\r\n"

    assert scanned(message) is DataOutcome.COMPLETE
    assert data_reply(DataOutcome.COMPLETE, DEFAULT) is None
    assert not data_ends_session(DataOutcome.COMPLETE)


def test_a_refused_message_leaves_the_session_open() -> None:
    for outcome in (
        NUL_IN_DATA,
        LINE_TOO_LONG,
        DataOutcome.MESSAGE_TOO_BIG,
        DataOutcome.SESSION_TOO_BIG,
    ):
        assert not data_ends_session(outcome)
    assert data_ends_session(DataOutcome.CLOSED)
    assert str(data_reply(DataOutcome.CLOSED, DEFAULT)).startswith("421 4.4.2")


# --- sizes --------------------------------------------------------------------------------

LIMIT = 4096 * KB


def test_a_declared_size_over_the_limit_is_refused() -> None:
    assert declared_size_reply(LIMIT, DEFAULT) is None
    assert str(declared_size_reply(LIMIT + 1, DEFAULT)) == (
        "552 5.3.4 Message size exceeds fixed maximum message size (4194304 bytes)"
    )
    assert declared_size_reply(None, DEFAULT) is None


def test_the_actual_size_over_the_limit_is_refused() -> None:
    assert data_size_outcome(LIMIT, 0, DEFAULT) is None
    assert data_size_outcome(LIMIT + 1, 0, DEFAULT) is DataOutcome.MESSAGE_TOO_BIG
    assert str(data_reply(DataOutcome.MESSAGE_TOO_BIG, DEFAULT)) == (
        "552 5.3.4 Message size exceeds fixed maximum message size (4194304 bytes)"
    )


def test_the_actual_size_counts_against_what_is_left_of_the_session_limit() -> None:
    config = replace(DEFAULT, session_size_limit=10 * KB)

    assert data_size_outcome(4 * KB, 6 * KB, config) is None
    assert data_size_outcome(4 * KB + 1, 6 * KB, config) is DataOutcome.SESSION_TOO_BIG
    assert str(data_reply(DataOutcome.SESSION_TOO_BIG, config)) == (
        "552 5.3.4 Session size limit exceeded (10240 bytes for all messages of one "
        "connection); send the rest in a new connection"
    )


def test_without_a_size_limit_any_size_is_taken() -> None:
    unlimited = replace(DEFAULT, message_size_limit=None)

    assert declared_size_reply(10**12, unlimited) is None
    assert data_size_outcome(10**12, 0, unlimited) is None


def test_the_session_size_limit_counts_every_message_of_the_connection() -> None:
    config = replace(DEFAULT, session_size_limit=10 * KB)

    assert session_size_reply(10 * KB, config) is None
    assert str(session_size_reply(10 * KB + 1, config)) == (
        "552 5.3.4 Session size limit exceeded (10240 bytes for all messages of one "
        "connection); send the rest in a new connection"
    )
    assert session_size_reply(10**12, DEFAULT) is None


def test_size_refusal_checks_the_declared_size_against_both_limits() -> None:
    config = replace(DEFAULT, session_size_limit=10 * KB, message_size_limit=8 * KB)

    assert size_refusal(8 * KB, 0, config, 8 * KB) is None
    assert str(size_refusal(8 * KB + 1, 0, config, 8 * KB)).startswith("552 5.3.4 Message size")
    assert str(size_refusal(4 * KB, 7 * KB, config, 8 * KB)).startswith("552 5.3.4 Session size")
    assert size_refusal(4 * KB, 6 * KB, config, 8 * KB) is None


# --- counts -------------------------------------------------------------------------------


def test_recipients_over_the_limit_get_452_so_the_client_sends_the_rest_later() -> None:
    config = replace(DEFAULT, recipients_per_message=100)

    assert recipient_count_reply(99, config, ORG) is None
    assert str(recipient_count_reply(100, config, ORG)) == (
        "452 4.5.3 Too many recipients (limit 100 per message); send the rest later"
    )
    unlimited = replace(DEFAULT, recipients_per_message=None)
    assert recipient_count_reply(10**6, unlimited, ORG) is None


def test_messages_over_the_per_connection_limit_get_421() -> None:
    assert message_count_reply(19, DEFAULT) is None
    assert str(message_count_reply(20, DEFAULT)) == (
        "421 4.7.0 Too many messages in one connection (limit 20); reconnect to send more"
    )
    assert message_count_reply(10**6, replace(DEFAULT, messages_per_connection=None)) is None
