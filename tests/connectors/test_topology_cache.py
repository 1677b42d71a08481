"""The shared routing snapshot: built once per configuration version, built again as soon as
anything it is made of changes, by a save, a delete, a bulk update or the passing of time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors.models import AddressSpace, Connector
from connectors.routing import resolve
from connectors.snapshot import MessageFacts, Topology
from connectors.topology import TopologyCache, build_topology, configuration_fingerprint
from servers.models import AcceptedDomain, Server, VirtualServer
from tests.connectors.test_topology import (
    make_accepted_domain,
    make_connector,
    make_mailbox,
    make_server,
    make_virtual_server,
)

pytestmark = pytest.mark.django_db


@dataclass
class Org:
    vs: VirtualServer
    other: VirtualServer
    internet: Connector
    partner: Connector


@pytest.fixture
def org() -> Org:
    make_accepted_domain("example.com")
    make_mailbox("bob@example.com")
    vs = make_virtual_server(make_server("mx1"), name="Default")
    other = make_virtual_server(make_server("mx2"), name="Other", smart_hosts="relay.example.net")
    internet = make_connector("Internet", [("*", 10)], [vs])
    partner = make_connector(
        "Partner", [("partner.test", 1)], [vs], use_dns=False, smart_hosts="[192.0.2.1]"
    )
    return Org(vs, other, internet, partner)


def route(topology: Topology, recipient: str) -> Any:
    return resolve(recipient, "alice@example.com", MessageFacts(), topology)


def source(vs: VirtualServer) -> VirtualServer:
    return VirtualServer.objects.select_related("server").get(pk=vs.pk)


def test_it_builds_once_while_nothing_changes_for_a_few_queries(org: Org) -> None:
    cache = TopologyCache()
    first = cache.topology(source(org.vs))

    with CaptureQueriesContext(connection) as captured:
        again = cache.topology(source(org.vs))
        other = cache.topology(source(org.other), include_mailboxes=False)

    assert cache.builds == 1
    assert again is first
    assert other.index is first.index  # one index per version, whatever the source
    # Two fingerprints (aggregates, servers) per call, the mailbox one, the source lookups.
    assert len(captured) <= 8, [q["sql"] for q in captured]


def test_it_is_what_build_topology_returns_from_each_source(org: Org) -> None:
    cache = TopologyCache()
    for vs in (org.vs, org.other):
        for mailboxes in (True, False):
            cached = cache.topology(source(vs), include_mailboxes=mailboxes)
            assert cached == build_topology(source(vs), include_mailboxes=mailboxes)
    assert cache.topology(None) == build_topology(None)


def save_connector(org: Org) -> None:
    org.partner.enabled = False
    org.partner.save()


def bulk_update_connector(org: Org) -> None:
    Connector.objects.filter(pk=org.partner.pk).update(enabled=False)


def delete_connector(org: Org) -> None:
    org.partner.delete()


def add_connector(org: Org) -> None:
    make_connector("Partner 2", [("partner.test", 1)], [org.vs])


def replace_address_space(org: Org) -> None:
    org.partner.set_address_spaces([{"domain": "elsewhere.test", "cost": 1}])


def reprice_address_space(org: Org) -> None:
    AddressSpace.objects.filter(connector=org.partner).update(cost=50)


def add_bridgehead(org: Org) -> None:
    org.partner.bridgeheads.add(org.other)


def mark_down(org: Org) -> None:
    until = timezone.now() + timedelta(hours=1)
    Connector.objects.filter(pk=org.partner.pk).update(down_until=until, down_reason="refused")


def server_goes_quiet(org: Org) -> None:
    Server.objects.filter(pk=org.vs.server_id).update(last_seen=timezone.now() - timedelta(days=1))


def rename_virtual_server(org: Org) -> None:
    org.vs.name = "Renamed"
    org.vs.save()


def rename_server(org: Org) -> None:
    Server.objects.filter(pk=org.vs.server_id).update(name="renamed")


def add_accepted_domain(org: Org) -> None:
    make_accepted_domain("partner.test", "internal_relay")


def retype_accepted_domain(org: Org) -> None:
    domain = AcceptedDomain.objects.get(domain="example.com")
    domain.mailboxes.all().delete()
    domain.type = AcceptedDomain.Type.EXTERNAL_RELAY
    domain.save()


CHANGES: list[Callable[[Org], None]] = [
    save_connector,
    bulk_update_connector,
    delete_connector,
    add_connector,
    replace_address_space,
    reprice_address_space,
    add_bridgehead,
    mark_down,
    server_goes_quiet,
    rename_virtual_server,
    rename_server,
    add_accepted_domain,
    retype_accepted_domain,
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: change.__name__)
def test_any_change_is_routed_at_once(org: Org, change: Callable[[Org], None]) -> None:
    cache = TopologyCache()
    before = cache.topology(source(org.vs))

    change(org)
    after = cache.topology(source(org.vs))

    assert cache.builds == 2
    assert after != before
    assert after == build_topology(source(org.vs))


def test_a_down_mark_running_out_moves_the_fingerprint(org: Org, settings: Any) -> None:
    settings.SMTPADMIN_HEARTBEAT_TIMEOUT = 24 * 3600  # the servers stay up meanwhile
    now = timezone.now()
    Connector.objects.filter(pk=org.partner.pk).update(down_until=now + timedelta(minutes=5))

    assert configuration_fingerprint(now) != configuration_fingerprint(now + timedelta(minutes=6))
    assert configuration_fingerprint(now) == configuration_fingerprint(now + timedelta(minutes=1))


def test_a_new_mailbox_is_seen_without_building_the_connectors_again(org: Org) -> None:
    cache = TopologyCache()
    assert route(cache.topology(source(org.vs)), "carol@example.com").kind == "reject"

    make_mailbox("carol@example.com")

    assert route(cache.topology(source(org.vs)), "carol@example.com").kind == "local"
    assert cache.builds == 1


def test_the_source_fields_come_from_the_virtual_server_asked_for(org: Org) -> None:
    cache = TopologyCache()

    other = cache.topology(source(org.other))

    assert other.source_virtual_server_id == org.other.pk
    assert other.smart_hosts == "relay.example.net"
    assert (
        route(other, "x@unknown.test").connector
        == route(build_topology(source(org.other)), "x@unknown.test").connector
    )
