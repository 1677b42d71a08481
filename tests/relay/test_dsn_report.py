"""relay.delivery.dsn_report and badmail: RFC 3464 reports built as bytes and parsed back
with ``email`` (policy default) field by field; badmail files."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.message import Message as MimeMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from relay.delivery.badmail import write_badmail
from relay.delivery.dsn import DsnRecipient, build_dsn, explanation, remote_mta_name

ARRIVAL = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
NOW = datetime(2025, 3, 3, 10, 30, tzinfo=UTC)
UNKNOWN = "550 5.1.1 <bob@remote.test>: Recipient address rejected: user unknown"
ORIGINAL = (
    b"Received: from mail.outside.test ([192.0.2.10]) by mx.smtpadmin.test (smtpadmin)\r\n"
    b"\twith ESMTP id 0ABCDEFGHJKMNP; Mon, 03 Mar 2025 09:00:00 +0000\r\n"
    b"From: Sender <sender@outside.test>\r\n"
    b"To: bob@remote.test\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Mon, 03 Mar 2025 08:59:58 +0000\r\n"
    b"Message-ID: <report.1@outside.test>\r\n"
    b"\r\n"
    b"The secret numbers are in the body.\r\n"
)


def parse(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts_of(report: EmailMessage) -> tuple[EmailMessage, EmailMessage, EmailMessage]:
    payload = report.get_payload()
    assert isinstance(payload, list)
    human, status, headers = payload
    assert isinstance(human, EmailMessage) and isinstance(status, EmailMessage)
    assert isinstance(headers, EmailMessage)
    return human, status, headers


def status_blocks(report: EmailMessage) -> list[MimeMessage]:
    """The per-message block, then one block per recipient, as ``email`` parses them."""
    status = parts_of(report)[1]
    assert status.get_content_type() == "message/delivery-status"
    payload = status.get_payload()
    assert isinstance(payload, list)
    blocks = [block for block in payload if isinstance(block, MimeMessage)]
    assert len(blocks) == len(payload)
    return blocks


def decoded(part: EmailMessage) -> bytes:
    """A part's body after its transfer encoding is undone."""
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def failure(**fields: Any) -> DsnRecipient:
    fields.setdefault("address", "bob@remote.test")
    fields.setdefault("action", "failed")
    fields.setdefault("status", "5.1.1")
    fields.setdefault("diagnostic", UNKNOWN)
    fields.setdefault("remote_mta", "mx1.remote.test")
    fields.setdefault("last_attempt", NOW - timedelta(minutes=1))
    return DsnRecipient(**fields)


def build(**fields: Any) -> bytes:
    fields.setdefault("original", ORIGINAL)
    fields.setdefault("sender", "sender@outside.test")
    fields.setdefault("recipients", [failure()])
    fields.setdefault("reporting_mta", "mx.smtpadmin.test")
    fields.setdefault("arrival", ARRIVAL)
    fields.setdefault("kind", "failure")
    fields.setdefault("queue_id", "0ABCDEFGHJKMNP")
    fields.setdefault("now", NOW)
    return build_dsn(**fields)


def text_of(part: EmailMessage) -> str:
    """A text part's content with LF line endings."""
    return str(part.get_content()).replace("\r\n", "\n")


def unfolded(text: str | None) -> str:
    return " ".join((text or "").split())


# --- the report as bytes -----------------------------------------------------------------


def test_a_failure_report_is_a_multipart_report_of_text_status_and_original_headers() -> None:
    report = parse(build())

    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in parts_of(report)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert report.defects == []
    assert all(part.defects == [] for part in report.walk())


def test_it_comes_from_the_postmaster_to_the_sender_as_an_auto_reply() -> None:
    report = parse(build(postmaster="postmaster@smtpadmin.test"))

    assert report["From"].addresses[0].addr_spec == "postmaster@smtpadmin.test"
    assert report["From"].addresses[0].display_name == "Mail Delivery System"
    assert report["To"].addresses[0].addr_spec == "sender@outside.test"
    assert report["Subject"] == "Delivery Status Notification (Failure)"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["MIME-Version"] == "1.0"
    assert parsedate_to_datetime(report["Date"]) == NOW
    assert re.fullmatch(
        r"<\d{14}\.0ABCDEFGHJKMNP\.[0-9a-f]{8}@mx\.smtpadmin\.test>", report["Message-ID"]
    )
    assert report["In-Reply-To"] == "<report.1@outside.test>"
    assert report["References"] == "<report.1@outside.test>"


