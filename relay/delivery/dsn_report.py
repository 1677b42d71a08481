"""Delivery status notifications as bytes (RFC 3464): pure, no database.

``build_dsn`` writes a multipart/report (RFC 6522) with three parts: a human-readable
explanation in the spirit of Exchange's NDRs (what failed, the enhanced status code, the remote
server's reply and what to do), the machine-readable message/delivery-status, and the
original's header block as text/rfc822-headers (never its body). Every line ends in CRLF and is
at most 998 octets; parts that carry 8-bit text (an original's raw UTF-8 or Latin-1 headers, a
subject) are quoted-printable, so the report crosses any hop and a reader gets the original
bytes back. Addresses that are not ASCII (SMTPUTF8) make the status part
message/global-delivery-status with utf-8 address types (RFC 6533).
"""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.quoprimime import body_encode
from email.utils import format_datetime

from django.utils import timezone

from relay.headers import (
    CRLF,
    MAX_LINE,
    decode_words,
    fold,
    header_fields,
    make_message_id,
    split_message,
    text_of,
)

FAILURE = "failure"
EXPIRATION = "expiration"
DELAY = "delay"
KINDS = (FAILURE, EXPIRATION, DELAY)

SUBJECTS = {
    FAILURE: "Delivery Status Notification (Failure)",
    EXPIRATION: "Delivery Status Notification (Failure)",
    DELAY: "Delivery Status Notification (Delay)",
}
FROM_NAME = "Mail Delivery System"
_DIAGNOSTIC_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*;")
_SMTP_REPLY = re.compile(r"^[2-5]\d\d[ -]")
_MESSAGE_ID = re.compile(r"^<[!-;=?-~]{1,900}>$")  # printable ASCII, no '<' or '>' inside
_INDENT = " " * 6
_DETAIL_INDENT = " " * 12
_WIDTH = 76


@dataclass(frozen=True)
class DsnRecipient:
    """One recipient as the report tells of it."""

    address: str
    action: str  # "failed" | "delayed" | "delivered" | "relayed" | "expanded" (RFC 3464 2.3.3)
    status: str  # enhanced status, "5.1.1"
    diagnostic: str = ""  # the reply, "550 5.1.1 <bob@example.org>: unknown" ("smtp; " added)
    remote_mta: str = ""  # the host that gave the reply, "mx1.example.org"
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None  # delay reports: when the queue gives up


# --- what a status means to a person -------------------------------------------------------

# Exchange's NDR wording where it has one (KB 284204), then what the sender can do.
_EXPLANATIONS: dict[str, str] = {
    "5.1.1": "The e-mail account does not exist at the organization this message was sent to. "
    "Check the e-mail address, or contact the recipient directly to find out the correct "
    "address.",
    "5.1.0": "The e-mail address could not be found or is not valid. Check the address and "
    "send the message again.",
    "5.1.3": "The format of the e-mail address is not valid. Check the address and send the "
    "message again.",
    "5.1.10": "The recipient's domain says that it accepts no e-mail (a null MX record). Check "
    "the domain part of the address.",
    "5.2.1": "The recipient's mailbox is disabled or does not accept messages. Contact the "
    "recipient another way.",
    "5.2.2": "The recipient's mailbox is full. Send the message again later, or contact the "
    "recipient another way.",
    "5.2.3": "The message is larger than the receiving system accepts. Send a smaller message, "
    "or share large attachments another way.",
    "5.3.4": "The message is larger than the receiving system accepts. Send a smaller message, "
    "or share large attachments another way.",
    "5.3.2": "An administrator deleted the message from the queue before it was delivered.",
    "4.3.2": "An administrator deleted the message from the queue before it was delivered.",
    "5.4.0": "The recipient's e-mail system could not be found: the domain may not exist, or "
    "no server accepts mail for it. Check the domain part of the address.",
    "5.4.4": "No route to the recipient's e-mail system could be found. Check the domain part "
    "of the address; if it is correct, ask your e-mail administrator for help.",
    "5.4.6": "A mail loop was detected: the message was passed around between servers without "
    "reaching the recipient. Ask your e-mail administrator for help.",
    "5.4.8": "A mail loop was detected: the message was passed around between servers without "
    "reaching the recipient. Ask your e-mail administrator for help.",
    "4.4.6": "A mail loop was detected: the message passed through too many servers. Ask your "
    "e-mail administrator for help.",
    "4.4.7": "The message could not be delivered in time: the recipient's e-mail system did not "
    "accept it before the message expired. It may be down, unreachable or refusing "
    "connections. Send the message again later; if the problem continues, contact the "
    "recipient another way.",
    "5.5.3": "The message has too many recipients. Send it to fewer recipients at a time.",
    "5.7.1": "The recipient's e-mail system refused the message: the sender is not allowed to "
    "send to this recipient, or the message was taken for unwanted mail. Contact the "
    "recipient another way.",
}
_BY_SUBJECT: dict[str, str] = {
    "5.1": "There is a problem with the recipient's address. Check the address and send the "
    "message again.",
    "5.2": "The recipient's mailbox cannot accept the message. Contact the recipient another way.",
    "5.4": "The message could not be routed to the recipient's e-mail system. Ask your e-mail "
    "administrator for help.",
    "5.7": "The message was refused by a security or policy setting of the receiving system.",
    "4.4": "The recipient's e-mail system could not be reached for now (it may be down or "
    "busy). Delivery is being retried.",
}
_BY_CLASS = {
    "5": "The recipient's e-mail system refused the message permanently. The reply below says "
    "why; if it does not help, contact the recipient another way.",
    "4": "The recipient's e-mail system could not accept the message for now. Delivery is being "
    "retried; you do not need to send the message again.",
    "2": "The message was delivered.",
}


