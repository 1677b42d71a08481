"""build_topology: the routing snapshot read from the configuration models."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors.models import AddressSpace, Connector
from connectors.routing import resolve
from connectors.snapshot import (
    AcceptedDomainFacts,
    AddressSpaceFacts,
    BridgeheadFacts,
    ContentRestrictions,
    DeliveryRestrictions,
    MessageFacts,
)
from connectors.topology import build_topology
from servers.models import AcceptedDomain, Mailbox, RoutingGroup, Server, VirtualServer

pytestmark = pytest.mark.django_db


def make_server(name: str, group: RoutingGroup | None = None, *, seen: Any = "now") -> Server:
    last_seen = timezone.now() if seen == "now" else seen
    server = Server(name=name, routing_group=group or RoutingGroup.first(), last_seen=last_seen)
    server.full_clean()
    server.save()
    return server


def make_virtual_server(server: Server, port: int = 2525, **fields: Any) -> VirtualServer:
    vs = VirtualServer(server=server, port=port, **fields)
    vs.full_clean()
    vs.save()
    return vs


def make_connector(
    name: str,
    spaces: list[tuple[str, int]],
    bridgeheads: list[VirtualServer],
    **fields: Any,
) -> Connector:
    fields.setdefault("routing_group", RoutingGroup.first())
    connector = Connector(name=name, **fields)
    connector.full_clean()
    connector.save()
    connector.bridgeheads.set(bridgeheads)
    for pattern, cost in spaces:
        space = AddressSpace(connector=connector, domain=pattern, cost=cost)
        space.full_clean()
        space.save()
    return connector


def make_accepted_domain(domain: str, type: str = "authoritative") -> AcceptedDomain:
    accepted = AcceptedDomain(domain=domain, type=type)
    accepted.full_clean()
    accepted.save()
    return accepted


def make_mailbox(address: str, enabled: bool = True) -> Mailbox:
    mailbox = Mailbox(address=address, enabled=enabled)
    mailbox.full_clean()
    mailbox.save()
    return mailbox


def test_it_reads_a_connector_with_its_spaces_bridgeheads_and_restrictions() -> None:
    up = make_virtual_server(make_server("mx1"), name="Outbound")
    stale = make_virtual_server(make_server("mx2", seen=timezone.now() - timedelta(hours=1)))
    never = make_virtual_server(make_server("mx3", seen=None))
    connector = make_connector(
        "Partners",
        [("Bücher.de", 7), ("*.Example.COM", 3)],
        [up, stale, never],
        use_dns=False,
        smart_hosts="relay.example.net:2525; [192.0.2.1]",
        scope=Connector.Scope.ROUTING_GROUP,
        restrictions_enforced=True,
        accept_by_default=False,
        sender_exceptions=["@Example.org", "Boss@example.com"],
        allow_priority_low=False,
        allow_system_messages=False,
        max_message_size_kb=512,
    )

    (facts,) = build_topology().connectors

    assert facts.id == connector.pk
    assert facts.name == "Partners"
    assert (facts.enabled, facts.scope, facts.use_dns) == (True, "routing_group", False)
    assert facts.routing_group_id == RoutingGroup.first().pk
    assert facts.smart_hosts == "relay.example.net:2525;[192.0.2.1]"
    assert set(facts.address_spaces) == {
        AddressSpaceFacts("xn--bcher-kva.de", 7),
        AddressSpaceFacts("*.example.com", 3),
    }
    assert facts.bridgeheads == (
        BridgeheadFacts(up.pk, up.server_id, server_up=True, name="Outbound (mx1)"),
        BridgeheadFacts(stale.pk, stale.server_id, server_up=False, name=str(stale)),
        BridgeheadFacts(never.pk, never.server_id, server_up=False, name=str(never)),
    )
    assert facts.restrictions == DeliveryRestrictions(
        enforced=True,
        accept_by_default=False,
        sender_exceptions=("*@example.org", "boss@example.com"),
    )
    assert facts.content == ContentRestrictions(
        allow_priority_low=False, allow_system_messages=False, max_message_size_kb=512
    )
    assert facts.down is False


@pytest.mark.parametrize(
    ("down_for", "down"),
    [
        pytest.param(timedelta(minutes=10), True, id="marked-down-until-later"),
        pytest.param(timedelta(minutes=-10), False, id="mark-expired"),
        pytest.param(None, False, id="never-marked"),
    ],
)
def test_it_takes_the_down_mark_from_the_connector(down_for: timedelta | None, down: bool) -> None:
    vs = make_virtual_server(make_server("mx1"))
    connector = make_connector("Internet", [("*", 1)], [vs])
    if down_for is not None:
        Connector.objects.filter(pk=connector.pk).update(
            down_until=timezone.now() + down_for, down_reason="421 4.4.2 connection dropped"
        )

    (facts,) = build_topology().connectors

    assert facts.down is down
    assert facts.down_reason == ("421 4.4.2 connection dropped" if down_for else "")


def test_it_defaults_to_the_first_virtual_server_by_id() -> None:
    branch = RoutingGroup.objects.create(name="Branch")
    first = make_virtual_server(make_server("mx1", branch), smart_hosts="[192.0.2.1]")
    make_virtual_server(make_server("mx0"), port=25)

    topology = build_topology()

    assert topology.source_virtual_server_id == first.pk
    assert topology.source_server_id == first.server_id
    assert topology.source_routing_group_id == branch.pk
    assert topology.smart_hosts == "[192.0.2.1]"


def test_it_uses_the_given_virtual_server() -> None:
    make_virtual_server(make_server("mx1"))
    branch = RoutingGroup.objects.create(name="Branch")
    chosen = make_virtual_server(make_server("mx2", branch), smart_hosts="smart.example.net")

    topology = build_topology(VirtualServer.objects.get(pk=chosen.pk))

    assert topology.source_virtual_server_id == chosen.pk
    assert topology.source_routing_group_id == branch.pk
    assert topology.smart_hosts == "smart.example.net"


def test_without_virtual_servers_it_has_no_source() -> None:
    topology = build_topology()

    assert topology.source_virtual_server_id is None
    assert topology.source_server_id is None
    assert topology.source_routing_group_id is None
    assert topology.smart_hosts == ""


def test_it_reads_accepted_domains_and_enabled_mailboxes() -> None:
    make_accepted_domain("Example.com")
    make_accepted_domain("*.corp.example", "internal_relay")
    make_mailbox("Bob@Example.com")
    make_mailbox("carol@example.com", enabled=False)

    topology = build_topology()

    assert set(topology.accepted_domains) == {
        AcceptedDomainFacts("example.com", "authoritative"),
        AcceptedDomainFacts("*.corp.example", "internal_relay"),
    }
    assert topology.mailboxes == frozenset({"bob@example.com"})
    assert build_topology(include_mailboxes=False).mailboxes is None


def count_queries() -> int:
    with CaptureQueriesContext(connection) as context:
        build_topology()
    return len(context.captured_queries)


def test_the_number_of_queries_does_not_grow_with_the_configuration() -> None:
    vs = make_virtual_server(make_server("mx1"))
    make_connector("C0", [("*", 1)], [vs])
    small = count_queries()

    for number in range(1, 6):
        other = make_virtual_server(make_server(f"mx{number + 1}"))
        make_connector(f"C{number}", [(f"d{number}.example", 1), ("*.com", 2)], [vs, other])
        make_accepted_domain(f"a{number}.example")
        make_mailbox(f"user@a{number}.example")

    assert count_queries() == small
    assert len(build_topology().connectors) == 6


def test_a_route_resolved_from_the_database() -> None:
    make_accepted_domain("example.com")
    make_mailbox("bob@example.com")
    vs_down = make_virtual_server(make_server("mx1", seen=None))
    vs_up = make_virtual_server(make_server("mx2"))
    make_connector("Internet", [("*", 1)], [vs_up])
    make_connector("Books", [("Bücher.de", 50)], [vs_down, vs_up])
    make_connector("Books (disabled)", [("bücher.de", 1)], [vs_up], enabled=False)
    topology = build_topology()

    remote = resolve("leser@BÜCHER.de", "bob@example.com", MessageFacts(), topology)
    local = resolve("Bob@example.com", "", MessageFacts(), topology)
    unknown = resolve("nobody@example.com", "", MessageFacts(), topology)

    assert (remote.kind, remote.connector_name) == ("connector", "Books")
    assert remote.bridgehead_virtual_server_id == vs_up.pk
    assert remote.next_hops == ("DNS MX of xn--bcher-kva.de",)
    assert local.kind == "local"
    assert (unknown.kind, unknown.status[:9]) == ("reject", "550 5.1.1")
