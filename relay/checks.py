"""Startup problems of the relay as Django system checks with stable ids."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from relay.dns import DnsServerError, parse_dns_servers


@register()
def check_dns_servers(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    try:
        parse_dns_servers(settings.SMTPADMIN_DNS_SERVERS)
    except DnsServerError as exc:
        return [
            Error(
                f"SMTPADMIN_DNS_SERVERS: {exc}.",
                hint='Use "ip", "ip:port" or "[ipv6]:port" entries, separated by commas.',
                id="relay.E001",
            )
        ]
    return []
