"""relay.headers: the Received header, header-block facts, the Message-ID we add, folding."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime

import pytest

from relay.headers import (
    add_message_id,
    fold,
    header_facts,
    make_message_id,
    protocol_name,
    received_header,
    split_message,
)

WHEN = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


def received(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "helo": "client.example.org",
        "client_address": "192.0.2.10",
        "client_name": "mail.example.org",
        "fqdn": "mx.smtpadmin.test",
        "protocol": "ESMTP",
        "queue_id": "0ABCDEFGHJKMNP",
        "recipients": ["alice@smtpadmin.test"],
        "date": WHEN,
    }
    fields.update(overrides)
    return received_header(**fields)  # type: ignore[arg-type]


def unfolded(header: bytes) -> str:
    return re.sub(r"\r\n[ \t]+", " ", header.decode()).rstrip("\r\n")


def assert_well_formed(block: bytes) -> None:
    """Every line CRLF-terminated, none longer than 998 octets, no bare CR or LF."""
    assert block.endswith(b"\r\n")
    lines = block.split(b"\r\n")[:-1]
    for line in lines:
        assert b"\r" not in line and b"\n" not in line
        assert len(line) <= 998


# --- Received ----------------------------------------------------------------------------


def test_it_writes_every_part_of_the_received_header_in_rfc_5321_order() -> None:
    text = unfolded(received())

    assert text == (
        "Received: from client.example.org (mail.example.org [192.0.2.10]) "
        "by mx.smtpadmin.test (smtpadmin) with ESMTP id 0ABCDEFGHJKMNP "
        "for <alice@smtpadmin.test>; Sat, 14 Mar 2026 15:09:26 +0000"
    )


def test_its_received_date_is_an_rfc_5322_date_that_parses_back() -> None:
    text = unfolded(received())
    date = text.rpartition("; ")[2]

    assert email.utils.parsedate_to_datetime(date) == WHEN


def test_it_says_unknown_when_the_client_name_was_not_confirmed() -> None:
    assert "(unknown [192.0.2.10])" in unfolded(received(client_name=""))


def test_it_writes_an_ipv6_client_as_an_address_literal() -> None:
    text = unfolded(received(client_address="2001:db8::25", client_name=""))
    assert "(unknown [IPv6:2001:db8::25])" in text


def test_it_names_the_client_by_address_when_it_sent_no_helo() -> None:
    assert "from [192.0.2.10] (mail.example.org [192.0.2.10])" in unfolded(received(helo=""))


def test_it_names_the_recipient_only_when_there_is_exactly_one() -> None:
    assert "for <" not in unfolded(received(recipients=["a@x.test", "b@x.test"]))
    assert "for <" not in unfolded(received(recipients=[]))
    assert "for <a@x.test>;" in unfolded(received(recipients=["a@x.test"]))


def test_it_neutralises_a_helo_that_tries_to_inject_header_lines() -> None:
    header = received(helo="evil) by trusted.example\r\nX-Injected: yes (")

    assert_well_formed(header)
    text = unfolded(header)
    assert not any(line.startswith(b"X-Injected") for line in header.split(b"\r\n"))
    assert text.count("(") == text.count(")") == 2  # only our own comments
    assert "from evil??by?trusted.example??X-Injected:?yes?? (mail.example.org" in text


@pytest.mark.parametrize(
    ("esmtp", "tls", "auth", "utf8", "expected"),
    [
        (False, False, False, False, "SMTP"),
        (True, False, False, False, "ESMTP"),
        (True, True, False, False, "ESMTPS"),
        (True, False, True, False, "ESMTPA"),
        (True, True, True, False, "ESMTPSA"),
        (True, True, True, True, "UTF8SMTPSA"),
        (True, False, False, True, "UTF8SMTP"),
    ],
)
def test_it_names_the_protocol_as_rfc_3848_and_rfc_6531_do(
    esmtp: bool, tls: bool, auth: bool, utf8: bool, expected: str
) -> None:
    assert protocol_name(esmtp=esmtp, tls=tls, authenticated=auth, smtputf8=utf8) == expected


def test_it_keeps_every_received_line_within_998_octets_even_with_long_parts() -> None:
    header = received(
        helo="h" * 900,
        client_name="n" * 900,
        fqdn="f" * 250 + ".test",
        recipients=["r" * 64 + "@" + ("d" * 60 + ".") * 4 + "test"],
    )

    assert_well_formed(header)
    assert header.count(b"\r\n") > 1  # folded, not one long line


def test_it_folds_the_received_header_near_78_columns_when_it_can() -> None:
    header = received()
    assert_well_formed(header)
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    assert header.startswith(b"Received: from ")


# --- folding -----------------------------------------------------------------------------


def test_it_cuts_a_word_too_long_for_any_line_rather_than_write_an_illegal_line() -> None:
    header = fold("X-Long", "short " + "w" * 2500 + " tail")

    assert_well_formed(header)
    assert b"w" * 997 in header
    assert header.replace(b"\r\n\t", b"").count(b"w") == 2500


def test_it_folds_with_crlf_and_whitespace_only() -> None:
    header = fold("Subject", " ".join(["word"] * 60))

    assert_well_formed(header)
    parsed = email.message_from_bytes(header + b"\r\n", policy=email.policy.compat32)
    assert " ".join(parsed["Subject"].split()) == " ".join(["word"] * 60)


# --- the header block --------------------------------------------------------------------


def test_it_splits_the_header_block_at_the_first_empty_line() -> None:
    header, body = split_message(b"Subject: a\r\nTo: b\r\n\r\nSubject: not a header\r\n")
    assert header == b"Subject: a\r\nTo: b\r\n"
    assert body == b"Subject: not a header\r\n"


def test_it_treats_a_message_that_starts_with_text_as_having_no_headers() -> None:
    assert split_message(b"Hello there\r\nSubject: x\r\n") == (
        b"",
        b"Hello there\r\nSubject: x\r\n",
    )
    assert split_message(b" continued\r\n") == (b"", b" continued\r\n")


def test_it_takes_the_message_id_and_subject_from_the_header_block_only() -> None:
    facts = header_facts(
        b"Message-ID: <abc.123@example.org>\r\nSubject: Hello\r\n\r\n"
        b"Subject: body text\r\nMessage-ID: <body@example.org>\r\n"
    )
    assert facts.message_id == "<abc.123@example.org>"
    assert facts.subject == "Hello"


def test_it_reads_header_names_in_any_case_and_unfolds_values() -> None:
    facts = header_facts(b"SUBJECT: first part\r\n\tsecond part\r\nmessage-id:\r\n <x@y>\r\n\r\n")
    assert facts.subject == "first part second part"
    assert facts.message_id == "<x@y>"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", "Grüße aus Köln"),
        (b"=?ISO-8859-1?B?Q2Fm6Q==?= au lait", "Café au lait"),
        (b"=?utf-8?b?5pel5pys?= =?utf-8?b?6Kqe?=", "日本語"),
        (b"Plain subject", "Plain subject"),
    ],
)
def test_it_decodes_the_subject_per_rfc_2047_for_display(raw: bytes, expected: str) -> None:
    assert header_facts(b"Subject: " + raw + b"\r\n\r\nbody").subject == expected


def test_it_reads_a_subject_in_raw_bytes_that_are_not_utf_8() -> None:
    facts = header_facts(b"Subject: caf\xe9 cr\xe8me\r\nMessage-ID: <\xff@x>\r\n\r\n\xff\xfe")
    assert facts.subject == "café crème"
    assert facts.message_id == "<ÿ@x>"


def test_it_reads_a_raw_utf_8_subject() -> None:
    assert header_facts("Subject: Grüße\r\n\r\n".encode()).subject == "Grüße"


@pytest.mark.parametrize(
    "raw",
    [
        b"=?x-unknown-charset?q?abc?=",
        b"=?utf-8?b?!!!not-base64?=",
        b"=?utf-8?q?caf=E9?=",  # declared UTF-8, is Latin-1
        b"=?utf-8?",
    ],
)
def test_it_never_raises_on_a_broken_encoded_subject(raw: bytes) -> None:
    subject = header_facts(b"Subject: " + raw + b"\r\n\r\n").subject
    assert isinstance(subject, str) and subject


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (b"Priority: urgent\r\n", "high"),
        (b"Priority: non-urgent\r\n", "low"),
        (b"Priority: normal\r\n", "normal"),
        (b"Importance: High\r\n", "high"),
        (b"Importance: low\r\n", "low"),
        (b"X-Priority: 1 (Highest)\r\n", "high"),
        (b"X-Priority: 2\r\n", "high"),
        (b"X-Priority: 3 (Normal)\r\n", "normal"),
        (b"X-Priority: 5 (Lowest)\r\n", "low"),
        (b"Subject: none\r\n", "normal"),
        (b"Importance: whatever\r\nX-Priority: 5\r\n", "low"),
        (b"Priority: non-urgent\r\nImportance: high\r\n", "low"),
        (b"Importance: high\r\nX-Priority: 5\r\n", "high"),
    ],
)
def test_it_reads_the_priority_from_priority_importance_or_x_priority(
    headers: bytes, expected: str
) -> None:
    assert header_facts(headers + b"\r\nbody").priority == expected


# --- Message-ID --------------------------------------------------------------------------


def test_it_makes_unique_message_ids_under_our_fqdn() -> None:
    ids = {make_message_id("mx.smtpadmin.test", "0ABC", date=WHEN) for _ in range(1000)}
    assert len(ids) == 1000
    for message_id in ids:
        assert re.fullmatch(r"<20260314150926\.0ABC\.[0-9a-f]{8}@mx\.smtpadmin\.test>", message_id)


def test_it_adds_the_message_id_at_the_end_of_the_header_block() -> None:
    content = b"From: a@x.test\r\nSubject: hi\r\n\r\nBody line\r\n"

    added = add_message_id(content, "<new@mx.test>")

    assert added == (
        b"From: a@x.test\r\nSubject: hi\r\nMessage-ID: <new@mx.test>\r\n\r\nBody line\r\n"
    )
    assert header_facts(added).message_id == "<new@mx.test>"


def test_it_gives_a_message_without_headers_a_header_block_and_keeps_its_text_as_body() -> None:
    added = add_message_id(b"Just text\r\n", "<new@mx.test>")

    assert added == b"Message-ID: <new@mx.test>\r\n\r\nJust text\r\n"
    parsed = email.message_from_bytes(added)
    assert parsed["Message-ID"] == "<new@mx.test>"
    assert parsed.get_payload() == "Just text\r\n"


def test_it_adds_the_message_id_to_a_message_that_is_only_headers() -> None:
    added = add_message_id(b"Subject: no body\r\n", "<new@mx.test>")
    assert added == b"Subject: no body\r\nMessage-ID: <new@mx.test>\r\n\r\n"
    assert_well_formed(added)


def test_it_adds_the_message_id_to_an_empty_message() -> None:
    assert add_message_id(b"", "<new@mx.test>") == b"Message-ID: <new@mx.test>\r\n\r\n"


def test_it_keeps_bytes_that_are_not_utf_8_when_adding_a_message_id() -> None:
    content = b"Subject: caf\xe9\r\n\r\n\xff\xfe body\r\n"
    added = add_message_id(content, "<new@mx.test>")
    assert added == b"Subject: caf\xe9\r\nMessage-ID: <new@mx.test>\r\n\r\n\xff\xfe body\r\n"
