"""Where a link queue's mail goes next: the list of addresses to try, in order.

Two ways to get there, both plain functions of the configuration and a (synchronous) DNS
resolver, so that the delivery engine decides nothing here and the tests ask a real DNS server:

* ``plan_smart_hosts``: the connector's (or virtual server's) smart hosts, in the order written;
  ``[192.0.2.1]`` and ``[IPv6:2001:db8::1]`` skip DNS, names are looked up as A/AAAA (a smart
  host is a host, not a domain: no MX lookup, as in Exchange), ``:port`` overrides the port.
* ``plan_mx``: RFC 5321 section 5.1: the MX records by preference, random order among equal
  preferences (load sharing), each exchanger's A/AAAA addresses; no MX at all means the
  domain's own A/AAAA ("implicit MX"); RFC 7505 null MX ("0 .") means the domain takes no mail.

The answer is a ``HopPlan``: the hops, or why there are none. A permanent error (the domain
does not exist, null MX, no address at all) fails the recipients; a temporary one (DNS
time-out, SERVFAIL, an unusable setting) makes them wait for the next retry.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from django.core.exceptions import ValidationError

from smtpadmin.validators import parse_smart_hosts

log = logging.getLogger("relay.delivery")

# IPv4 first: a worker without an IPv6 route would otherwise spend a time-out on every AAAA
# address before reaching one it can use.
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


@dataclass(frozen=True)
class Hop:
    """One address to connect to. ``host`` is the name we expect there (the MX or smart host
    name; the address itself for a literal): the name used for TLS certificate checks."""

    host: str
    address: str
    port: int
    preference: int = 0

    @property
    def label(self) -> str:
        """``mx1.example.org [192.0.2.1]:25``, or ``[192.0.2.1]:25`` for a literal."""
        shown = f"[{self.address}]:{self.port}"
        return shown if self.host == self.address else f"{self.host} {shown}"

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class HopPlan:
    """The hops in the order to try them, or (when there are none) why not: a permanent error
    fails the recipients, a temporary one defers them. Both texts start with the enhanced
    status code the DSN and the queue show."""

    hops: tuple[Hop, ...]
    permanent_error: str = ""
    temporary_error: str = ""

    @property
    def error(self) -> str:
        return self.permanent_error or self.temporary_error


class _Lookup:
    """One plan's DNS questions: answers, and the first reason a question had no answer."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver
        self.temporary = ""  # a DNS failure that may pass (time-out, SERVFAIL)
        self.nxdomain = ""  # a name that does not exist

    def ask(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer | None:
        """The answer (its rrset is None when the name exists without such records), or None
        when the lookup failed; the reason is kept in ``temporary`` / ``nxdomain``."""
        kind = dns.rdatatype.to_text(rdtype)
        try:
            return self.resolver.resolve(
                dns.name.from_text(name), rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            self.nxdomain = self.nxdomain or f"{name} does not exist (NXDOMAIN)"
        except dns.exception.Timeout:
            self.temporary = self.temporary or f"DNS lookup of {name} {kind} timed out"
        except dns.resolver.NoNameservers as exc:
            codes = sorted({e[3] for e in exc.kwargs.get("errors") or [] if isinstance(e[3], str)})
            why = "/".join(codes) or "no DNS server answered"
            self.temporary = self.temporary or f"DNS lookup of {name} {kind} failed ({why})"
        except dns.exception.DNSException as exc:
            self.temporary = self.temporary or (
                f"DNS lookup of {name} {kind} failed ({exc.__class__.__name__})"
            )
        return None

    def addresses(self, name: str) -> list[str] | None:
        """A then AAAA addresses of a host; None when neither lookup answered."""
        found: list[str] = []
        answered = False
        for rdtype in _ADDRESS_TYPES:
            answer = self.ask(name, rdtype)
            if answer is None:
                continue
            answered = True
            if answer.rrset is not None:
                found.extend(rdata.address for rdata in answer.rrset)
        return found if answered else None


def _literal(text: str) -> str | None:
    """The address of a domain literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``), else None."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    inside = text[1:-1]
    if inside.lower().startswith("ipv6:"):
        inside = inside[5:]
    try:
        return ipaddress.ip_address(inside).compressed
    except ValueError:
        return None


def _hops(host: str, addresses: Iterable[str], port: int, preference: int) -> list[Hop]:
    return [Hop(host, address, port, preference) for address in addresses]


def _unique(hops: Iterable[Hop]) -> tuple[Hop, ...]:
    """First occurrence of each (address, port): two names for one machine are one hop."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for hop in hops:
        key = (ipaddress.ip_address(hop.address).compressed, hop.port)
        if key not in seen:
            seen.add(key)
            kept.append(hop)
    return tuple(kept)


def plan_smart_hosts(
    smart_hosts: str, default_port: int, resolver: dns.resolver.Resolver
) -> HopPlan:
    """The smart hosts (``;``-separated, in order; commas and blanks also separate) as hops:
    literals as written, names by A/AAAA. A smart host that does not resolve is skipped; when
    none is left, or the setting is unusable, the plan carries a temporary error: a smart host
    problem is the administrator's to fix, never a reason to bounce mail."""
    try:
        entries = parse_smart_hosts(smart_hosts)
    except ValidationError as exc:
        return HopPlan((), temporary_error=f"4.3.5 Unusable smart host setting: {exc.messages[0]}")
    if not entries:
        return HopPlan((), temporary_error="4.3.5 No smart host is configured")
    lookup = _Lookup(resolver)
    hops: list[Hop] = []
    for index, entry in enumerate(entries):
        port = entry.port or default_port
        if entry.literal:
            hops.append(Hop(entry.host, entry.host, port, index))
            continue
        addresses = lookup.addresses(entry.host)
        if addresses:
            hops.extend(_hops(entry.host, addresses, port, index))
        elif addresses is not None:
            lookup.nxdomain = lookup.nxdomain or f"{entry.host} has no A or AAAA record"
    if hops:
        return HopPlan(_unique(hops))
    why = lookup.temporary or lookup.nxdomain
    return HopPlan((), temporary_error=f"4.4.3 No smart host could be resolved: {why}")


def plan_mx(
    domain: str,
    port: int,
    resolver: dns.resolver.Resolver,
    *,
    rng: random.Random | None = None,
) -> HopPlan:
    """The hops for mail to ``domain`` by DNS (RFC 5321 section 5.1): MX records by
    preference, equal preferences in random order (``rng``, injectable for tests), each
    exchanger's A then AAAA addresses; without MX records the domain's own A/AAAA (implicit
    MX). A domain literal (``[192.0.2.1]``) is its own hop.

    Permanent: NXDOMAIN, a null MX (RFC 7505: the only MX is ``0 .``), no address anywhere.
    Temporary: time-outs, SERVFAIL and the like, for the MX lookup or for every exchanger.
    An exchanger whose addresses cannot be found is skipped while another one works; ``.``
    records next to real ones (against RFC 7505) are ignored."""
    literal = _literal(domain)
    if literal is not None:
        return HopPlan((Hop(literal, literal, port, 0),))
    name = domain.strip().rstrip(".").lower()
    try:
        dns.name.from_text(name)
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return HopPlan((), permanent_error=f"5.1.2 '{domain}' is not a valid domain name")
    lookup = _Lookup(resolver)
    answer = lookup.ask(name, dns.rdatatype.MX)
    if answer is None:
        if lookup.temporary:
            return HopPlan((), temporary_error=f"4.4.3 {lookup.temporary}")
        return HopPlan((), permanent_error=f"5.4.4 {lookup.nxdomain}")
    if answer.rrset is None:  # no MX: the domain is its own exchanger (implicit MX)
        addresses = lookup.addresses(name)
        if addresses:
            return HopPlan(_unique(_hops(name, addresses, port, 0)))
        if lookup.temporary:
            return HopPlan((), temporary_error=f"4.4.3 {lookup.temporary}")
        return HopPlan((), permanent_error=f"5.4.4 {name} has no MX, A or AAAA record")
    records = [(rdata.preference, rdata.exchange) for rdata in answer.rrset]
    real = [(pref, exchange) for pref, exchange in records if exchange != dns.name.root]
    if not real:
        return HopPlan((), permanent_error=f"5.1.10 Null MX: {name} accepts no mail (RFC 7505)")
    chooser = rng or random.SystemRandom()
    by_preference: dict[int, list[str]] = {}
    for pref, exchange in real:
        by_preference.setdefault(pref, []).append(exchange.to_text(omit_final_dot=True).lower())
    hops: list[Hop] = []
    for pref in sorted(by_preference):
        exchangers = sorted(set(by_preference[pref]))  # sorted first: rng alone decides
        chooser.shuffle(exchangers)
        for exchanger in exchangers:
            hops.extend(_hops(exchanger, lookup.addresses(exchanger) or [], port, pref))
    if hops:
        return HopPlan(_unique(hops))
    if lookup.temporary:
        return HopPlan((), temporary_error=f"4.4.3 {lookup.temporary}")
    why = f" ({lookup.nxdomain})" if lookup.nxdomain else ""
    return HopPlan((), permanent_error=f"5.4.4 No mail exchanger of {name} has an address{why}")