def explanation(status: str) -> str:
    """What an enhanced status code means for the sender, most specific wording first."""
    subject = ".".join(status.split(".")[:2])
    return (
        _EXPLANATIONS.get(status)
        or _BY_SUBJECT.get(subject)
        or _BY_CLASS.get(status[:1], _BY_CLASS["5"])
    )


# --- building the report -------------------------------------------------------------------


def format_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC))


def _ascii(text: str) -> bool:
    return text.isascii()


def _long_lines(data: bytes) -> bool:
    return any(len(line) > MAX_LINE for line in data.split(b"\n"))


def _part(content_type: str, data: bytes, *, text: bool = True) -> bytes:
    """One body part: ``data`` as is (7bit) when it is ASCII with short lines, else
    quoted-printable (text types) so it survives a 7-bit hop byte for byte. ``data`` has
    CRLF line endings."""
    if data.isascii() and not _long_lines(data):
        encoding = "7bit"
        body = data
    elif text:
        encoding = "quoted-printable"
        body = body_encode(data.decode("latin-1"), maxlinelen=_WIDTH, eol="\r\n").encode("ascii")
    else:  # message/global-delivery-status (RFC 6533): UTF-8 as is, lines already folded
        encoding = "8bit"
        body = data
    if body and not body.endswith(CRLF):
        body += CRLF
    head = fold("Content-Type", content_type) + fold("Content-Transfer-Encoding", encoding)
    return head + CRLF + body


def _charset_of(data: bytes) -> str:
    if data.isascii():
        return "us-ascii"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "iso-8859-1"  # as relay.headers.text_of reads undeclared 8-bit: every byte kept
    return "utf-8"


def _crlf(text: str) -> bytes:
    return "\r\n".join(text.splitlines()).encode("utf-8") + CRLF


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(
        text, _WIDTH, initial_indent=indent, subsequent_indent=indent, break_long_words=False
    )


def _reply_lines(reply: str) -> list[str]:
    return [line.strip() for line in reply.replace("\r", "").split("\n") if line.strip()]


def plain_diagnostic(diagnostic: str) -> str:
    """The reply without its RFC 3464 type ("smtp; 550 ..." -> "550 ...")."""
    if _DIAGNOSTIC_TYPE.match(diagnostic):
        return diagnostic.split(";", 1)[1].strip()
    return diagnostic.strip()


