"""The paths of MAIL FROM and RCPT TO, read strictly (RFC 5321 section 4.1.2, RFC 6531 for
UTF-8), so the relay decision is made on one unambiguous address.

aiosmtpd parses the argument with the RFC 5322 header parser of the ``email`` package, which
is more forgiving than SMTP: it drops source routes (``<@a,@b:user@c>`` becomes ``user@c``),
comments (``user(x)@host``) and blanks (``<user @ host>``), decodes RFC 2047 encoded words
(``=?utf-8?q?user=40evil.com?=@host`` becomes ``"user@evil.com"@host``), unquotes control
characters and accepts a missing ``>``. ``parse_path`` reads the raw argument itself and refuses
it unless aiosmtpd's reading names the same mailbox: two parsers disagreeing about an address
is exactly what relay and smuggling tricks live on.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import NamedTuple

from django.core.exceptions import ValidationError

from smtpadmin.validators import normalize_domain

MAX_LOCAL_PART = 64  # octets, RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # octets, RFC 5321 4.5.3.1.2
MAX_PATH = 256  # octets including "<" and ">", RFC 5321 4.5.3.1.3

# RFC 5322 atext; RFC 6531 adds UTF-8 (checked separately, character by character).
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_DOMAIN_ASCII = re.compile(r"[A-Za-z0-9.-]*")


class Reply(NamedTuple):
    """An SMTP reply: ``str(Reply(550, "5.7.1 Relaying denied"))`` is the line to send."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class ParsedAddress:
    """A path as policy and intake use it.

    ``address`` is ``local@domain`` with the domain in lower-case IDNA (A-labels) or a
    normalised address literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``) and the local part as
    sent, in its shortest quoting (``"john.doe"`` becomes ``john.doe``; ``"a b"`` stays quoted).
    The null reverse-path ``<>`` has every text field empty and ``is_null`` set.
    """

    address: str
    domain: str
    local: str
    is_null: bool = False

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def needs_smtputf8(self) -> bool:
        """Non-ASCII in the local part: only an SMTPUTF8 next hop can take it."""
        return not self.address.isascii()


NULL_PATH = ParsedAddress(address="", domain="", local="", is_null=True)


