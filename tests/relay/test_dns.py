"""Reverse DNS, DNS block lists and the resolver's configuration, answered by a real DNS
server on loopback (tests/dnsserver.py), never by mocking dnspython."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.nameserver
import pytest

from relay.dns import (
    DnsServerError,
    dnsbl_listing,
    make_resolver,
    parse_dns_servers,
    reverse_name,
)
from tests import dnsserver
from tests.dnsserver import DnsServer

dns_server = dnsserver.dns_server  # the fixture, until tests/conftest.py offers it to all

CLIENT = "192.0.2.10"
CLIENT6 = "2001:db8::10"


@pytest.fixture
def resolver(dns_server: DnsServer) -> dns.asyncresolver.Resolver:
    return make_resolver()


def name_of(ip: str, resolver: dns.asyncresolver.Resolver, timeout: float = 2.0) -> str | None:
    return asyncio.run(reverse_name(ip, resolver, timeout))


def listing(
    ip: str, providers: list[str], resolver: dns.asyncresolver.Resolver, timeout: float = 2.0
) -> str | None:
    return asyncio.run(dnsbl_listing(ip, providers, resolver, timeout))


def servers_of(resolver: dns.asyncresolver.Resolver) -> list[tuple[str, int]]:
    found = []
    for server in resolver.nameservers:
        if isinstance(server, str):  # as read from resolv.conf
            found.append((server, resolver.nameserver_ports.get(server, resolver.port)))
        else:
            assert isinstance(server, dns.nameserver.Do53Nameserver)
            found.append((server.address, server.port))
    return found


# -- reverse DNS -----------------------------------------------------------------------------


def test_it_finds_the_forward_confirmed_name_of_a_client(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.host("mail.example.org", CLIENT)

    assert name_of(CLIENT, resolver) == "mail.example.org"
    assert dns_server.asked("10.2.0.192.in-addr.arpa", "PTR") == 1
    assert dns_server.asked("mail.example.org", "A") == 1


def test_it_gives_the_name_in_lower_case_without_the_final_dot(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("Mail.Example.ORG", "A", CLIENT)
    dns_server.ptr(CLIENT, "Mail.Example.ORG.")

    assert name_of(CLIENT, resolver) == "mail.example.org"


def test_it_refuses_a_name_whose_addresses_do_not_include_the_client(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    # Anyone controlling the reverse zone of their own address can claim any name.
    dns_server.ptr(CLIENT, "mail.bank.example")
    dns_server.add("mail.bank.example", "A", "198.51.100.7")

    assert name_of(CLIENT, resolver) is None


def test_it_refuses_a_ptr_name_that_does_not_exist(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.ptr(CLIENT, "gone.example.org")

    assert name_of(CLIENT, resolver) is None
    assert dns_server.asked("gone.example.org", "A") == 1


def test_it_returns_none_when_the_address_has_no_reverse_name(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.host("mail.example.org", "192.0.2.11")  # a neighbour, so the zone exists

    assert name_of(CLIENT, resolver) is None
    assert dns_server.asked("10.2.0.192.in-addr.arpa", "PTR") == 1


def test_it_returns_none_when_the_reverse_name_exists_without_a_ptr(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("10.2.0.192.in-addr.arpa", "TXT", "no PTR here")

    assert name_of(CLIENT, resolver) is None


def test_it_returns_none_when_the_dns_server_fails(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.host("mail.example.org", CLIENT)
    dns_server.fail("10.2.0.192.in-addr.arpa", "SERVFAIL")

    assert name_of(CLIENT, resolver) is None


def test_it_gives_up_on_a_slow_reverse_lookup_within_the_timeout(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.host("mail.example.org", CLIENT)
    dns_server.delay("10.2.0.192.in-addr.arpa", 3)

    started = time.monotonic()
    assert name_of(CLIENT, resolver, timeout=0.3) is None
    assert time.monotonic() - started < 1.0


def test_it_gives_up_on_a_slow_forward_lookup_within_the_timeout(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.host("mail.example.org", CLIENT)
    dns_server.delay("mail.example.org", 3)

    started = time.monotonic()
    assert name_of(CLIENT, resolver, timeout=0.3) is None
    assert time.monotonic() - started < 1.0


def test_it_confirms_an_ipv6_client_by_its_aaaa_records(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.host("mail6.example.org", CLIENT6)
    dns_server.add("mail6.example.org", "A", CLIENT)  # the IPv4 address is no confirmation

    assert name_of("2001:DB8:0::10", resolver) == "mail6.example.org"
    assert dns_server.asked("mail6.example.org", "AAAA") == 1
    assert dns_server.asked("mail6.example.org", "A") == 0


def test_it_refuses_an_ipv6_client_whose_name_has_only_other_addresses(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.ptr(CLIENT6, "mail6.example.org")
    dns_server.add("mail6.example.org", "AAAA", "2001:db8::99")

    assert name_of(CLIENT6, resolver) is None


def test_it_looks_up_an_ipv4_mapped_client_as_ipv4(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.host("mail.example.org", CLIENT)

    assert name_of(f"::ffff:{CLIENT}", resolver) == "mail.example.org"
    assert dns_server.asked("10.2.0.192.in-addr.arpa", "PTR") == 1
    assert dns_server.asked("mail.example.org", "AAAA") == 0


def test_it_confirms_one_of_several_ptr_names(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.ptr(CLIENT, "liar.example.net")
    dns_server.add("liar.example.net", "A", "198.51.100.1")
    dns_server.host("real.example.org", CLIENT)

    assert name_of(CLIENT, resolver) == "real.example.org"


def test_it_follows_a_classless_delegation_cname(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    # RFC 2317: the /24's owner points the address at a zone the customer runs.
    dns_server.add("10.2.0.192.in-addr.arpa", "CNAME", "10.0-25.2.0.192.in-addr.arpa")
    dns_server.add("10.0-25.2.0.192.in-addr.arpa", "PTR", "mail.customer.example")
    dns_server.add("mail.customer.example", "A", CLIENT)

    assert name_of(CLIENT, resolver) == "mail.customer.example"


def test_it_refuses_a_name_that_is_not_a_host_name(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    # It would end up in a Received header and in connection-list matching.
    dns_server.ptr(CLIENT, r"evil\032name\013.example.org")
    dns_server.add(r"evil\032name\013.example.org", "A", CLIENT)

    assert name_of(CLIENT, resolver) is None


@pytest.mark.parametrize("ip", ["", "not-an-address", "192.0.2.300", "mail.example.org"])
def test_it_returns_none_for_something_that_is_not_an_address(
    ip: str, dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    assert name_of(ip, resolver) is None
    assert dns_server.queries == []


def test_it_returns_none_at_once_when_there_is_no_dns_server_at_all(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.SMTPADMIN_DNS_SERVERS = []
    monkeypatch.setattr("relay.dns.RESOLV_CONF", os.devnull)

    started = time.monotonic()
    assert name_of(CLIENT, make_resolver()) is None
    assert time.monotonic() - started < 0.5


# -- DNS block lists -------------------------------------------------------------------------


def test_it_reports_the_block_list_that_lists_the_client(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("10.2.0.192.bl.example.net", "A", "127.0.0.2")

    assert listing(CLIENT, ["clean.example.com", "bl.example.net"], resolver) == (
        "listed by bl.example.net"
    )
    assert dns_server.asked("10.2.0.192.clean.example.com", "A") == 1


def test_it_reports_nothing_for_a_client_no_list_has(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("2.0.0.127.bl.example.net", "A", "127.0.0.2")  # RFC 5782 test entry

    assert listing(CLIENT, ["bl.example.net"], resolver) is None
    assert dns_server.asked("10.2.0.192.bl.example.net", "A") == 1


def test_it_names_the_first_listing_provider_in_the_configured_order(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("10.2.0.192.one.example", "A", "127.0.0.4")
    dns_server.add("10.2.0.192.two.example", "A", "127.0.0.2")

    assert listing(CLIENT, ["two.example", "one.example"], resolver) == "listed by two.example"


@pytest.mark.parametrize(
    "answer",
    [
        "127.255.255.254",  # Spamhaus: "you asked through a public resolver"
        "127.255.255.255",  # Spamhaus: "excessive number of queries"
        "127.0.0.1",  # "query refused" on some lists
        "192.0.2.80",  # an expired list's domain, parked with a wildcard A record
    ],
)
def test_an_error_answer_of_a_block_list_is_not_a_listing(
    answer: str, dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("10.2.0.192.bl.example.net", "A", answer)

    assert listing(CLIENT, ["bl.example.net"], resolver) is None


def test_a_block_list_that_does_not_answer_counts_as_not_listing(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("10.2.0.192.slow.example", "A", "127.0.0.2")
    dns_server.delay("10.2.0.192.slow.example", 3)

    started = time.monotonic()
    assert listing(CLIENT, ["slow.example"], resolver, timeout=0.3) is None
    assert time.monotonic() - started < 1.0


def test_a_slow_block_list_does_not_hide_what_another_says(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("10.2.0.192.slow.example", "A", "127.0.0.2")
    dns_server.delay("10.2.0.192.slow.example", 3)
    dns_server.add("10.2.0.192.fast.example", "A", "127.0.0.3")

    started = time.monotonic()
    assert listing(CLIENT, ["slow.example", "fast.example"], resolver, timeout=0.3) == (
        "listed by fast.example"
    )
    assert time.monotonic() - started < 1.0


def test_a_failing_block_list_counts_as_not_listing(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("10.2.0.192.broken.example", "A", "127.0.0.2")
    dns_server.fail("10.2.0.192.broken.example", "REFUSED")

    assert listing(CLIENT, ["broken.example"], resolver) is None


def test_it_asks_about_an_ipv6_client_by_nibbles(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    nibbles = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
    dns_server.add(f"{nibbles}.bl.example.net", "A", "127.0.0.2")

    assert listing(CLIENT6, ["bl.example.net"], resolver) == "listed by bl.example.net"


def test_it_asks_about_an_ipv4_mapped_client_as_ipv4(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("10.2.0.192.bl.example.net", "A", "127.0.0.2")

    assert listing(f"::ffff:{CLIENT}", ["bl.example.net"], resolver) == "listed by bl.example.net"


def test_it_skips_a_provider_that_is_no_dns_zone(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.add("10.2.0.192.bl.example.net", "A", "127.0.0.2")

    assert listing(CLIENT, ["bad..zone", "bl.example.net."], resolver) == (
        "listed by bl.example.net"
    )


def test_it_asks_nothing_without_providers(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    assert listing(CLIENT, [], resolver) is None
    assert listing("not-an-address", ["bl.example.net"], resolver) is None
    assert dns_server.queries == []


# -- which DNS servers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.53", [("192.0.2.53", 53)]),
        ("192.0.2.53:5353", [("192.0.2.53", 5353)]),
        ("2001:DB8:0::53", [("2001:db8::53", 53)]),
        ("[2001:db8::53]:5353", [("2001:db8::53", 5353)]),
        ("[::1]", [("::1", 53)]),
        (" 192.0.2.1 , [::1]:54 ", [("192.0.2.1", 53), ("::1", 54)]),
        ("", []),
        ("  ", []),
        (["127.0.0.1:53535", "::1"], [("127.0.0.1", 53535), ("::1", 53)]),
        ([], []),
    ],
)
def test_it_reads_dns_servers(text: str | list[str], expected: list[tuple[str, int]]) -> None:
    assert parse_dns_servers(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("dns.example.org", "'dns.example.org' is not an IP address"),
        ("192.0.2.300", "is not an IP address"),
        ("192.0.2.1:0", "port must be a number from 1 to 65535"),
        ("192.0.2.1:65536", "port must be a number from 1 to 65535"),
        ("192.0.2.1:dns", "port must be a number from 1 to 65535"),
        ("192.0.2.1:", "port must be a number from 1 to 65535"),
        ("[2001:db8::1", "missing ']'"),
        ("[2001:db8::1]53", "expected ':port' after ']'"),
        ("[192.0.2.1]:53", "is not an IPv6 address"),
        ("2001:db8::zz", "write an IPv6 address with a port as [address]:port"),
        ("192.0.2.1,", "empty"),
        ("192.0.2.1,,192.0.2.2", "empty"),
    ],
)
def test_it_refuses_bad_dns_servers_naming_the_entry(text: str, problem: str) -> None:
    with pytest.raises(DnsServerError, match=re.escape(problem)):
        parse_dns_servers(text)


def test_the_virtual_servers_own_dns_servers_win(settings: Any) -> None:
    settings.SMTPADMIN_DNS_SERVERS = ["127.0.0.1:53535"]

    resolver = make_resolver(["192.0.2.53", "2001:db8::53"])

    assert servers_of(resolver) == [("192.0.2.53", 53), ("2001:db8::53", 53)]


def test_the_setting_is_used_when_the_virtual_server_has_no_dns_servers(
    settings: Any,
) -> None:
    settings.SMTPADMIN_DNS_SERVERS = ["127.0.0.1:53535", "[::1]:5353"]

    assert servers_of(make_resolver([])) == [("127.0.0.1", 53535), ("::1", 5353)]


def test_the_system_resolver_is_used_when_nothing_is_configured(
    settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings.SMTPADMIN_DNS_SERVERS = []
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("search example.org\nnameserver 192.0.2.99\n")
    monkeypatch.setattr("relay.dns.RESOLV_CONF", str(resolv_conf))

    resolver = make_resolver()

    assert servers_of(resolver) == [("192.0.2.99", 53)]
    assert resolver.search == []  # a client's name is never completed with our domain


def test_a_bad_setting_is_an_error_not_the_system_resolver(settings: Any) -> None:
    settings.SMTPADMIN_DNS_SERVERS = ["dns.example.org"]

    with pytest.raises(DnsServerError, match=re.escape("dns.example.org")):
        make_resolver()


def test_the_resolver_keeps_lookups_short(settings: Any) -> None:
    settings.SMTPADMIN_DNS_SERVERS = ["127.0.0.1:53535"]

    resolver = make_resolver()

    assert resolver.timeout <= 2.0
    assert resolver.lifetime <= 5.0
    assert resolver.retry_servfail is False


def test_the_resolver_really_asks_the_configured_server(dns_server: DnsServer) -> None:
    dns_server.add("example.org", "MX", "10 mx.example.org")

    answer = asyncio.run(make_resolver([dns_server.setting]).resolve("example.org", "MX"))

    assert [rdata.to_text() for rdata in answer] == ["10 mx.example.org."]
    assert dns_server.asked("example.org", "MX") == 1


def test_a_changed_record_is_seen_at_once_by_the_same_resolver(
    dns_server: DnsServer, resolver: dns.asyncresolver.Resolver
) -> None:
    dns_server.host("old.example.org", CLIENT)
    assert name_of(CLIENT, resolver) == "old.example.org"

    dns_server.remove("10.2.0.192.in-addr.arpa")
    dns_server.host("new.example.org", CLIENT)

    assert name_of(CLIENT, resolver) == "new.example.org"
