"""Properties of routing over random topologies: the most specific address space always wins,
cost never overrides specificity, and no text makes ``resolve`` raise."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from connectors.routing import ROUTE_KINDS, Route, resolve
from connectors.snapshot import (
    AcceptedDomainFacts,
    AddressSpaceFacts,
    BridgeheadFacts,
    ConnectorFacts,
    ContentRestrictions,
    DeliveryRestrictions,
    MessageFacts,
    Topology,
)
from smtpadmin.validators import pattern_matches, pattern_specificity

SOURCE_GROUP = 1

# A small alphabet, so random address spaces overlap with the recipient domains often.
labels = st.sampled_from(["a", "b", "c"])
tlds = st.sampled_from(["com", "net"])
domains = st.builds(
    lambda parts, tld: ".".join([*parts, tld]), st.lists(labels, min_size=1, max_size=2), tlds
)
patterns = st.one_of(
    st.just("*"),
    tlds.map(lambda tld: f"*.{tld}"),
    domains.map(lambda domain: f"*.{domain}"),
    domains,
)
address_spaces = st.lists(
    st.builds(AddressSpaceFacts, patterns, st.integers(1, 100)),
    min_size=1,
    max_size=3,
    unique_by=lambda space: space.pattern,
)
senders = st.sampled_from(["", "alice@a.com", "bob@b.net", "carol@c.com"])
sender_patterns = st.sampled_from(["*@a.com", "*@b.net", "alice@a.com", "carol@c.com"])
restrictions = st.builds(
    DeliveryRestrictions,
    enforced=st.booleans(),
    accept_by_default=st.booleans(),
    sender_exceptions=st.lists(sender_patterns, max_size=2).map(tuple),
)
contents = st.builds(
    ContentRestrictions,
    allow_priority_high=st.booleans(),
    allow_priority_normal=st.booleans(),
    allow_priority_low=st.booleans(),
    allow_system_messages=st.booleans(),
    allow_non_system_messages=st.booleans(),
    max_message_size_kb=st.one_of(st.none(), st.integers(1, 100)),
)
messages = st.builds(
    MessageFacts,
    size=st.integers(0, 200 * 1024),
    priority=st.sampled_from(["high", "normal", "low"]),
    system=st.booleans(),
    spread_key=st.integers(0, 10_000),
)


@st.composite
def connector_lists(draw: st.DrawFn, with_restrictions: bool = True) -> list[ConnectorFacts]:
    count = draw(st.integers(0, 6))
    result = []
    for number in range(1, count + 1):
        heads = draw(st.lists(st.booleans(), max_size=3))
        result.append(
            ConnectorFacts(
                id=number,
                name=f"C{number}",
                enabled=draw(st.booleans()),
                scope=draw(st.sampled_from(["organization", "routing_group"])),
                routing_group_id=draw(st.sampled_from([1, 2])),
                address_spaces=tuple(draw(address_spaces)),
                bridgeheads=tuple(
                    BridgeheadFacts(100 * number + i, i, server_up=up) for i, up in enumerate(heads)
                ),
                restrictions=draw(restrictions) if with_restrictions else DeliveryRestrictions(),
                content=draw(contents) if with_restrictions else ContentRestrictions(),
                down=draw(st.booleans()),
            )
        )
    return result


def topology_of(connectors: list[ConnectorFacts]) -> Topology:
    return Topology(
        connectors=tuple(connectors),
        source_server_id=1,
        source_routing_group_id=SOURCE_GROUP,
        source_virtual_server_id=1,
    )


def eligible(connector: ConnectorFacts) -> bool:
    return connector.enabled and (
        connector.scope == "organization" or connector.routing_group_id == SOURCE_GROUP
    )


def matching_specificities(connectors: list[ConnectorFacts], domain: str) -> list[int]:
    return [
        pattern_specificity(space.pattern)
        for connector in connectors
        if eligible(connector)
        for space in connector.address_spaces
        if pattern_matches(space.pattern, domain)
    ]


def chosen_specificity(route: Route) -> int | None:
    return pattern_specificity(route.address_space.pattern) if route.address_space else None


@settings(deadline=None, max_examples=200)
@given(connector_lists(), domains, senders, messages)
def test_the_most_specific_eligible_address_space_always_wins(
    connectors: list[ConnectorFacts], domain: str, sender: str, message: MessageFacts
) -> None:
    route = resolve(f"user@{domain}", sender, message, topology_of(connectors))

    specificities = matching_specificities(connectors, domain)
    if not specificities:
        assert route.kind == "dns"
        return
    assert route.kind in ("connector", "reject", "unreachable")
    if route.kind == "connector":
        assert route.connector is not None and route.address_space is not None
        assert eligible(route.connector)
        assert route.address_space in route.connector.address_spaces
        assert pattern_matches(route.address_space.pattern, domain)
        assert chosen_specificity(route) == max(specificities)


@settings(deadline=None, max_examples=200)
@given(connector_lists(with_restrictions=False), domains, messages)
def test_the_cheapest_live_connector_of_the_winning_space_is_used(
    connectors: list[ConnectorFacts], domain: str, message: MessageFacts
) -> None:
    route = resolve(f"user@{domain}", "alice@a.com", message, topology_of(connectors))

    specificities = matching_specificities(connectors, domain)
    assume(specificities)
    top = max(specificities)
    tier = {}
    for connector in connectors:
        spaces = [
            s
            for s in connector.address_spaces
            if pattern_matches(s.pattern, domain) and pattern_specificity(s.pattern) == top
        ]
        if eligible(connector) and spaces:
            tier[connector.id] = (connector, spaces[0].cost)

    def is_down(connector: ConnectorFacts) -> bool:
        return connector.down or bool(
            connector.bridgeheads and not any(b.server_up for b in connector.bridgeheads)
        )

    live = [cost for connector, cost in tier.values() if not is_down(connector)]
    assert route.kind == "connector"
    assert route.connector is not None and route.connector.id in tier
    assert route.queued is (not live)
    assert route.cost == min(live or [cost for _, cost in tier.values()])


@settings(deadline=None, max_examples=200)
@given(
    connector_lists(),
    domains,
    senders,
    messages,
    st.lists(st.integers(1, 100), min_size=20, max_size=20),
)
def test_cost_never_overrides_specificity(
    connectors: list[ConnectorFacts],
    domain: str,
    sender: str,
    message: MessageFacts,
    new_costs: list[int],
) -> None:
    """Re-pricing every address space can change which connector of the winning space is
    used, never which space wins, nor whether there is a route through it."""
    costs = iter(new_costs)
    repriced = [
        replace(c, address_spaces=tuple(replace(s, cost=next(costs)) for s in c.address_spaces))
        for c in connectors
    ]

    before = resolve(f"user@{domain}", sender, message, topology_of(connectors))
    after = resolve(f"user@{domain}", sender, message, topology_of(repriced))

    assert after.kind == before.kind
    assert chosen_specificity(after) == chosen_specificity(before)


@settings(deadline=None)
@given(domains, patterns, patterns)
def test_a_less_specific_space_loses_even_at_the_lowest_cost(
    domain: str, first: str, second: str
) -> None:
    spaces = sorted(
        (p for p in {first, second} if pattern_matches(p, domain)), key=pattern_specificity
    )
    connectors = [
        ConnectorFacts(
            id=i, name=f"C{i}", address_spaces=(AddressSpaceFacts(p, 1 if i == 0 else 100),)
        )
        for i, p in enumerate(spaces)
    ]

    route = resolve(f"user@{domain}", "alice@a.com", MessageFacts(), topology_of(connectors))

    if spaces:
        assert route.address_space is not None
        assert route.address_space.pattern == spaces[-1]


@settings(deadline=None, max_examples=500)
@given(
    st.one_of(st.text(), st.builds("{}@{}".format, st.text(), st.text())),
    st.text(),
    st.one_of(st.none(), st.sets(st.text(), max_size=3).map(frozenset)),
)
def test_resolve_never_raises_for_any_text(
    recipient: str, sender: str, mailboxes: frozenset[str] | None
) -> None:
    topology = Topology(
        accepted_domains=(
            AcceptedDomainFacts("example.com", "authoritative"),
            AcceptedDomainFacts("*.example.net", "internal_relay"),
        ),
        connectors=(
            ConnectorFacts(id=1, name="Internet", address_spaces=(AddressSpaceFacts("*", 1),)),
            ConnectorFacts(
                id=2,
                name="Com",
                address_spaces=(AddressSpaceFacts("*.com", 1),),
                restrictions=DeliveryRestrictions(
                    enforced=True, accept_by_default=False, sender_exceptions=("*@a.com",)
                ),
            ),
        ),
        mailboxes=mailboxes,
        smart_hosts="[192.0.2.1]",
    )

    route = resolve(recipient, sender, MessageFacts(), topology)

    assert route.kind in ROUTE_KINDS
    assert route.steps and route.steps[-1].name == "result"
    if route.kind == "reject":
        assert route.status
