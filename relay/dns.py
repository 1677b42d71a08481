"""DNS for the relay: which resolver to ask, forward-confirmed reverse DNS of a client, and
DNS block lists.

A session asks these while the client waits, so every lookup has a small deadline and every
failure (time-out, SERVFAIL, no server, garbage) reads as "no answer": a DNS outage must slow
the relay down a little, never stop it or let an exception reach the SMTP conversation.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from typing import TypeVar

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename
from django.conf import settings

log = logging.getLogger("relay.dns")

DNS_PORT = 53
# The system's resolver configuration, used when neither the virtual server nor the setting
# names DNS servers.
RESOLV_CONF = "/etc/resolv.conf"
# Seconds one server gets for one query before the resolver tries again (or the next server).
QUERY_TIMEOUT = 2.0
# Seconds a whole lookup may take unless the caller says otherwise.
DEFAULT_LIFETIME = 5.0
# A PTR answer with more names than this is not worth confirming one by one.
MAX_PTR_NAMES = 5
# What a host name we are willing to stamp into a Received header or match a list against may
# look like: letters, digits, hyphen, underscore, dots between labels.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DnsServerError(ValueError):
    """A DNS server entry (setting SMTPADMIN_DNS_SERVERS or a virtual server's list) that
    cannot be used."""


def parse_dns_server(entry: str, default_port: int = DNS_PORT) -> tuple[str, int]:
    """One server: ``192.0.2.53``, ``192.0.2.53:5353``, ``2001:db8::53`` or
    ``[2001:db8::53]:5353`` -> (compressed address, port)."""
    text = entry.strip()
    if not text:
        raise DnsServerError("a DNS server entry is empty")
    host, port = text, default_port
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0:
            raise DnsServerError(f"'{entry}': missing ']' after the IPv6 address")
        host, rest = text[1:closing], text[closing + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise DnsServerError(f"'{entry}': expected ':port' after ']'")
            port = _port(entry, rest[1:])
        try:
            address: IPAddress = ipaddress.IPv6Address(host)
        except ValueError:
            raise DnsServerError(f"'{entry}': '{host}' is not an IPv6 address") from None
        return address.compressed, port
    if text.count(":") == 1:  # IPv4 with a port (a bare IPv6 address has two colons or more)
        host, raw_port = text.split(":")
        port = _port(entry, raw_port)
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise DnsServerError(f"'{entry}': '{host}' is not an IPv4 address") from None
        return address.compressed, port
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        hint = " (write an IPv6 address with a port as [address]:port)" if ":" in host else ""
        raise DnsServerError(f"'{entry}' is not an IP address{hint}") from None
    return address.compressed, port


def _port(entry: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 65535:
        raise DnsServerError(f"'{entry}': the port must be a number from 1 to 65535")
    return int(raw)


def parse_dns_servers(text: str | Iterable[str]) -> list[tuple[str, int]]:
    """DNS servers as (address, port) pairs, from a comma-separated string or a list of entries
    (``"ip"``, ``"ip:port"``, ``"[v6]:port"``; the port defaults to 53). Blank means none.
    Raises ``DnsServerError`` naming the bad entry."""
    if isinstance(text, str):
        if not text.strip():
            return []
        entries: list[str] = text.split(",")
    else:
        entries = list(text)
    return [parse_dns_server(entry) for entry in entries]


ResolverT = TypeVar("ResolverT", bound=dns.resolver.BaseResolver)


def _configure(kind: type[ResolverT], servers: Sequence[str], lifetime: float) -> ResolverT:
    """A resolver of ``kind`` (async or sync): the virtual server's own external DNS servers
    (port 53, or an explicit port) when it has some, else ``settings.SMTPADMIN_DNS_SERVERS``,
    else the system's (/etc/resolv.conf). Raises ``DnsServerError`` for a bad entry."""
    configured = parse_dns_servers(servers) or parse_dns_servers(
        getattr(settings, "SMTPADMIN_DNS_SERVERS", [])
    )
    if configured:
        resolver = kind(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(address, port) for address, port in configured
        ]
    else:
        try:
            resolver = kind(filename=RESOLV_CONF)
        except dns.resolver.NoResolverConfiguration as exc:
            # Keep going: every lookup then fails fast and reads as "no answer".
            log.warning("No system DNS configuration (%s); lookups will find nothing", exc)
            resolver = kind(configure=False)
    # Short tries, bounded in total, no search domains: a slow server costs a client seconds,
    # not minutes, and a failing one is not hammered.
    resolver.timeout = min(QUERY_TIMEOUT, lifetime)
    resolver.lifetime = lifetime
    resolver.retry_servfail = False
    resolver.use_search_by_default = False
    resolver.search = []
    # Honours the TTLs of the answers (a test server answering with TTL 0 is never cached).
    resolver.cache = dns.resolver.LRUCache(10_000)
    return resolver


def make_resolver(
    servers: Sequence[str] = (), *, lifetime: float = DEFAULT_LIFETIME
) -> dns.asyncresolver.Resolver:
    """The resolver of a virtual server's listener (reverse DNS, block lists)."""
    return _configure(dns.asyncresolver.Resolver, servers, lifetime)


def client_address(ip: str) -> IPAddress | None:
    """The address a lookup is about: IPv4-mapped IPv6 (``::ffff:192.0.2.1``, what a dual-stack
    socket reports for an IPv4 client) as the IPv4 address; None if ``ip`` is no address."""
    try:
        address = ipaddress.ip_address(ip.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def _lookup(
    resolver: dns.asyncresolver.Resolver,
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    timeout: float,
) -> list[str]:
    """The records' text, or [] for NXDOMAIN, no data, time-out or any other DNS failure."""
    try:
        # dnspython keeps to the lifetime; wait_for is the backstop should it ever not.
        answer = await asyncio.wait_for(
            resolver.resolve(
                name, rdtype, lifetime=timeout, search=False, raise_on_no_answer=False
            ),
            timeout + 0.5,
        )
    except (dns.exception.DNSException, OSError, ValueError, TimeoutError) as exc:
        log.debug("DNS %s %s: %s", name, rdtype.name, exc.__class__.__name__)
        return []
    return [rdata.to_text() for rdata in answer.rrset] if answer.rrset is not None else []


async def reverse_name(
    ip: str, resolver: dns.asyncresolver.Resolver, timeout: float = DEFAULT_LIFETIME
) -> str | None:
    """The forward-confirmed reverse DNS name of ``ip`` (lower-case, no trailing dot): a PTR
    name whose A (or AAAA) records include the address. None when there is none, it does not
    confirm, it is not a plausible host name, or DNS fails or takes longer than ``timeout``
    seconds in total. Never raises."""
    address = client_address(ip)
    if address is None:
        return None
    try:
        return await asyncio.wait_for(_reverse_name(address, resolver, timeout), timeout)
    except TimeoutError:
        log.debug("Reverse DNS of %s: no answer within %.1f s", address, timeout)
        return None
    except Exception:  # a bug here must cost the client its name, not its session
        log.exception("Reverse DNS of %s failed", address)
        return None


async def _reverse_name(
    address: IPAddress, resolver: dns.asyncresolver.Resolver, timeout: float
) -> str | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ptr_names = await _lookup(
        resolver, dns.reversename.from_address(str(address)), dns.rdatatype.PTR, timeout
    )
    candidates = []
    for text in ptr_names[:MAX_PTR_NAMES]:
        name = text.rstrip(".").lower()
        if _HOSTNAME.fullmatch(name):
            candidates.append(name)
    if not candidates:
        return None
    rdtype = dns.rdatatype.A if address.version == 4 else dns.rdatatype.AAAA
    remaining = max(deadline - loop.time(), 0.05)
    # Confirm all candidates at once: the first that maps back to the address wins.
    forward = await asyncio.gather(
        *(_lookup(resolver, dns.name.from_text(name), rdtype, remaining) for name in candidates)
    )
    for name, addresses in zip(candidates, forward, strict=True):
        if any(client_address(text) == address for text in addresses):
            return name
    return None


# RFC 5782 section 2.1: a listing is an A record in 127.0.0.0/8. 127.0.0.1 is never a listing
# (some lists answer it for "query refused"); 127.255.255.0/24 are error codes (Spamhaus:
# "query through a public resolver", "excessive queries") and must not block everybody.
_LISTING_NETWORK = ipaddress.IPv4Network("127.0.0.0/8")
_NOT_A_LISTING = (ipaddress.IPv4Network("127.0.0.0/31"), ipaddress.IPv4Network("127.255.255.0/24"))


def is_listing(answer: str) -> bool:
    """Does this A record from a DNS block list mean "listed"?"""
    try:
        address = ipaddress.IPv4Address(answer)
    except ValueError:
        return False
    return address in _LISTING_NETWORK and not any(address in net for net in _NOT_A_LISTING)


def dnsbl_query_name(address: IPAddress, zone: str) -> dns.name.Name:
    """RFC 5782 query name: 192.0.2.1 in zen.example.org -> 1.2.0.192.zen.example.org;
    IPv6 by nibbles, like ip6.arpa."""
    reverse = dns.reversename.from_address(str(address))
    # Drop "in-addr.arpa." / "ip6.arpa." (two labels and the root).
    labels = reverse.labels[:-3]
    return dns.name.Name(labels).concatenate(dns.name.from_text(zone))


async def dnsbl_listing(
    ip: str,
    providers: Sequence[str],
    resolver: dns.asyncresolver.Resolver,
    timeout: float = DEFAULT_LIFETIME,
) -> str | None:
    """``"listed by <zone>"`` for the first provider (in the order given) that lists ``ip``,
    else None. All providers are asked at once; one that fails or does not answer within
    ``timeout`` seconds counts as not listing. Never raises."""
    address = client_address(ip)
    if address is None or not providers:
        return None
    zones: list[tuple[str, dns.name.Name]] = []
    for provider in providers:
        zone = provider.strip().strip(".").lower()
        try:
            zones.append((zone, dnsbl_query_name(address, zone)))
        except (dns.exception.DNSException, ValueError):
            log.warning("Skipping the block list provider %r: not a DNS zone", provider)
    try:
        # Each provider has its own deadline: a dead list must not hide what the others say.
        results = await asyncio.gather(
            *(_lookup(resolver, name, dns.rdatatype.A, timeout) for _, name in zones)
        )
    except Exception:
        log.exception("Block list lookup of %s failed", address)
        return None
    for (zone, _), answers in zip(zones, results, strict=True):
        if any(is_listing(answer) for answer in answers):
            return f"listed by {zone}"
    return None


# --- the delivery side --------------------------------------------------------------------


def make_sync_resolver(
    servers: Sequence[str] = (), *, lifetime: float = DEFAULT_LIFETIME
) -> dns.resolver.Resolver:
    """``make_resolver`` for synchronous callers (the Celery delivery worker's MX lookups)."""
    return _configure(dns.resolver.Resolver, servers, lifetime)
