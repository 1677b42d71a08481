"""The address of the client of a web request: ``REMOTE_ADDR``, or behind a reverse proxy
declared in ``SMTPADMIN_TRUSTED_PROXIES``, the address that proxy saw.

``X-Forwarded-For`` is read right to left, skipping the trusted proxies: every entry to the
left of the first untrusted one came from the client and may be made up. Without a trusted
proxy the header is ignored, since anybody can send it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from django.conf import settings
from django.http import HttpRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(request: HttpRequest) -> str:
    remote = str(request.META.get("REMOTE_ADDR") or "unknown")
    proxies = [ipaddress.ip_network(n) for n in settings.SMTPADMIN_TRUSTED_PROXIES]
    return forwarded_client(remote, str(request.META.get("HTTP_X_FORWARDED_FOR", "")), proxies)


def forwarded_client(remote: str, forwarded_for: str, proxies: Sequence[Network]) -> str:
    """The client's address, given the peer, the X-Forwarded-For header and the trusted
    proxies."""
    peer = _address(remote)
    if peer is None or not _trusted(peer, proxies):
        return remote
    hop = peer
    for entry in reversed([e for e in forwarded_for.split(",") if e.strip()]):
        address = _address(entry)
        if address is None:
            break  # a trusted proxy never writes this; the last good hop is all we know
        hop = address
        if not _trusted(address, proxies):
            return str(address)
    return str(hop)


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address.version == n.version and address in n for n in proxies)


def _address(text: str) -> Address | None:
    """An address, also as some proxies write it: ``[2001:db8::1]:443``, ``192.0.2.1:443``."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
