"""Parsing and normalising of the values administrators type: domains, address-space patterns,
smart hosts, IP / subnet / domain lists, schedules. Pure functions; models, forms and the API
all validate through these, so a rule lives in one place.

Every function raises ``django.core.exceptions.ValidationError`` with a message fit for a form
field, and returns the value in its stored (normal) form.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import idna
from django.core.exceptions import ValidationError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")

SCHEDULE_SLOTS_PER_DAY = 96  # 15-minute resolution
SCHEDULE_SLOTS = 7 * SCHEDULE_SLOTS_PER_DAY


def normalize_domain(value: str) -> str:
    """A host or domain name in lower-case ASCII (IDNA / punycode) without a trailing dot."""
    text = (value or "").strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValidationError("Enter a domain name.", code="required")
    if "*" in text:
        raise ValidationError(f"'{value}' is not a domain name: wildcards are not allowed here.")
    try:
        ascii_name = idna.encode(text, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise ValidationError(f"'{value}' is not a valid domain name.", code="invalid") from None
    ascii_name = ascii_name.lower()
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValidationError(f"'{value}' is not a valid domain name.", code="invalid")
    if labels[-1].isdigit():
        raise ValidationError(f"'{value}' looks like an IP address, not a domain name.")
    return ascii_name


def normalize_domain_pattern(value: str) -> str:
    """An address-space or accepted-domain pattern: ``*``, ``*.domain`` or ``domain``."""
    text = (value or "").strip()
    if text == "*":
        return "*"
    if text.startswith("*."):
        return "*." + normalize_domain(text[2:])
    if "*" in text:
        raise ValidationError(
            f"'{value}' is not a valid pattern: use '*', '*.example.com' or 'example.com'.",
            code="invalid",
        )
    return normalize_domain(text)


def pattern_matches(pattern: str, domain: str) -> bool:
    """Does an (already normal) pattern cover an (already normal) domain?

    ``*`` covers every domain; ``*.example.com`` covers the sub-domains of example.com but not
    example.com itself (list both when both are meant); ``example.com`` covers only itself.
    """
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return domain == pattern


def pattern_specificity(pattern: str) -> int:
    """Higher is more specific: the number of literal labels, exact names one above wildcards.

    ``sub.example.com`` (7) > ``*.example.com`` (4) > ``*.com`` (2) > ``*`` (0). An exact name
    outranks every wildcard that can cover the same domain, because a wildcard only covers
    strict sub-domains of its literal part.
    """
    if pattern == "*":
        return 0
    if pattern.startswith("*."):
        return 2 * len(pattern[2:].split("."))
    return 2 * len(pattern.split(".")) + 1


def normalize_address(value: str) -> str:
    """A mailbox address ``local@domain``: local part kept as typed, domain normalised."""
    text = (value or "").strip()
    if text.count("@") != 1:
        raise ValidationError(f"'{value}' is not an e-mail address.", code="invalid")
    local, domain = text.split("@")
    if (
        not _LOCAL_PART.match(local)
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
    ):
        raise ValidationError(f"'{value}' has an invalid local part.", code="invalid")
    return f"{local}@{normalize_domain(domain)}"


def normalize_sender_pattern(value: str) -> str:
    """A sender in a restriction list: ``user@domain`` or ``*@domain``."""
    text = (value or "").strip()
    if text.startswith("*@"):
        return "*@" + normalize_domain(text[2:])
    if text.startswith("@"):
        return "*@" + normalize_domain(text[1:])
    return normalize_address(text).lower()


def sender_pattern_matches(pattern: str, sender: str) -> bool:
    sender = sender.lower()
    if pattern.startswith("*@"):
        return sender.rpartition("@")[2] == pattern[2:]
    return sender == pattern


@dataclass(frozen=True)
class SmartHost:
    """One smart host: a name (resolved by DNS) or a literal address, with an optional port."""

    host: str
    port: int | None = None
    literal: bool = False  # "[1.2.3.4]" / "[IPv6:...]": skip DNS

    def __str__(self) -> str:
        if self.literal:
            address = ipaddress.ip_address(self.host)
            text = f"[IPv6:{self.host}]" if address.version == 6 else f"[{self.host}]"
        else:
            text = self.host
        return f"{text}:{self.port}" if self.port is not None else text


def _parse_port(text: str, entry: str) -> int:
    # str.isdigit() is true for "²" (which int() refuses) and for non-ASCII digits.
    if not re.fullmatch(r"[0-9]+", text) or not 1 <= int(text) <= 65535:
        raise ValidationError(f"'{entry}': the port must be a number from 1 to 65535.")
    return int(text)


def parse_smart_host(entry: str) -> SmartHost:
    text = entry.strip()
    if not text:
        raise ValidationError("Empty smart host entry.")
    if text.startswith("["):
        inside, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValidationError(f"'{entry}': missing ']'.")
        if inside.lower().startswith("ipv6:"):
            try:
                address = ipaddress.IPv6Address(inside[5:])
            except ValueError:
                raise ValidationError(
                    f"'{entry}': '{inside[5:]}' is not an IPv6 address."
                ) from None
        else:
            try:
                address = ipaddress.IPv4Address(inside)  # type: ignore[assignment]
            except ValueError:
                raise ValidationError(
                    f"'{entry}': '{inside}' is not an IPv4 address (write IPv6 as [IPv6:...])."
                ) from None
        port = None
        if rest:
            if not rest.startswith(":"):
                raise ValidationError(f"'{entry}': unexpected text after ']'.")
            port = _parse_port(rest[1:], entry)
        return SmartHost(address.compressed, port, literal=True)
    host, sep, port_text = text.partition(":")
    if ":" in port_text:
        raise ValidationError(f"'{entry}': write IPv6 addresses as [IPv6:2001:db8::1].")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise ValidationError(f"'{entry}': put IP addresses in brackets, like [{host}].")
    port = _parse_port(port_text, entry) if sep else None
    return SmartHost(normalize_domain(host), port)


def parse_smart_hosts(value: str) -> list[SmartHost]:
    """``host``, ``[IPv4]``, ``[IPv6:...]``, each with an optional ``:port``, ``;``-separated.

    Commas and blanks between entries are accepted as separators too (Exchange accepts them).
    """
    parts = [part for part in re.split(r"[;,\s]+", (value or "").strip()) if part]
    return [parse_smart_host(part) for part in parts]


def normalize_smart_hosts(value: str) -> str:
    return ";".join(str(host) for host in parse_smart_hosts(value))


HostEntryKind = Literal["ip", "network", "domain"]


def parse_host_entry(value: str, allow_domain: bool = True) -> tuple[HostEntryKind, str]:
    """An entry of a connection or relay list: one IP, a CIDR subnet or a (reverse DNS) domain."""
    text = (value or "").strip()
    if not text:
        raise ValidationError("Empty list entry.")
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValidationError(f"'{value}' is not a valid subnet (CIDR).") from None
        if network.num_addresses == 1:
            return "ip", str(network.network_address)
        return "network", str(network)
    try:
        return "ip", ipaddress.ip_address(text).compressed
    except ValueError:
        pass
    if not allow_domain:
        raise ValidationError(f"'{value}' is not an IP address or subnet.")
    if re.fullmatch(r"[\d.]+", text):
        raise ValidationError(f"'{value}' is not a valid IP address.")
    name = text.removeprefix(".")
    if name == "*":
        # It would match every client with a reverse DNS name: an open relay in a relay list.
        raise ValidationError(f"'{value}' matches every client; enter a domain name.")
    return "domain", normalize_domain_pattern(name)


def normalize_host_list(values: object, allow_domain: bool = True) -> list[str]:
    """A list of host entries, each normalised, duplicates removed, order kept."""
    if not isinstance(values, list | tuple):
        raise ValidationError("Enter a list of addresses.")
    result: list[str] = []
    errors: list[str] = []
    for item in values:
        if not isinstance(item, str):
            errors.append(f"{item!r} is not text.")
            continue
        try:
            _kind, normal = parse_host_entry(item, allow_domain=allow_domain)
        except ValidationError as exc:
            errors.extend(exc.messages)
            continue
        if normal not in result:
            result.append(normal)
    if errors:
        raise ValidationError(errors)
    return result


def host_list_matches(entries: list[str], address: str, reverse_name: str | None) -> bool:
    """Does a client (IP and, when looked up, its reverse DNS name) match any list entry?"""
    ip = ipaddress.ip_address(address)
    for entry in entries:
        kind, normal = parse_host_entry(entry)
        if kind == "ip" and ipaddress.ip_address(normal) == ip:
            return True
        if kind == "network" and ip in ipaddress.ip_network(normal):
            return True
        if kind == "domain" and reverse_name:
            name = reverse_name.rstrip(".").lower()
            if pattern_matches(normal, name) or (
                not normal.startswith("*") and name.endswith("." + normal)
            ):
                return True
    return False


def normalize_ip_list(values: object) -> list[str]:
    """A list of plain IP addresses (DNS servers, say)."""
    if not isinstance(values, list | tuple):
        raise ValidationError("Enter a list of IP addresses.")
    result = []
    for item in values:
        try:
            result.append(ipaddress.ip_address(str(item).strip()).compressed)
        except ValueError:
            raise ValidationError(f"'{item}' is not an IP address.") from None
    return result


def validate_schedule_grid(value: str) -> None:
    """A weekly schedule: 7 days x 96 quarter hours, Monday 00:00 first, '1' = may connect."""
    if len(value) != SCHEDULE_SLOTS or set(value) - {"0", "1"}:
        raise ValidationError(
            f"A schedule is {SCHEDULE_SLOTS} characters of '0' and '1' "
            "(7 days x 96 quarter hours, Monday 00:00 first)."
        )


class FieldErrors:
    """Collects the errors of a model's ``clean()`` per field while it normalises its fields,
    then raises them together, so a form or an API client sees every problem at once."""

    def __init__(self, instance: object) -> None:
        self.instance = instance
        self.errors: dict[str, list[str]] = {}

    def normalise(self, field: str, normaliser: Callable[[Any], Any]) -> None:
        """Replace the field's value by its normal form, or record why it has none."""
        try:
            setattr(self.instance, field, normaliser(getattr(self.instance, field)))
        except ValidationError as exc:
            self.add(field, *exc.messages)

    def add(self, field: str, *messages: str) -> None:
        self.errors.setdefault(field, []).extend(messages)

    def __contains__(self, field: str) -> bool:
        return field in self.errors

    def raise_any(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)