def test_without_a_postmaster_address_it_comes_from_the_reporting_mtas_postmaster() -> None:
    report = parse(build())

    assert report["From"].addresses[0].addr_spec == "postmaster@mx.smtpadmin.test"


def test_the_delivery_status_has_the_per_message_fields_then_one_block_per_recipient() -> None:
    second = failure(
        address="carol@remote.test",
        status="5.2.2",
        diagnostic="552 5.2.2 <carol@remote.test>: mailbox full",
        remote_mta="",
        last_attempt=None,
    )
    report = parse(build(recipients=[failure(), second]))

    per_message, bob, carol = status_blocks(report)
    assert per_message["Reporting-MTA"] == "dns; mx.smtpadmin.test"
    assert per_message["X-Smtpadmin-Queue-ID"] == "0ABCDEFGHJKMNP"
    assert per_message["X-Smtpadmin-Sender"] == "rfc822; sender@outside.test"
    assert parsedate_to_datetime(per_message["Arrival-Date"]) == ARRIVAL
    assert bob["Final-Recipient"] == "rfc822; bob@remote.test"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx1.remote.test"
    assert unfolded(bob["Diagnostic-Code"]) == f"smtp; {UNKNOWN}"
    assert parsedate_to_datetime(bob["Last-Attempt-Date"]) == NOW - timedelta(minutes=1)
    assert bob["Will-Retry-Until"] is None
    assert carol["Final-Recipient"] == "rfc822; carol@remote.test"
    assert carol["Status"] == "5.2.2"
    assert unfolded(carol["Diagnostic-Code"]) == "smtp; 552 5.2.2 <carol@remote.test>: mailbox full"
    assert carol["Remote-MTA"] is None
    assert carol["Last-Attempt-Date"] is None


def test_a_diagnostic_that_already_names_its_type_is_not_typed_twice() -> None:
    report = parse(build(recipients=[failure(diagnostic=f"smtp; {UNKNOWN}")]))

    assert unfolded(status_blocks(report)[1]["Diagnostic-Code"]) == f"smtp; {UNKNOWN}"


def test_a_diagnostic_that_is_no_smtp_reply_gets_our_own_type() -> None:
    deleted = failure(status="4.3.2", diagnostic="4.3.2 Message deleted by an administrator")
    report = parse(build(recipients=[deleted]))

    assert status_blocks(report)[1]["Diagnostic-Code"] == (
        "X-Smtpadmin; 4.3.2 Message deleted by an administrator"
    )
    assert "An administrator deleted the message" in text_of(parts_of(report)[0])


def test_the_human_part_says_what_failed_why_what_the_server_said_and_what_to_do() -> None:
    report = parse(build())

    text = text_of(parts_of(report)[0])
    assert "Delivery to the following recipients failed." in text
    assert "Subject:  Quarterly report" in text
    assert "Sent:     Mon, 03 Mar 2025 08:59:58 +0000" in text
    assert "      bob@remote.test\n" in text
    assert "does not exist at the organization" in unfolded(text)
    assert "Check the e-mail address" in unfolded(text)
    assert "The reply from mx1.remote.test:" in text
    assert UNKNOWN in text
    assert "<mx.smtpadmin.test #5.1.1>" in text


def test_the_original_headers_are_returned_but_never_the_body() -> None:
    data = build()

    headers = parts_of(parse(data))[2]
    returned = decoded(headers)
    assert returned == ORIGINAL.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert b"secret numbers" not in data
    assert parse(returned)["Message-ID"] == "<report.1@outside.test>"


def test_every_line_ends_in_crlf_and_none_is_longer_than_998_octets() -> None:
    long_header = b"X-Long: " + b"y" * 3000 + b"\r\n"
    original = long_header + ORIGINAL
    reply = "550 5.7.1 " + "refused " * 400
    data = build(original=original, recipients=[failure(diagnostic=reply)])

    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    report = parse(data)
    assert decoded(parts_of(report)[2]).startswith(long_header)
    assert unfolded(status_blocks(report)[1]["Diagnostic-Code"]) == f"smtp; {unfolded(reply)}"


def test_8bit_utf8_and_latin1_original_headers_survive_byte_for_byte() -> None:
    utf8 = "Subject: Résumé für Zoë\r\n".encode()
    latin1 = "X-Old-Mailer: café crème\r\n".encode("latin-1")
    original = utf8 + latin1 + ORIGINAL.replace(b"Subject: Quarterly report\r\n", b"")
    data = build(original=original)

    assert data.isascii(), "8-bit text travels quoted-printable, safe on a 7-bit hop"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    human, _status, headers = parts_of(parse(data))
    assert decoded(headers).startswith(utf8 + latin1)
    assert "Subject:  Résumé für Zoë" in text_of(human)


