"""Who may connect: the virtual server's connection control (IP, subnet, reverse DNS domain;
two modes), the organization's connection filter (global accept / deny lists, block lists)
when the virtual server applies it, the connection limit, and when DNS must be asked."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.smtp.config import ListenerConfig, OrganizationPolicy
from relay.smtp.policy import (
    PAUSED,
    connection_decision,
    connection_limit_reply,
    needs_reverse_dns,
    normal_client_ip,
)

DEFAULT = ListenerConfig(id=1)  # all except an empty list: everyone may connect
ORG = OrganizationPolicy()
ONLY = replace(DEFAULT, connection_mode="only_listed")
EXCEPT = replace(DEFAULT, connection_mode="all_except_listed")


def decision(
    ip: str,
    config: ListenerConfig,
    name: str | None = None,
    org: OrganizationPolicy = ORG,
    dnsbl: str | None = None,
) -> str:
    reply = connection_decision(ip, name, config, org, dnsbl_listing=dnsbl)
    return "" if reply is None else str(reply)


def test_by_default_everyone_may_connect() -> None:
    assert decision("203.0.113.9", DEFAULT) == ""
    assert decision("2001:db8::9", DEFAULT) == ""


def test_only_the_list_below_with_an_empty_list_refuses_everyone() -> None:
    assert decision("203.0.113.9", ONLY) == (
        "554 5.7.1 Access denied: 203.0.113.9 is not among the computers allowed to connect "
        "to this virtual server"
    )


@pytest.mark.parametrize(
    ("entries", "ip", "name", "allowed"),
    [
        (("192.0.2.10",), "192.0.2.10", None, True),
        (("192.0.2.10",), "192.0.2.11", None, False),
        (("192.0.2.10",), "::ffff:192.0.2.10", None, True),
        (("192.0.2.0/24",), "192.0.2.200", None, True),
        (("192.0.2.0/24",), "192.0.3.1", None, False),
        (("2001:db8::/32",), "2001:db8:ffff::1", None, True),
        (("2001:db8::/32",), "2001:db9::1", None, False),
        (("fe80::1",), "fe80::1%eth0", None, True),
        (("example.net",), "198.51.100.1", "mx.example.net", True),
        (("example.net",), "198.51.100.1", "example.net", True),
        (("example.net",), "198.51.100.1", "MX.Example.NET.", True),
        (("example.net",), "198.51.100.1", "badexample.net", False),
        (("example.net",), "198.51.100.1", "example.net.evil.test", False),
        (("example.net",), "198.51.100.1", None, False),
        (("*.example.net",), "198.51.100.1", "mx.example.net", True),
        (("*.example.net",), "198.51.100.1", "example.net", False),
    ],
)
def test_only_the_list_below_lets_in_the_listed_computers(
    entries: tuple[str, ...], ip: str, name: str | None, allowed: bool
) -> None:
    result = decision(ip, replace(ONLY, connection_list=entries), name)

    assert (result == "") is allowed
    if not allowed:
        assert result.startswith("554 5.7.1 Access denied: ")


@pytest.mark.parametrize(
    ("entries", "ip", "name", "refused"),
    [
        (("192.0.2.10",), "192.0.2.10", None, True),
        (("192.0.2.10",), "::ffff:192.0.2.10", None, True),  # a dual-stack socket's view
        (("192.0.2.10",), "192.0.2.11", None, False),
        (("192.0.2.0/24",), "192.0.2.99", None, True),
        (("spam.test",), "198.51.100.1", "host.spam.test", True),
        (("spam.test",), "198.51.100.1", None, False),  # unknown name: a domain entry can't match
    ],
)
def test_all_except_the_list_below_refuses_the_listed_computers(
    entries: tuple[str, ...], ip: str, name: str | None, refused: bool
) -> None:
    result = decision(ip, replace(EXCEPT, connection_list=entries), name)

    assert (result != "") is refused


def test_a_refusal_names_the_client_and_its_reverse_dns_name() -> None:
    config = replace(EXCEPT, connection_list=("spam.test",))

    assert decision("198.51.100.1", config, "host.spam.test") == (
        "554 5.7.1 Access denied: 198.51.100.1 (host.spam.test) is among the computers refused "
        "by this virtual server"
    )


def test_the_global_deny_list_refuses_only_when_the_connection_filter_is_applied() -> None:
    org = OrganizationPolicy(global_deny_list=("203.0.113.0/24",))

    assert decision("203.0.113.9", DEFAULT, org=org) == ""
    assert decision("203.0.113.9", replace(DEFAULT, apply_connection_filter=True), org=org) == (
        "554 5.7.1 Access denied: 203.0.113.9 is on this organization's deny list"
    )


def test_a_block_list_listing_refuses_only_when_the_connection_filter_is_applied() -> None:
    listing = "listed by zen.example.org"
    filtered = replace(DEFAULT, apply_connection_filter=True)

    assert decision("203.0.113.9", DEFAULT, dnsbl=listing) == ""
    assert decision("203.0.113.9", filtered, dnsbl=listing) == (
        "554 5.7.1 Access denied: 203.0.113.9 is listed by zen.example.org"
    )


def test_the_global_accept_list_overrides_the_deny_list_and_block_lists() -> None:
    org = OrganizationPolicy(
        global_accept_list=("203.0.113.9",), global_deny_list=("203.0.113.0/24",)
    )
    filtered = replace(DEFAULT, apply_connection_filter=True)

    assert decision("203.0.113.9", filtered, org=org, dnsbl="listed by x.test") == ""
    assert decision("203.0.113.8", filtered, org=org).startswith("554 5.7.1")


def test_the_global_accept_list_does_not_override_the_virtual_servers_own_control() -> None:
    org = OrganizationPolicy(global_accept_list=("203.0.113.9",))
    config = replace(EXCEPT, apply_connection_filter=True, connection_list=("203.0.113.9",))

    assert decision("203.0.113.9", config, org=org).startswith("554 5.7.1")


def test_a_block_list_text_is_made_safe_for_the_reply() -> None:
    filtered = replace(DEFAULT, apply_connection_filter=True)

    assert decision("203.0.113.9", filtered, dnsbl="listed\r\nby x") == (
        "554 5.7.1 Access denied: 203.0.113.9 is listed??by x"
    )


def test_client_addresses_are_compared_in_their_plain_form() -> None:
    assert normal_client_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert normal_client_ip("fe80::1%eth0") == "fe80::1"
    assert normal_client_ip("2001:DB8:0::1") == "2001:db8::1"
    assert normal_client_ip("192.0.2.1") == "192.0.2.1"


def test_reverse_dns_is_needed_only_for_the_received_header_or_domain_entries() -> None:
    assert not needs_reverse_dns(DEFAULT, ORG)
    assert needs_reverse_dns(replace(DEFAULT, reverse_dns_lookup=True), ORG)
    assert needs_reverse_dns(replace(DEFAULT, connection_list=("example.net",)), ORG)
    assert needs_reverse_dns(replace(DEFAULT, relay_list=("*.example.net",)), ORG)
    assert not needs_reverse_dns(
        replace(DEFAULT, connection_list=("192.0.2.1",), relay_list=("10.0.0.0/8",)), ORG
    )


def test_the_connection_limit_refuses_with_421_when_full() -> None:
    limited = replace(DEFAULT, connection_limit=2)

    assert connection_limit_reply(1, limited) is None
    assert str(connection_limit_reply(2, limited)) == (
        "421 4.4.5 Too many connections to this virtual server (limit 2); try later"
    )
    assert connection_limit_reply(10_000, DEFAULT) is None


def test_a_paused_virtual_server_answers_421() -> None:
    assert str(PAUSED) == "421 4.3.2 This virtual server is paused; try again later"
