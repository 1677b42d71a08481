"""List entries written as IPv4-mapped IPv6 (``::ffff:192.0.2.1``) match the IPv4 client they
name, in relay lists, connection control and the global deny list: a client compared as IPv4
must not step around "all except ::ffff:192.0.2.1"."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.smtp.config import ListenerConfig, OrganizationPolicy
from relay.smtp.policy import connection_decision, connection_limit_reply, may_relay

BASE = ListenerConfig(id=1)


@pytest.mark.parametrize(
    ("entry", "client", "listed"),
    [
        ("::ffff:192.0.2.1", "192.0.2.1", True),
        ("::ffff:c000:201", "192.0.2.1", True),
        ("::ffff:192.0.2.0/120", "192.0.2.77", True),
        ("::ffff:0:0/96", "198.51.100.1", True),
        ("::ffff:192.0.2.1", "192.0.2.2", False),
        ("::ffff:192.0.2.0/120", "192.0.3.1", False),
        ("::ffff:192.0.2.1", "2001:db8::1", False),
        ("192.0.2.1", "::ffff:192.0.2.1", True),
        ("2001:db8::/32", "2001:db8::5", True),
    ],
)
def test_a_mapped_entry_matches_its_ipv4_client_in_the_relay_list(
    entry: str, client: str, listed: bool
) -> None:
    excluded = replace(BASE, relay_mode="all_except_listed", relay_list=(entry,))
    allowed = replace(BASE, relay_mode="only_listed", relay_list=(entry,))
    assert may_relay(client, None, False, excluded) is not listed
    assert may_relay(client, None, False, allowed) is listed


def test_a_mapped_entry_refuses_its_ipv4_client_at_connection_control() -> None:
    config = replace(
        BASE, connection_mode="all_except_listed", connection_list=("::ffff:192.0.2.1",)
    )
    refusal = connection_decision("192.0.2.1", None, config, OrganizationPolicy())
    assert refusal is not None and refusal.code == 554
    assert connection_decision("192.0.2.2", None, config, OrganizationPolicy()) is None


def test_a_mapped_entry_of_the_global_deny_list_refuses_its_ipv4_client() -> None:
    config = replace(BASE, apply_connection_filter=True)
    org = OrganizationPolicy(global_deny_list=("::ffff:192.0.2.0/120",))
    refusal = connection_decision("192.0.2.9", None, config, org)
    assert refusal is not None and refusal.code == 554


def test_the_per_client_limit_counts_only_that_clients_connections() -> None:
    config = replace(BASE, connection_limit=50, connection_limit_per_client=20)
    assert connection_limit_reply(19, config, client_ip="192.0.2.1", from_client=19) is None
    refusal = connection_limit_reply(20, config, client_ip="192.0.2.1", from_client=20)
    assert str(refusal) == (
        "421 4.7.0 Too many connections from 192.0.2.1 (limit 20 per client address); "
        "close some or try later"
    )
    total = connection_limit_reply(50, config, client_ip="192.0.2.1", from_client=0)
    assert total is not None and total.text.startswith("4.4.5")
    unlimited = replace(config, connection_limit_per_client=None)
    assert connection_limit_reply(0, unlimited, client_ip="192.0.2.1", from_client=10**6) is None
