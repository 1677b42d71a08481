"""Next hops: smart hosts and MX records, as the delivery worker's synchronous resolver finds
them on the loopback DNS server (tests/dnsserver.py). Nothing is mocked."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import dns.nameserver
import dns.resolver
import pytest

from relay.delivery.nexthop import Hop, HopPlan, plan_mx, plan_smart_hosts
from relay.dns import DnsServerError, make_sync_resolver
from tests.dnsserver import DnsServer


@pytest.fixture
def resolver(dns_server: DnsServer) -> dns.resolver.Resolver:
    return make_sync_resolver(lifetime=1.0)


def hosts(plan: HopPlan) -> list[str]:
    return [hop.host for hop in plan.hops]


def servers_of(resolver: dns.resolver.Resolver) -> list[tuple[str, int]]:
    found = []
    for server in resolver.nameservers:
        if isinstance(server, str):  # as read from resolv.conf
            found.append((server, resolver.nameserver_ports.get(server, resolver.port)))
        else:
            assert isinstance(server, dns.nameserver.Do53Nameserver)
            found.append((server.address, server.port))
    return found


# -- MX --------------------------------------------------------------------------------------


def test_it_tries_mail_exchangers_in_order_of_preference(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add(
        "example.org", "MX", "20 mx2.example.org", "10 mx1.example.org", "30 mx3.example.org"
    )
    dns_server.host("mx1.example.org", "192.0.2.1")
    dns_server.host("mx2.example.org", "192.0.2.2")
    dns_server.host("mx3.example.org", "192.0.2.3")

    plan = plan_mx("example.org", 25, resolver)

    assert plan.hops == (
        Hop("mx1.example.org", "192.0.2.1", 25, 10),
        Hop("mx2.example.org", "192.0.2.2", 25, 20),
        Hop("mx3.example.org", "192.0.2.3", 25, 30),
    )
    assert plan.permanent_error == plan.temporary_error == ""


def test_it_shuffles_equal_preferences_and_only_those(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add(
        "example.org",
        "MX",
        "5 first.example.org",
        "10 a.example.org",
        "10 b.example.org",
        "10 c.example.org",
        "20 last.example.org",
    )
    for number, name in enumerate(["first", "a", "b", "c", "last"], start=1):
        dns_server.host(f"{name}.example.org", f"192.0.2.{number}")

    orders = set()
    for seed in range(40):
        found = hosts(plan_mx("example.org", 25, resolver, rng=random.Random(seed)))
        assert found[0] == "first.example.org"
        assert found[-1] == "last.example.org"
        orders.add(tuple(found[1:4]))

    # Every order of the three equals shows up: load is shared, not always on one of them.
    assert len(orders) == 6
    # And the same random source gives the same order: the worker's choice is reproducible.
    again = [hosts(plan_mx("example.org", 25, resolver, rng=random.Random(7))) for _ in range(3)]
    assert again[0] == again[1] == again[2]


def test_it_lists_an_exchangers_ipv4_addresses_before_its_ipv6_ones(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add("example.org", "MX", "10 mx.example.org")
    dns_server.host("mx.example.org", "2001:db8::25", "192.0.2.25", "192.0.2.26")

    plan = plan_mx("example.org", 2525, resolver)

    addresses = [hop.address for hop in plan.hops]
    assert sorted(addresses[:2]) == ["192.0.2.25", "192.0.2.26"]  # in the order DNS gave them
    assert addresses[2] == "2001:db8::25"
    assert {hop.port for hop in plan.hops} == {2525}
    assert plan.hops[2].label == "mx.example.org [2001:db8::25]:2525"


def test_without_mx_records_the_domain_itself_is_the_exchanger(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.host("implicit.example", "192.0.2.40", "2001:db8::40")

    plan = plan_mx("implicit.example", 25, resolver)

    assert plan.hops == (
        Hop("implicit.example", "192.0.2.40", 25, 0),
        Hop("implicit.example", "2001:db8::40", 25, 0),
    )
    assert dns_server.asked("implicit.example", "MX") == 1


def test_a_null_mx_fails_the_mail_for_good_without_looking_further(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add("null.example", "MX", "0 .")
    dns_server.host("null.example", "192.0.2.50")  # an address that must not be used

    plan = plan_mx("null.example", 25, resolver)

    assert plan.hops == ()
    assert plan.permanent_error == "5.1.10 Null MX: null.example accepts no mail (RFC 7505)"
    assert plan.temporary_error == ""
    assert dns_server.asked("null.example", "A") == 0


def test_a_null_mx_next_to_real_ones_is_ignored(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add("mixed.example", "MX", "0 .", "10 mx.mixed.example")
    dns_server.host("mx.mixed.example", "192.0.2.51")

    assert hosts(plan_mx("mixed.example", 25, resolver)) == ["mx.mixed.example"]


def test_a_domain_that_does_not_exist_fails_for_good(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.host("elsewhere.example", "192.0.2.60")

    plan = plan_mx("nowhere.example", 25, resolver)

    assert plan.hops == ()
    assert plan.permanent_error == "5.4.4 nowhere.example does not exist (NXDOMAIN)"


def test_a_domain_with_no_mx_and_no_address_fails_for_good(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add("textonly.example", "TXT", "v=spf1 -all")

    plan = plan_mx("textonly.example", 25, resolver)

    assert plan.permanent_error == "5.4.4 textonly.example has no MX, A or AAAA record"


def test_a_dns_server_failure_makes_the_mail_wait(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add("broken.example", "MX", "10 mx.broken.example")
    dns_server.fail("broken.example", "SERVFAIL")

    plan = plan_mx("broken.example", 25, resolver)

    assert plan.hops == ()
    assert plan.permanent_error == ""
    assert plan.temporary_error == "4.4.3 DNS lookup of broken.example MX failed (SERVFAIL)"


def test_a_dns_time_out_makes_the_mail_wait(dns_server: DnsServer) -> None:
    dns_server.add("slow.example", "MX", "10 mx.slow.example")
    dns_server.delay("slow.example", 3)

    started = time.monotonic()
    plan = plan_mx("slow.example", 25, make_sync_resolver(lifetime=0.4))

    assert time.monotonic() - started < 2.0
    assert plan.permanent_error == ""
    assert plan.temporary_error == "4.4.3 DNS lookup of slow.example MX timed out"


def test_an_exchanger_without_an_address_is_skipped_for_the_next(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add("example.org", "MX", "10 gone.example.org", "20 backup.example.org")
    dns_server.host("backup.example.org", "192.0.2.70")

    plan = plan_mx("example.org", 25, resolver)

    assert plan.hops == (Hop("backup.example.org", "192.0.2.70", 25, 20),)


def test_exchangers_that_all_do_not_exist_fail_the_mail_for_good(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add("example.org", "MX", "10 gone.example.org")

    plan = plan_mx("example.org", 25, resolver)

    assert plan.permanent_error == (
        "5.4.4 No mail exchanger of example.org has an address"
        " (gone.example.org does not exist (NXDOMAIN))"
    )


def test_an_exchanger_lookup_that_fails_makes_the_mail_wait(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    # One exchanger is gone for good, the other's DNS is down: it may come back.
    dns_server.add("example.org", "MX", "10 gone.example.org", "20 flaky.example.org")
    dns_server.host("flaky.example.org", "192.0.2.71")
    dns_server.fail("flaky.example.org", "SERVFAIL")

    plan = plan_mx("example.org", 25, resolver)

    assert plan.permanent_error == ""
    assert plan.temporary_error == "4.4.3 DNS lookup of flaky.example.org A failed (SERVFAIL)"


def test_two_names_for_one_address_are_one_hop(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add("example.org", "MX", "10 mx1.example.org", "20 mx2.example.org")
    dns_server.host("mx1.example.org", "192.0.2.80")
    dns_server.host("mx2.example.org", "192.0.2.80", "192.0.2.81")

    plan = plan_mx("example.org", 25, resolver)

    assert [hop.label for hop in plan.hops] == [
        "mx1.example.org [192.0.2.80]:25",
        "mx2.example.org [192.0.2.81]:25",
    ]


def test_an_address_literal_domain_needs_no_dns(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    assert plan_mx("[192.0.2.90]", 25, resolver).hops == (Hop("192.0.2.90", "192.0.2.90", 25),)
    assert plan_mx("[IPv6:2001:db8::90]", 25, resolver).hops == (
        Hop("2001:db8::90", "2001:db8::90", 25),
    )
    assert dns_server.queries == []


def test_an_invalid_domain_fails_for_good_without_asking(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    plan = plan_mx("a..b.example", 25, resolver)

    assert plan.permanent_error == "5.1.2 'a..b.example' is not a valid domain name"
    assert dns_server.queries == []


# -- smart hosts -----------------------------------------------------------------------------


def test_smart_host_literals_skip_dns_and_keep_their_order_and_ports(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    plan = plan_smart_hosts("[192.0.2.7]:2525; [192.0.2.5]; [IPv6:2001:db8::7]:587", 25, resolver)

    assert plan.hops == (
        Hop("192.0.2.7", "192.0.2.7", 2525, 0),
        Hop("192.0.2.5", "192.0.2.5", 25, 1),
        Hop("2001:db8::7", "2001:db8::7", 587, 2),
    )
    assert [hop.label for hop in plan.hops] == [
        "[192.0.2.7]:2525",
        "[192.0.2.5]:25",
        "[2001:db8::7]:587",
    ]
    assert dns_server.queries == []


def test_smart_host_names_are_looked_up_as_hosts_not_as_mail_domains(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.add("relay.example", "MX", "10 elsewhere.example")
    dns_server.host("relay.example", "192.0.2.8")
    dns_server.host("backup.example", "192.0.2.9")

    plan = plan_smart_hosts("relay.example:2526;backup.example", 25, resolver)

    assert plan.hops == (
        Hop("relay.example", "192.0.2.8", 2526, 0),
        Hop("backup.example", "192.0.2.9", 25, 1),
    )
    assert dns_server.asked("relay.example", "MX") == 0


def test_a_smart_host_that_does_not_resolve_is_skipped(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.host("backup.example", "192.0.2.9")

    plan = plan_smart_hosts("gone.example;backup.example", 25, resolver)

    assert hosts(plan) == ["backup.example"]


def test_smart_hosts_that_all_fail_to_resolve_make_the_mail_wait_not_bounce(
    dns_server: DnsServer, resolver: dns.resolver.Resolver
) -> None:
    dns_server.host("other.example", "192.0.2.9")

    plan = plan_smart_hosts("gone.example", 25, resolver)

    assert plan.permanent_error == ""
    assert plan.temporary_error == (
        "4.4.3 No smart host could be resolved: gone.example does not exist (NXDOMAIN)"
    )


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("", "4.3.5 No smart host is configured"),
        ("[192.0.2.300]", "4.3.5 Unusable smart host setting: '[192.0.2.300]'"),
    ],
)
def test_a_missing_or_broken_smart_host_setting_makes_the_mail_wait(
    resolver: dns.resolver.Resolver, setting: str, error: str
) -> None:
    plan = plan_smart_hosts(setting, 25, resolver)

    assert plan.hops == ()
    assert plan.temporary_error.startswith(error)


# -- the synchronous resolver ----------------------------------------------------------------


def test_the_sync_resolver_prefers_the_virtual_servers_dns_servers(settings: Any) -> None:
    settings.SMTPADMIN_DNS_SERVERS = ["127.0.0.1:53535"]

    assert servers_of(make_sync_resolver(["192.0.2.53", "[2001:db8::53]:5353"])) == [
        ("192.0.2.53", 53),
        ("2001:db8::53", 5353),
    ]
    assert servers_of(make_sync_resolver()) == [("127.0.0.1", 53535)]


def test_the_sync_resolver_falls_back_to_the_system_configuration(
    settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings.SMTPADMIN_DNS_SERVERS = []
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("search example.org\nnameserver 192.0.2.99\n")
    monkeypatch.setattr("relay.dns.RESOLV_CONF", str(resolv_conf))

    resolver = make_sync_resolver()

    assert servers_of(resolver) == [("192.0.2.99", 53)]
    assert resolver.search == []
    assert resolver.timeout <= 2.0
    assert resolver.retry_servfail is False


def test_the_sync_resolver_refuses_a_bad_server_entry(settings: Any) -> None:
    with pytest.raises(DnsServerError, match=re.escape("dns.example.org")):
        make_sync_resolver(["dns.example.org"])


def test_without_any_dns_configuration_mail_waits(settings: Any) -> None:
    settings.SMTPADMIN_DNS_SERVERS = []  # and resolv.conf is empty in the tests

    plan = plan_mx("example.org", 25, make_sync_resolver())

    assert plan.hops == ()
    assert plan.temporary_error.startswith("4.4.3 DNS lookup of example.org MX failed")