def _human_part(
    *,
    kind: str,
    subject: str,
    sent: str,
    recipients: Sequence[DsnRecipient],
    reporting_mta: str,
    arrival: datetime,
    note: str,
) -> str:
    lines = ["This is an automatically generated Delivery Status Notification.", ""]
    if kind == DELAY:
        lines += [
            "THIS IS A WARNING MESSAGE ONLY.",
            "",
            "YOU DO NOT NEED TO RESEND YOUR MESSAGE.",
            "",
        ]
    elif kind == EXPIRATION:
        lines += ["Your message could not be delivered in time to some or all recipients."]
        lines += [""]
    else:
        lines += ["Your message did not reach some or all of the intended recipients.", ""]
    lines += [f"{_INDENT}Subject:  {subject}", f"{_INDENT}Sent:     {sent}", ""]
    if note:
        lines += [*_wrap(note, ""), ""]
    if kind == DELAY:
        heading = "Delivery to the following recipients has been delayed."
    elif kind == EXPIRATION:
        heading = (
            f"The message could not be delivered in time to the following recipients: "
            f"{reporting_mta} kept trying since {format_date(arrival)} and has given up."
        )
    else:
        heading = "Delivery to the following recipients failed."
    lines += [*_wrap(heading, ""), ""]
    for recipient in recipients:
        lines.append(f"{_INDENT}{recipient.address}")
        lines += _wrap(explanation(recipient.status), _DETAIL_INDENT)
        reply = _reply_lines(plain_diagnostic(recipient.diagnostic))
        if reply:
            last = "The last reply" if kind in (DELAY, EXPIRATION) else "The reply"
            who = f"{last} from {recipient.remote_mta}:" if recipient.remote_mta else f"{last}:"
            lines.append(_DETAIL_INDENT + who)
            lines += [_DETAIL_INDENT + "  " + line for line in reply]
        if recipient.last_attempt is not None:
            lines.append(f"{_DETAIL_INDENT}Last attempt: {format_date(recipient.last_attempt)}")
        if kind == DELAY and recipient.will_retry_until is not None:
            lines += _wrap(
                f"{reporting_mta} will keep trying to deliver it until "
                f"{format_date(recipient.will_retry_until)}.",
                _DETAIL_INDENT,
            )
        lines += [f"{_DETAIL_INDENT}<{reporting_mta} #{recipient.status}>", ""]
    return "\n".join(lines)


def _address_field(name: str, address: str) -> bytes:
    # RFC 6533: an internationalized address is typed utf-8 (in message/global-delivery-status).
    kind = "rfc822" if _ascii(address) else "utf-8"
    return fold(name, f"{kind}; {address}")


def _status_part(
    *,
    kind: str,
    recipients: Sequence[DsnRecipient],
    reporting_mta: str,
    arrival: datetime,
    queue_id: str,
    sender: str,
) -> tuple[str, bytes]:
    per_message = (
        fold("Reporting-MTA", f"dns; {reporting_mta}")
        + fold("X-Smtpadmin-Queue-ID", queue_id)
        # As Postfix's X-Postfix-Sender: only when there is one (not for the null sender).
        + (_address_field("X-Smtpadmin-Sender", sender) if sender else b"")
        + fold("Arrival-Date", format_date(arrival))
    )
    blocks = [per_message]
    for recipient in recipients:
        block = _address_field("Final-Recipient", recipient.address)
        block += fold("Action", recipient.action) + fold("Status", recipient.status)
        if recipient.remote_mta:
            block += fold("Remote-MTA", f"dns; {recipient.remote_mta}")
        diagnostic = recipient.diagnostic.strip()
        if diagnostic:
            if not _DIAGNOSTIC_TYPE.match(diagnostic):
                # An SMTP reply is typed smtp; our own words (an administrator's deletion)
                # get an X- type, as Postfix's "X-Postfix;" does.
                kind_of = "smtp" if _SMTP_REPLY.match(diagnostic) else "X-Smtpadmin"
                diagnostic = f"{kind_of}; {diagnostic}"
            block += fold("Diagnostic-Code", diagnostic)
        if recipient.last_attempt is not None:
            block += fold("Last-Attempt-Date", format_date(recipient.last_attempt))
        if kind == DELAY and recipient.will_retry_until is not None:
            block += fold("Will-Retry-Until", format_date(recipient.will_retry_until))
        blocks.append(block)
    data = CRLF.join(blocks)
    content_type = "message/delivery-status" if data.isascii() else "message/global-delivery-status"
    return content_type, data


