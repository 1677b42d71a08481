"""Header work at intake, as pure functions on bytes: the Received header we prepend, the facts
we read from the header block (Message-ID, Subject, priority) and the Message-ID we add when
the client sent none.

Messages arrive as bytes that need not be UTF-8 (8BITMIME, broken mailers, spam): nothing here
raises on odd bytes. Every line written is CRLF-terminated and at most 998 octets long
(RFC 5322 section 2.1.1), folded at whitespace near 78 where possible.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.utils import format_datetime

from connectors.snapshot import Priority

CRLF = b"\r\n"
MAX_LINE = 998  # octets, without the CRLF
SOFT_LINE = 78

_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+$")  # printable ASCII except ':'
_UNSAFE_TOKEN = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")

# --- the header block --------------------------------------------------------------------


def split_message(content: bytes) -> tuple[bytes, bytes]:
    """(header block, body). The header block is the leading run of header fields and their
    continuation lines, each with its line ending; the body starts after the empty line that
    ends it, or at the first line that is not a header field (a message without headers)."""
    position = 0
    length = len(content)
    while position < length:
        end = content.find(b"\n", position)
        line_end = length if end < 0 else end + 1
        line = content[position:line_end].rstrip(b"\r\n")
        if line == b"":
            return content[:position], content[line_end:]
        if line[:1] in (b" ", b"\t"):
            if position == 0:  # a continuation with nothing to continue: no headers
                return b"", content
        else:
            name, colon, _ = line.partition(b":")
            if not colon or not _FIELD_NAME.match(name.rstrip(b" \t")):
                return content[:position], content[position:]
        position = line_end
    return content, b""


def header_fields(header_block: bytes) -> list[tuple[str, bytes]]:
    """The fields of a header block in order: (lower-case name, unfolded raw value)."""
    fields: list[tuple[str, bytes]] = []
    for raw_line in re.split(rb"\r?\n", header_block):
        if not raw_line:
            continue
        if raw_line[:1] in (b" ", b"\t"):
            if fields:
                previous, folded = fields[-1]
                fields[-1] = (previous, folded + b" " + raw_line.strip(b" \t\r"))
            continue
        raw_name, _, value = raw_line.partition(b":")
        name = raw_name.strip().decode("ascii", "replace").lower()
        fields.append((name, value.strip(b" \t\r")))
    return fields


def text_of(value: bytes) -> str:
    """A raw header value as text: UTF-8 when it is, else Latin-1 (which never fails)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded for display; the raw text when they cannot be."""
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        pass
    # An unknown charset or a broken encoded word: decode what we can, replace the rest.
    try:
        parts = decode_header(value)
    except (HeaderParseError, ValueError):
        return value
    text = []
    for part, charset in parts:
        if isinstance(part, str):
            text.append(part)
            continue
        try:
            text.append(part.decode(charset or "ascii", "replace"))
        except LookupError:
            text.append(part.decode("utf-8", "replace"))
    return "".join(text)


_PRIORITY_VALUES: dict[str, dict[str, Priority]] = {
    "priority": {"urgent": "high", "normal": "normal", "non-urgent": "low"},
    "importance": {"high": "high", "normal": "normal", "low": "low"},
}
_X_PRIORITY: dict[str, Priority] = {"1": "high", "2": "high", "3": "normal", "4": "low", "5": "low"}


def priority_of(fields: Sequence[tuple[str, bytes]]) -> Priority:
    """high / normal / low from Priority (RFC 2156), Importance or X-Priority, the first of
    them (in that order) that says something understandable; normal otherwise."""
    by_name: dict[str, str] = {}
    for name, value in fields:
        if name in ("priority", "importance", "x-priority") and name not in by_name:
            by_name[name] = text_of(value).strip().lower()
    for name in ("priority", "importance"):
        word = re.split(r"[\s;(]", by_name.get(name, ""), maxsplit=1)[0]
        if word in _PRIORITY_VALUES[name]:
            return _PRIORITY_VALUES[name][word]
    digit = by_name.get("x-priority", "")[:1]
    return _X_PRIORITY.get(digit, "normal")


@dataclass(frozen=True)
class HeaderFacts:
    message_id: str  # "<...>" as found ("" = none)
    subject: str  # decoded for display
    priority: Priority


def header_facts(content: bytes) -> HeaderFacts:
    fields = header_fields(split_message(content)[0])
    message_id = ""
    subject = ""
    for name, value in fields:
        if name == "message-id" and not message_id:
            text = text_of(value).strip()
            found = _MESSAGE_ID.search(text)
            message_id = found.group(0) if found else text
        elif name == "subject" and not subject:
            subject = decode_words(text_of(value))
    return HeaderFacts(
        message_id=message_id[:MAX_LINE], subject=subject, priority=priority_of(fields)
    )


# --- writing headers ---------------------------------------------------------------------


def fold(name: str, value: str) -> bytes:
    """``Name: value`` folded at whitespace: lines near 78 octets where the words allow, never
    over 998, CRLF endings. A word longer than a line can hold is cut (it cannot otherwise
    be written legally); no header we write has one."""
    head = name.encode("ascii") + b":"
    lines: list[bytes] = []
    current = head
    for word in (w.encode("utf-8") for w in value.split()):
        while len(word) > MAX_LINE - 1:  # 1: the folding whitespace in front of it
            lines.append(current)
            lines.append(b"\t" + word[: MAX_LINE - 1])
            word = word[MAX_LINE - 1 :]
            current = b""
        wanted = len(current) + 1 + len(word)
        if current and (wanted <= SOFT_LINE or (current == head and wanted <= MAX_LINE)):
            current += b" " + word
        else:
            if current:
                lines.append(current)
            current = b"\t" + word
    if current:
        lines.append(current)
    return b"".join(line + CRLF for line in lines if line)


def _token(text: str, limit: int = 255) -> str:
    """A client-supplied word made safe for a header comment: no parentheses, spaces or
    control characters (they would end or fold the clause), bounded length."""
    return _UNSAFE_TOKEN.sub("?", text)[:limit]


def _address_literal(ip: str) -> str:
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool, smtputf8: bool = False) -> str:
    """The ``with`` protocol of the Received header: RFC 3848 (ESMTP, ESMTPS, ESMTPA,
    ESMTPSA), RFC 6531 when the client asked for SMTPUTF8 (UTF8SMTP, UTF8SMTPS, ...), plain
    SMTP after HELO."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def received_header(
    *,
    helo: str,
    client_address: str,
    client_name: str,
    fqdn: str,
    protocol: str,
    queue_id: str,
    recipients: Sequence[str],
    date: datetime | None = None,
) -> bytes:
    """``Received: from HELO (name [ip]) by FQDN (smtpadmin) with PROTOCOL id QUEUEID
    for <rcpt>; date`` (RFC 5321 section 4.4), folded. The reverse DNS name appears only when
    it was forward-confirmed (else "unknown"); "for" only with exactly one recipient, so a
    message to many does not disclose the others' addresses."""
    name = _token(client_name) if client_name else "unknown"
    ip = _address_literal(_token(client_address, 100))
    helo_text = _token(helo) if helo else ip
    when = format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    clauses = [
        f"from {helo_text} ({name} {ip})",
        f"by {_token(fqdn)} (smtpadmin)",
        f"with {protocol} id {queue_id}",
    ]
    if len(recipients) == 1:
        rcpt = "".join(ch for ch in recipients[0] if ch.isprintable() and not ch.isspace())
        clauses.append(f"for <{rcpt[:320]}>")
    value = " ".join(clauses) + "; " + when
    return fold("Received", value)


def make_message_id(fqdn: str, queue_id: str, *, date: datetime | None = None) -> str:
    stamp = (date or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S")
    return f"<{stamp}.{queue_id}.{secrets.token_hex(4)}@{_token(fqdn) or 'localhost'}>"


def add_message_id(content: bytes, message_id: str) -> bytes:
    """``content`` with a Message-ID field at the end of its header block (where Postfix
    puts the headers it adds). A message without any header block gets one, with the empty
    line that separates it from the body."""
    header, body = split_message(content)
    field = fold("Message-ID", message_id)
    if header and not header.endswith(b"\n"):
        header += CRLF  # the last header line had no line ending (content ended there)
    return header + field + CRLF + body


def with_received(content: bytes, received: bytes) -> bytes:
    return received + content