class _Refused(Exception):
    """Parsing stopped. ``not_allowed``: valid syntax that is refused here (553, not 501)."""

    def __init__(self, reason: str, *, not_allowed: bool = False, enhanced: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.not_allowed = not_allowed
        self.enhanced = enhanced


def parse_path(
    raw_argument: str, addr_spec: str, *, sender: bool, smtputf8: bool = True
) -> ParsedAddress | Reply:
    """Read the argument after ``FROM:`` / ``TO:`` (parameters may follow after a space).

    ``addr_spec`` is what aiosmtpd made of the same argument (``"<>"`` for the null path); a
    different reading is refused. ``smtputf8``: whether the transaction declared SMTPUTF8
    (non-ASCII addresses need it, RFC 6531). Returns a 501 reply for bad syntax and a 553 reply
    for forms that are valid but not accepted here (source routes, '@' in a local part, address
    literals as recipients, non-ASCII without SMTPUTF8), with enhanced code 5.1.7 for the sender
    and 5.1.3 for a recipient.
    """
    what = "sender" if sender else "recipient"
    status = "5.1.7" if sender else "5.1.3"
    try:
        parsed, path = _parse(raw_argument, sender=sender)
        if parsed.is_null:
            if addr_spec not in ("<>", ""):
                raise _Refused("the argument was read two different ways")
            return parsed
        if not _same_mailbox(parsed, addr_spec):
            raise _Refused(
                "the address reads differently to different parsers (encoded words, comments "
                "or obsolete syntax); write it plainly as <local@domain>"
            )
        if not smtputf8 and not path.isascii():
            raise _Refused(
                "a non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM",
                not_allowed=True,
                enhanced="5.6.7",
            )
    except _Refused as refused:
        code = 553 if refused.not_allowed else 501
        return Reply(code, f"{refused.enhanced or status} Bad {what} address: {refused.reason}")
    return parsed


def _parse(raw_argument: str, *, sender: bool) -> tuple[ParsedAddress, str]:
    """The address and the path's text (without the brackets)."""
    text = raw_argument.strip(" \t")
    if text.startswith("<"):
        end = _closing_bracket(text)
        inner, rest = text[1:end], text[end + 1 :]
        if rest and rest[0] != " ":
            raise _Refused(f"unexpected text after '>': {echo(rest)}")
    else:
        # Without angle brackets (not RFC 5321, but common): the path runs to the first blank.
        inner = text.split(" ", 1)[0]
        if not inner:
            raise _Refused("empty; write <local@domain>")
        if ">" in inner:
            raise _Refused("'>' without '<'")
    if len(inner.encode("utf-8", "surrogatepass")) + 2 > MAX_PATH:
        raise _Refused(f"longer than {MAX_PATH} octets")
    if inner == "":
        if not sender:
            raise _Refused("the null address <> cannot be a recipient")
        return NULL_PATH, inner
    if inner.startswith("@") and ":" in inner:
        raise _Refused(
            "source routes (<@relay:user@domain>) are not accepted; address the mailbox "
            "directly as <user@domain>",
            not_allowed=True,
        )
    local_value, domain_raw = _split_mailbox(inner)
    local = _canonical_local(local_value)
    domain = _normal_domain(domain_raw, sender=sender)
    return ParsedAddress(address=f"{local}@{domain}", domain=domain, local=local), inner


def _closing_bracket(text: str) -> int:
    """The index of the '>' that closes the path, skipping quoted strings."""
    quoted = False
    index = 1
    while index < len(text):
        char = text[index]
        if quoted and char == "\\":
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
        index += 1
    raise _Refused("missing '>'")


def _split_mailbox(inner: str) -> tuple[str, str]:
    """(the local part's value, unquoted; the domain as written)."""
    if inner.startswith('"'):
        index, value = _read_quoted_string(inner)
        local_raw = inner[:index]
        if index >= len(inner) or inner[index] != "@":
            raise _Refused("a quoted local part must be followed by '@domain'")
        domain_raw = inner[index + 1 :]
        if "@" in value:
            raise _Refused("a local part containing '@' is not accepted", not_allowed=True)
    else:
        local_raw, at, domain_raw = inner.rpartition("@")
        if not at:
            raise _Refused("an address needs a domain: <local@domain>")
        if "@" in local_raw:
            raise _Refused(
                "more than one '@': a local part containing '@' is not accepted", not_allowed=True
            )
        if '"' in local_raw:
            raise _Refused("quotes only around the whole local part")
        _check_dot_string(local_raw)
        value = local_raw
    if not value:
        raise _Refused("empty local part")
    if len(local_raw.encode("utf-8", "surrogatepass")) > MAX_LOCAL_PART:
        raise _Refused(f"local part longer than {MAX_LOCAL_PART} octets")
    if not domain_raw:
        raise _Refused("an address needs a domain: <local@domain>")
    return value, domain_raw


def _read_quoted_string(text: str) -> tuple[int, str]:
    """Read ``"..."`` at the start of ``text``: (index after the closing quote, content)."""
    value: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return index + 1, "".join(value)
        if char == "\\":
            if index + 1 >= len(text) or not 32 <= ord(text[index + 1]) <= 126:
                raise _Refused(
                    "a backslash in a quoted local part must escape a printable character"
                )
            value.append(text[index + 1])
            index += 2
            continue
        if not (32 <= ord(char) <= 126 or _utf8_char(char)):
            raise _Refused("control or invalid character in the quoted local part")
        value.append(char)
        index += 1
    raise _Refused("unterminated quoted local part")


def _utf8_char(char: str) -> bool:
    """A non-ASCII character that may appear in an address (RFC 6531): printable, and not a
    lone surrogate (aiosmtpd decodes invalid UTF-8 with surrogateescape)."""
    return ord(char) > 127 and char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF


def _check_dot_string(local: str) -> None:
    if not local:
        return
    for atom in local.split("."):
        if not atom:
            raise _Refused("a local part cannot start or end with a dot or have two dots in a row")
        for char in atom:
            if char not in _ATEXT and not _utf8_char(char):
                raise _Refused(f"{_char_name(char)} is not allowed in a local part")


def _is_dot_string(value: str) -> bool:
    try:
        _check_dot_string(value)
    except _Refused:
        return False
    return bool(value)


def _canonical_local(value: str) -> str:
    """The shortest way to write a local part: bare when a dot-string, else quoted."""
    if _is_dot_string(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _normal_domain(domain_raw: str, *, sender: bool) -> str:
    if domain_raw.startswith("["):
        literal = _address_literal(domain_raw)
        if not sender:
            raise _Refused(
                "address literals are not accepted for recipients; use a domain name",
                not_allowed=True,
            )
        return literal
    text = domain_raw[:-1] if domain_raw.endswith(".") else domain_raw  # the root label
    if text.endswith(".") or not text:
        raise _Refused(f"'{echo(domain_raw)}' is not a valid domain name")
    ascii_part = "".join(c for c in text if c.isascii())
    if not _DOMAIN_ASCII.fullmatch(ascii_part):
        raise _Refused(f"'{echo(domain_raw)}' is not a domain name")
    if any(not _utf8_char(c) for c in text if not c.isascii()):
        raise _Refused(f"'{echo(domain_raw)}' is not a domain name")
    try:
        domain = _normalized_domain(text)
    except (ValidationError, ValueError):
        raise _Refused(f"'{echo(domain_raw)}' is not a valid domain name") from None
    if len(domain) > MAX_DOMAIN:
        raise _Refused(f"domain longer than {MAX_DOMAIN} octets")
    return domain


@functools.lru_cache(maxsize=4096)
def _normalized_domain(text: str) -> str:
    """``normalize_domain``, remembered: IDNA is most of the cost of reading a path, and the
    relay sees the same few domains again and again (a refusal is not remembered)."""
    return normalize_domain(text)


def _address_literal(text: str) -> str:
    if not text.endswith("]"):
        raise _Refused(f"'{echo(text)}' is not an address literal")
    inside = text[1:-1]
    if inside[:5].lower() == "ipv6:":
        try:
            return f"[IPv6:{ipaddress.IPv6Address(inside[5:]).compressed}]"
        except ValueError:
            raise _Refused(f"'{echo(text)}' is not an IPv6 address literal") from None
    try:
        return f"[{ipaddress.IPv4Address(inside).compressed}]"
    except ValueError:
        raise _Refused(
            f"'{echo(text)}' is not an address literal ([192.0.2.1] or [IPv6:2001:db8::1])"
        ) from None


def _same_mailbox(parsed: ParsedAddress, addr_spec: str) -> bool:
    """Does aiosmtpd's addr-spec name the mailbox we read from the raw argument?"""
    local, at, domain = addr_spec.rpartition("@")
    if not at or not local:
        return False
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        try:
            end, local_value = _read_quoted_string(local)
        except _Refused:
            return False
        if end != len(local):
            return False
    else:
        local_value = local
    if local_value != _local_value(parsed.local):
        return False
    try:
        if domain.startswith("["):
            return _address_literal(domain) == parsed.domain
        return _normalized_domain(domain) == parsed.domain
    except (_Refused, ValidationError, ValueError):
        return False


def _local_value(local: str) -> str:
    if local.startswith('"'):
        return _read_quoted_string(local)[1]
    return local


def _char_name(char: str) -> str:
    if char == " ":
        return "a blank"
    return f"'{char}'" if 32 < ord(char) < 127 else f"character U+{ord(char):04X}"


def echo(text: str, limit: int = 80) -> str:
    """Untrusted text made safe to put in a reply or a log line: printable ASCII only."""
    shown = "".join(c if 32 <= ord(c) <= 126 else "?" for c in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