def test_encoded_word_subjects_are_shown_decoded_in_the_human_part() -> None:
    original = ORIGINAL.replace(
        b"Subject: Quarterly report", b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?="
    )
    human = parts_of(parse(build(original=original)))[0]

    assert "Subject:  Grüße" in text_of(human)
    assert human.get_content_charset() == "utf-8"


def test_a_delay_report_warns_and_says_until_when_delivery_is_retried() -> None:
    until = NOW + timedelta(days=2)
    delayed = failure(
        action="delayed",
        status="4.4.1",
        diagnostic="421 4.4.1 mx1.remote.test: connection timed out",
        will_retry_until=until,
    )
    report = parse(build(kind="delay", recipients=[delayed]))

    assert report["Subject"] == "Delivery Status Notification (Delay)"
    block = status_blocks(report)[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.4.1"
    assert parsedate_to_datetime(block["Will-Retry-Until"]) == until
    text = text_of(parts_of(report)[0])
    assert "THIS IS A WARNING MESSAGE ONLY." in text
    assert "YOU DO NOT NEED TO RESEND YOUR MESSAGE." in text
    assert "Delivery to the following recipients has been delayed." in text
    assert "will keep trying to deliver it until Wed, 05 Mar 2025 10:30:00 +0000" in unfolded(text)


def test_an_expiration_report_is_a_4_4_7_failure_that_could_not_be_delivered_in_time() -> None:
    expired = failure(status="4.4.7", diagnostic="451 4.4.1 mx1.remote.test: no answer")
    report = parse(build(kind="expiration", recipients=[expired]))

    assert report["Subject"] == "Delivery Status Notification (Failure)"
    block = status_blocks(report)[1]
    assert (block["Action"], block["Status"]) == ("failed", "4.4.7")
    text = unfolded(text_of(parts_of(report)[0]))
    assert "could not be delivered in time" in text
    assert "The last reply from mx1.remote.test: 451 4.4.1" in text
    assert "<mx.smtpadmin.test #4.4.7>" in text


def test_an_internationalized_recipient_makes_a_global_delivery_status() -> None:
    data = build(recipients=[failure(address="zoë@remote.test")])

    status = parts_of(parse(data))[1]
    assert status.get_content_type() == "message/global-delivery-status"
    assert status["Content-Transfer-Encoding"] == "8bit"
    assert "Final-Recipient: utf-8; zoë@remote.test\r\n".encode() in data


def test_it_refuses_an_unknown_kind_and_a_report_on_nobody() -> None:
    with pytest.raises(ValueError, match="Unknown DSN kind"):
        build(kind="bounce")
    with pytest.raises(ValueError, match="at least one recipient"):
        build(recipients=[])


def test_explanations_go_from_the_exact_code_to_its_subject_to_its_class() -> None:
    assert "does not exist" in explanation("5.1.1")
    assert "mailbox is full" in explanation("5.2.2")
    assert "problem with the recipient's address" in explanation("5.1.9")
    assert "refused the message permanently" in explanation("5.9.9")
    assert "could not accept the message for now" in explanation("4.9.9")


@pytest.mark.parametrize(
    ("hop", "name"),
    [
        ("mx1.remote.test [192.0.2.1]:25", "mx1.remote.test"),
        ("mx1.remote.test", "mx1.remote.test"),
        ("smart.example.net:2525", "smart.example.net"),
        ("[192.0.2.7]:2525", "[192.0.2.7]"),
        ("local delivery", ""),
        ("", ""),
    ],
)
def test_the_remote_mta_is_the_host_of_the_hop(hop: str, name: str) -> None:
    assert remote_mta_name(hop) == name


# --- badmail -----------------------------------------------------------------------------


def test_badmail_writes_the_message_and_a_reason_file_next_to_it(tmp_path: Path) -> None:
    eml = write_badmail(tmp_path / "bad", b"Subject: x\r\n\r\nbody\r\n", "Because.")
    again = write_badmail(tmp_path / "bad", b"Subject: x\r\n\r\nbody\r\n", "Because.")

    assert eml != again
    assert eml.suffix == ".eml"
    assert eml.read_bytes() == b"Subject: x\r\n\r\nbody\r\n"
    assert eml.with_suffix(".txt").read_text() == "Because.\n"
    assert sorted(p.suffix for p in eml.parent.iterdir()) == [".eml", ".eml", ".txt", ".txt"]