def _original_subject_and_date(header_block: bytes, arrival: datetime) -> tuple[str, str]:
    subject, sent = "", ""
    for name, value in header_fields(header_block):
        if name == "subject" and not subject:
            subject = decode_words(text_of(value))
        elif name == "date" and not sent:
            sent = text_of(value)
    subject = " ".join(subject.split()) or "(no subject)"
    return subject, " ".join(sent.split()) or format_date(arrival)


def build_dsn(
    *,
    original: bytes,
    sender: str,
    recipients: Sequence[DsnRecipient],
    reporting_mta: str,
    arrival: datetime,
    kind: str,
    queue_id: str,
    now: datetime | None = None,
    to: str = "",
    postmaster: str = "",
    note: str = "",
) -> bytes:
    """The report on ``recipients`` of ``original`` (the message bytes as queued, queue id
    ``queue_id``, envelope sender ``sender``, "" for <>), written by ``reporting_mta``.
    ``to`` is whom it is addressed to (default: the sender); ``postmaster`` the From address
    (default postmaster@<reporting_mta>); ``note`` an extra paragraph for the person reading."""
    if kind not in KINDS:
        raise ValueError(f"Unknown DSN kind {kind!r}; expected one of {', '.join(KINDS)}.")
    if not recipients:
        raise ValueError("A DSN reports on at least one recipient.")
    now = now or timezone.now()
    to = to or sender
    postmaster = postmaster or f"postmaster@{reporting_mta}"
    header_block, _body = split_message(original)
    header_block = header_block.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    subject, sent = _original_subject_and_date(header_block, arrival)

    human = _human_part(
        kind=kind,
        subject=subject,
        sent=sent,
        recipients=recipients,
        reporting_mta=reporting_mta,
        arrival=arrival,
        note=note,
    )
    human_bytes = _crlf(human)
    status_type, status_bytes = _status_part(
        kind=kind,
        recipients=recipients,
        reporting_mta=reporting_mta,
        arrival=arrival,
        queue_id=queue_id,
        sender=sender,
    )
    parts = [
        _part(f'text/plain; charset="{_charset_of(human_bytes)}"', human_bytes),
        _part(status_type, status_bytes, text=False),
        _part(_headers_type(header_block), header_block),
    ]
    boundary = _boundary(parts)

    message_id = make_message_id(reporting_mta, queue_id, date=now)
    head = (
        fold("From", f"{FROM_NAME} <{postmaster}>")
        + fold("To", f"<{to}>")
        + fold("Date", format_date(now))
        + fold("Subject", SUBJECTS[kind])
        + fold("Message-ID", message_id)
    )
    original_id = _original_message_id(header_block)
    if original_id:
        head += fold("In-Reply-To", original_id) + fold("References", original_id)
    head += (
        fold("Auto-Submitted", "auto-replied")
        + fold("MIME-Version", "1.0")
        + fold(
            "Content-Type",
            f'multipart/report; report-type=delivery-status; boundary="{boundary}"',
        )
    )
    delimiter = b"--" + boundary.encode("ascii")
    body = CRLF + b"This is a MIME-encapsulated message." + CRLF + CRLF
    for part in parts:
        body += delimiter + CRLF + part
        # The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1): this extra
        # one keeps each part's own last line ending, so the original headers come back whole.
        body += CRLF
    body += delimiter + b"--" + CRLF
    return head + body


def _headers_type(header_block: bytes) -> str:
    if header_block.isascii():
        return "text/rfc822-headers"
    return f'text/rfc822-headers; charset="{_charset_of(header_block)}"'


def _boundary(parts: Sequence[bytes]) -> str:
    while True:
        boundary = f"=_smtpadmin_{secrets.token_hex(12)}"
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary


def _original_message_id(header_block: bytes) -> str:
    for name, value in header_fields(header_block):
        if name == "message-id":
            text = text_of(value).strip()
            return text if _MESSAGE_ID.match(text) else ""
    return ""
