"""The routing function, one table row per rule: where a recipient goes and
which step says why."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from connectors.routing import Route, RouteKind, resolve
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

SENDER = "alice@sender.example"
SOURCE_GROUP = 1


def connector(
    name: str,
    *spaces: tuple[str, int],
    id: int | None = None,
    bridgeheads: tuple[BridgeheadFacts, ...] | None = None,
    **fields: Any,
) -> ConnectorFacts:
    """A connector with one live bridgehead of its own, by DNS, address space ``*`` unless
    spaces are given."""
    number = id if id is not None else sum(map(ord, name))
    return ConnectorFacts(
        id=number,
        name=name,
        routing_group_id=fields.pop("routing_group_id", SOURCE_GROUP),
        address_spaces=tuple(AddressSpaceFacts(p, c) for p, c in spaces or [("*", 1)]),
        bridgeheads=(
            bridgeheads if bridgeheads is not None else (BridgeheadFacts(1000 + number, 1),)
        ),
        **fields,
    )


def accepted(pattern: str, type: Any = "authoritative") -> AcceptedDomainFacts:
    return AcceptedDomainFacts(pattern, type)


def topology(*connectors: ConnectorFacts, **fields: Any) -> Topology:
    defaults: dict[str, Any] = {
        "source_server_id": 1,
        "source_routing_group_id": SOURCE_GROUP,
        "source_virtual_server_id": 1,
    }
    return Topology(connectors=connectors, **{**defaults, **fields})


def explained(route: Route) -> str:
    return "\n".join(f"{step.name}: {step.decision}" for step in route.steps)


def reject_from(*senders: str) -> DeliveryRestrictions:
    return DeliveryRestrictions(enforced=True, accept_by_default=True, sender_exceptions=senders)


def accept_only_from(*senders: str) -> DeliveryRestrictions:
    return DeliveryRestrictions(enforced=True, accept_by_default=False, sender_exceptions=senders)


EXAMPLE_AUTHORITATIVE = (accepted("example.com"),)
DOWN = BridgeheadFacts(900, 9, server_up=False)


@dataclass(frozen=True)
class Case:
    topology: Topology
    recipient: str
    kind: RouteKind
    connector: str = ""  # name of the connector mail must take ("" = none)
    because: str = ""  # what a step must say
    sender: str = SENDER
    message: MessageFacts = field(default_factory=MessageFacts)
    status: str = ""  # the start of the status
    queued: bool = False
    next_hops: tuple[str, ...] | None = None


CASES = [
    # --- 1. accepted domains ----------------------------------------------------------------
    pytest.param(
        Case(
            topology(connector("Internet"), accepted_domains=EXAMPLE_AUTHORITATIVE),
            "bob@example.com",
            "local",
            because="(authoritative)",
            next_hops=("local delivery",),
        ),
        id="authoritative-domain-delivers-locally-even-with-a-star-connector",
    ),
    pytest.param(
        Case(
            topology(
                accepted_domains=EXAMPLE_AUTHORITATIVE, mailboxes=frozenset({"bob@example.com"})
            ),
            "bob@example.com",
            "local",
            because="Mailbox bob@example.com exists",
        ),
        id="known-local-mailbox",
    ),
    pytest.param(
        Case(
            topology(
                accepted_domains=EXAMPLE_AUTHORITATIVE, mailboxes=frozenset({"Bob@Example.com"})
            ),
            "BOB@EXAMPLE.COM",
            "local",
            because="case-insensitively",
        ),
        id="mailbox-local-part-is-case-insensitive",
    ),
    pytest.param(
        Case(
            topology(
                connector("Internet"),
                accepted_domains=EXAMPLE_AUTHORITATIVE,
                mailboxes=frozenset({"bob@example.com"}),
            ),
            "carol@example.com",
            "reject",
            status="550 5.1.1",
            because="No mailbox carol@example.com",
        ),
        id="unknown-local-mailbox-is-rejected-5.1.1",
    ),
    pytest.param(
        Case(
            topology(accepted_domains=EXAMPLE_AUTHORITATIVE, mailboxes=None),
            "anyone@example.com",
            "local",
            because="mailbox list is not part of this snapshot",
        ),
        id="unknown-mailbox-set-does-not-reject",
    ),
    pytest.param(
        Case(
            topology(
                connector("Internet"),
                connector("Corp", ("corp.example", 1)),
                accepted_domains=(accepted("corp.example", "internal_relay"),),
            ),
            "bob@corp.example",
            "connector",
            connector="Corp",
            because="(internal relay): routed onward by connector",
        ),
        id="internal-relay-domain-routes-by-connector",
    ),
    pytest.param(
        Case(
            topology(
                connector("Internet"),
                connector("Backup MX", ("partner.example", 1)),
                accepted_domains=(accepted("partner.example", "external_relay"),),
            ),
            "bob@partner.example",
            "connector",
            connector="Backup MX",
            because="(external relay)",
        ),
        id="external-relay-domain-routes-by-connector",
    ),
    pytest.param(
        Case(
            topology(
                connector("Other", ("other.example", 1)),
                accepted_domains=(accepted("corp.example", "internal_relay"),),
                smart_hosts="[192.0.2.1]",
            ),
            "bob@corp.example",
            "unreachable",
            status="554 5.4.4",
            queued=True,
            because="accepted relay domain but no connector routes it",
        ),
        id="relay-domain-without-connector-is-unreachable-not-smart-host",
    ),
    pytest.param(
        Case(
            topology(accepted_domains=(accepted("*.example.com"),)),
            "bob@mail.example.com",
            "local",
            because="accepted domain '*.example.com'",
        ),
        id="wildcard-accepted-domain-covers-sub-domains",
    ),
    pytest.param(
        Case(
            topology(accepted_domains=(accepted("*.example.com"),)),
            "bob@example.com",
            "dns",
            because="No accepted domain covers example.com",
        ),
        id="wildcard-accepted-domain-does-not-cover-its-parent",
    ),
    pytest.param(
        Case(
            topology(
                connector("Relay", ("relay.example.com", 1)),
                accepted_domains=(
                    accepted("*.example.com"),
                    accepted("relay.example.com", "internal_relay"),
                ),
            ),
            "bob@relay.example.com",
            "connector",
            connector="Relay",
            because="accepted domain 'relay.example.com' (internal relay)",
        ),
        id="most-specific-accepted-domain-wins",
    ),
    pytest.param(
        Case(
            topology(
                accepted_domains=(accepted("xn--bcher-kva.de"),),
                mailboxes=frozenset({"user@xn--bcher-kva.de"}),
            ),
            "User@Bücher.DE",
            "local",
            because="normalised to xn--bcher-kva.de",
        ),
        id="idna-recipient-matches-accepted-domain-and-mailbox",
    ),
    # --- 2. address spaces --------------------------------------------------------------------
    pytest.param(
        Case(
            topology(connector("Internet"), connector("Books", ("xn--bcher-kva.de", 5))),
            "user@Bücher.DE",
            "connector",
            connector="Books",
            because="'Books' 'xn--bcher-kva.de' (cost 5)",
        ),
        id="idna-domain-matches-punycode-address-space",
    ),
    pytest.param(
        Case(
            topology(
                connector("Exact", ("sub.example.com", 100)),
                connector("Wildcard", ("*.example.com", 1)),
            ),
            "bob@sub.example.com",
            "connector",
            connector="Exact",
            because="regardless of cost",
        ),
        id="exact-name-beats-wildcard-regardless-of-cost",
    ),
    pytest.param(
        Case(
            topology(connector("Sub", ("*.example.com", 50)), connector("Com", ("*.com", 1))),
            "bob@mail.example.com",
            "connector",
            connector="Sub",
            because="'Com' ('*.com', cost 1)",
        ),
        id="sub-domain-wildcard-beats-tld-wildcard-regardless-of-cost",
    ),
    pytest.param(
        Case(
            topology(connector("Com", ("*.com", 100)), connector("Internet", ("*", 1))),
            "bob@example.com",
            "connector",
            connector="Com",
            because="Most specific matching address space: '*.com'",
        ),
        id="tld-wildcard-beats-star-regardless-of-cost",
    ),
    pytest.param(
        Case(
            topology(connector("Sub", ("*.example.com", 1)), connector("Internet", ("*", 50))),
            "bob@example.com",
            "connector",
            connector="Internet",
            because="Matching address spaces: 'Internet' '*' (cost 50).",
        ),
        id="wildcard-address-space-does-not-cover-its-parent",
    ),
    pytest.param(
        Case(
            topology(
                connector("Mixed", ("*", 1), ("*.com", 9)),
                connector("Com", ("*.com", 5)),
            ),
            "bob@example.com",
            "connector",
            connector="Com",
            because="'Mixed' 9",
        ),
        id="connector-cost-is-the-cost-of-its-most-specific-matching-space",
    ),
    pytest.param(
        Case(
            topology(connector("Dear", ("*.com", 3)), connector("Cheap", ("*.com", 2))),
            "bob@example.com",
            "connector",
            connector="Cheap",
            because="Lowest cost: 2",
        ),
        id="lowest-cost-wins",
    ),
    # --- 2. eligibility: enabled and in scope ---------------------------------------------------
    pytest.param(
        Case(
            topology(connector("Com", ("*.com", 1), enabled=False), connector("Internet")),
            "bob@example.com",
            "connector",
            connector="Internet",
            because="'Com' matches with '*.com' but is disabled",
        ),
        id="disabled-connector-is-not-eligible",
    ),
    pytest.param(
        Case(
            topology(connector("Only", enabled=False)),
            "bob@example.org",
            "dns",
            because="is disabled",
        ),
        id="disabled-only-connector-leaves-dns",
    ),
    pytest.param(
        Case(
            topology(
                connector("Branch", ("*.com", 1), scope="routing_group", routing_group_id=2),
                connector("Internet"),
            ),
            "bob@example.com",
            "connector",
            connector="Internet",
            because="scope is routing group 2 and the source server is in routing group 1",
        ),
        id="routing-group-scoped-connector-of-another-group-is-not-eligible",
    ),
    pytest.param(
        Case(
            topology(
                connector("Branch", ("*.com", 1), scope="routing_group", routing_group_id=1),
                connector("Internet"),
            ),
            "bob@example.com",
            "connector",
            connector="Branch",
        ),
        id="routing-group-scoped-connector-of-the-source-group-is-used",
    ),
    pytest.param(
        Case(
            topology(
                connector("Branch", ("*.com", 1), scope="routing_group", routing_group_id=1),
                source_routing_group_id=None,
            ),
            "bob@example.com",
            "dns",
            because="no known routing group",
        ),
        id="routing-group-scoped-connector-unusable-without-a-source-server",
    ),
    pytest.param(
        Case(
            topology(connector("Partner", ("*.com", 1), scope="organization", routing_group_id=7)),
            "bob@example.com",
            "connector",
            connector="Partner",
        ),
        id="organization-scoped-connector-serves-every-routing-group",
    ),
    # --- 3. delivery restrictions ---------------------------------------------------------------
    pytest.param(
        Case(
            topology(
                connector("Com", ("*.com", 1), restrictions=reject_from("*@sender.example")),
                connector("Internet"),
            ),
            "bob@example.com",
            "reject",
            status="550 5.7.1",
            because="except '*@sender.example', which matches <alice@sender.example>",
        ),
        id="accepted-by-default-rejects-listed-domain-and-never-falls-back",
    ),
    pytest.param(
        Case(
            topology(
                connector("Com", ("*.com", 1), restrictions=reject_from("mallory@sender.example")),
            ),
            "bob@example.com",
            "connector",
            connector="Com",
        ),
        id="accepted-by-default-lets-unlisted-senders-through",
    ),
    pytest.param(
        Case(
            topology(
                connector("Cheap", ("*.com", 1), restrictions=reject_from("*@sender.example")),
                connector("Dear", ("*.com", 5)),
            ),
            "bob@example.com",
            "connector",
            connector="Dear",
            because="'Cheap' excluded",
        ),
        id="restricted-connector-leaves-the-other-of-the-same-space",
    ),
    pytest.param(
        Case(
            topology(
                connector("Com", ("*.com", 1), restrictions=accept_only_from("*@sender.example"))
            ),
            "bob@example.com",
            "connector",
            connector="Com",
        ),
        id="rejected-by-default-accepts-listed-domain",
    ),
    pytest.param(
        Case(
            topology(
                connector("Com", ("*.com", 1), restrictions=accept_only_from("*@partner.example")),
                connector("Internet"),
            ),
            "bob@example.com",
            "reject",
            status="550 5.7.1",
            because="rejected except '*@partner.example'; <alice@sender.example> matches none",
        ),
        id="rejected-by-default-refuses-unlisted-sender",
    ),
    pytest.param(
        Case(
            topology(
                connector(
                    "Com", ("*.com", 1), restrictions=accept_only_from("alice@sender.example")
                )
            ),
            "bob@example.com",
            "connector",
            connector="Com",
            sender="Alice@SENDER.example",
        ),
        id="sender-exceptions-compare-case-insensitively",
    ),
    pytest.param(
        Case(
            topology(
                connector(
                    "Com",
                    ("*.com", 1),
                    restrictions=DeliveryRestrictions(
                        enforced=False, accept_by_default=False, sender_exceptions=()
                    ),
                )
            ),
            "bob@example.com",
            "connector",
            connector="Com",
        ),
        id="restrictions-not-enforced-are-ignored",
    ),
    pytest.param(
        Case(
            topology(connector("Com", ("*.com", 1), restrictions=accept_only_from())),
            "bob@example.com",
            "connector",
            connector="Com",
            sender="",
            because="do not apply to the null sender",
        ),
        id="null-sender-is-exempt-from-delivery-restrictions",
    ),
    pytest.param(
        Case(
            topology(
                connector("Com", ("*.com", 1), restrictions=accept_only_from("*@xn--bcher-kva.de"))
            ),
            "bob@example.com",
            "connector",
            connector="Com",
            sender="Leser@Bücher.de",
        ),
        id="idna-sender-domain-matches-punycode-exception",
    ),
    # --- 3. content restrictions ----------------------------------------------------------------
    pytest.param(
        Case(
            topology(
                connector(
                    "Com", ("*.com", 1), content=ContentRestrictions(allow_system_messages=False)
                ),
                connector("Internet"),
            ),
            "bob@example.com",
            "unreachable",
            sender="",
            status="554 5.4.4",
            queued=True,
            because="system messages (DSNs/NDRs) are not allowed",
        ),
        id="null-sender-is-a-system-message",
    ),
    pytest.param(
        Case(
            topology(
                connector(
                    "Com", ("*.com", 1), content=ContentRestrictions(allow_system_messages=False)
                ),
            ),
            "bob@example.com",
            "unreachable",
            status="554 5.4.4",
            queued=True,
            sender="<>",
            because="From the null sender <>",
        ),
        id="bracketed-null-sender-is-a-system-message",
    ),
    pytest.param(
        Case(
            topology(
                connector(
                    "Com", ("*.com", 1), content=ContentRestrictions(allow_system_messages=False)
                ),
            ),
            "bob@example.com",
            "unreachable",
            status="554 5.4.4",
            queued=True,
            message=MessageFacts(system=True),
            because="system messages (DSNs/NDRs) are not allowed",
        ),
        id="system-message-excluded",
    ),
    pytest.param(
        Case(
            topology(
                connector(
                    "Com",
                    ("*.com", 1),
                    content=ContentRestrictions(allow_non_system_messages=False),
                ),
            ),
            "bob@example.com",
            "unreachable",
            status="554 5.4.4",
            queued=True,
            because="non-system messages are not allowed",
        ),
        id="non-system-message-excluded",
    ),
    pytest.param(
        Case(
            topology(
                connector(
                    "Com",
                    ("*.com", 1),
                    content=ContentRestrictions(allow_non_system_messages=False),
                ),
            ),
            "bob@example.com",
            "connector",
            connector="Com",
            sender="",
        ),
        id="system-only-connector-takes-the-null-sender",
    ),
    *[
        pytest.param(
            Case(
                topology(
                    connector(
                        "Com",
                        ("*.com", 1),
                        content=ContentRestrictions(**{f"allow_priority_{priority}": False}),
                    ),
                    connector("Internet"),
                ),
                "bob@example.com",
                "unreachable",
                status="554 5.4.4",
                queued=True,
                message=MessageFacts(priority=priority),
                because=f"priority {priority} is not allowed",
            ),
            id=f"priority-{priority}-not-allowed",
        )
        for priority in ("high", "normal", "low")
    ],
    pytest.param(
        Case(
            topology(
                connector(
                    "Com", ("*.com", 1), content=ContentRestrictions(allow_priority_low=False)
                ),
            ),
            "bob@example.com",
            "connector",
            connector="Com",
            message=MessageFacts(priority="high"),
        ),
        id="allowed-priority-passes",
    ),
    pytest.param(
        Case(
            topology(
                connector("Com", ("*.com", 1), content=ContentRestrictions(max_message_size_kb=10)),
                connector("Internet"),
            ),
            "bob@example.com",
            "unreachable",
            queued=True,
            message=MessageFacts(size=10 * 1024 + 1),
            status="554 5.4.4",
            because="over the 10 KB size limit",
        ),
        id="message-over-size-limit-excluded-and-never-falls-back",
    ),
    pytest.param(
        Case(
            topology(
                connector("Com", ("*.com", 1), content=ContentRestrictions(max_message_size_kb=10))
            ),
            "bob@example.com",
            "connector",
            connector="Com",
            message=MessageFacts(size=10 * 1024),
        ),
        id="message-at-size-limit-passes",
    ),
    pytest.param(
        Case(
            topology(
                connector(
                    "Small", ("*.com", 1), content=ContentRestrictions(max_message_size_kb=10)
                ),
                connector("Big", ("*.com", 9)),
            ),
            "bob@example.com",
            "connector",
            connector="Big",
            message=MessageFacts(size=50 * 1024),
            because="'Small' excluded: the message (51200 bytes) is over",
        ),
        id="oversize-message-takes-the-other-connector-of-the-same-space",
    ),
    pytest.param(
        Case(
            topology(
                connector("Com", ("*.com", 1), restrictions=reject_from("*@sender.example")),
                connector("Com2", ("*.com", 1), content=ContentRestrictions(max_message_size_kb=1)),
            ),
            "bob@example.com",
            "unreachable",
            queued=True,
            message=MessageFacts(size=5000),
            status="554 5.4.4",
            because="does not fall back to a less specific address space",
        ),
        id="mixed-restrictions-leave-no-route",
    ),
    # --- 4. cost, failover, queueing ------------------------------------------------------------
    pytest.param(
        Case(
            topology(
                connector("Cheap", ("*.com", 1), down=True, down_reason="421 4.4.2 timeout"),
                connector("Dear", ("*.com", 5)),
            ),
            "bob@example.com",
            "connector",
            connector="Dear",
            because="'Cheap' is down: marked down after connection failures (421 4.4.2 timeout)",
        ),
        id="marked-down-connector-fails-over-to-next-cost",
    ),
    pytest.param(
        Case(
            topology(
                connector("Cheap", ("*.com", 1), bridgeheads=(DOWN,)),
                connector("Dear", ("*.com", 5)),
            ),
            "bob@example.com",
            "connector",
            connector="Dear",
            because="the servers of all its bridgeheads are down",
        ),
        id="connector-with-all-bridgeheads-down-fails-over-to-next-cost",
    ),
    pytest.param(
        Case(
            topology(
                connector("Cheap", ("*.com", 1), bridgeheads=(DOWN, BridgeheadFacts(5, 2))),
                connector("Dear", ("*.com", 5)),
            ),
            "bob@example.com",
            "connector",
            connector="Cheap",
        ),
        id="one-live-bridgehead-keeps-the-connector-up",
    ),
    pytest.param(
        Case(
            topology(
                connector("Cheap", ("*.com", 2), down=True),
                connector("Dear", ("*.com", 5), bridgeheads=(DOWN,)),
                connector("Internet", ("*", 1)),
            ),
            "bob@example.com",
            "connector",
            connector="Cheap",
            queued=True,
            because="mail queues on 'Cheap' until it is back (no fallback",
        ),
        id="all-connectors-of-the-space-down-queue-on-the-cheapest-not-star",
    ),
    # --- 5. no connector --------------------------------------------------------------------------
    pytest.param(
        Case(
            topology(smart_hosts="[192.0.2.1]:2525;relay.example.net"),
            "bob@example.org",
            "smart_host",
            next_hops=("[192.0.2.1]:2525", "relay.example.net"),
            because="smart host(s) [192.0.2.1]:2525; relay.example.net",
        ),
        id="no-connector-uses-the-virtual-server-smart-host",
    ),
    pytest.param(
        Case(
            topology(connector("Com", ("*.com", 1)), smart_hosts=""),
            "bob@example.org",
            "dns",
            next_hops=("DNS MX of example.org",),
            because="no smart host: DNS MX lookup",
        ),
        id="no-connector-and-no-smart-host-uses-dns",
    ),
    pytest.param(
        Case(
            topology(
                connector("Relay", use_dns=False, smart_hosts="[198.51.100.7]"),
                smart_hosts="[192.0.2.1]",
            ),
            "bob@example.org",
            "connector",
            connector="Relay",
            next_hops=("[198.51.100.7]",),
            because="'Relay' forwards to smart host(s) [198.51.100.7]",
        ),
        id="connector-smart-host-beats-virtual-server-smart-host",
    ),
    pytest.param(
        Case(
            topology(connector("Internet")),
            "bob@example.org",
            "connector",
            connector="Internet",
            next_hops=("DNS MX of example.org",),
            because="'Internet' routes by DNS",
        ),
        id="dns-connector-next-hop-is-the-mx-of-the-domain",
    ),
    pytest.param(
        Case(
            topology(connector("Relay", use_dns=False, smart_hosts="")),
            "bob@example.org",
            "connector",
            connector="Relay",
            next_hops=("DNS MX of example.org",),
            because="lists no smart host: routing by DNS",
        ),
        id="smart-host-connector-without-hosts-falls-back-to-dns",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_it_routes_each_rule(case: Case) -> None:
    route = resolve(case.recipient, case.sender, case.message, case.topology)

    assert route.kind == case.kind, explained(route)
    assert route.connector_name == case.connector, explained(route)
    assert route.queued is case.queued, explained(route)
    assert route.status.startswith(case.status), route.status
    if not case.status:
        assert route.status == ""
    if case.because:
        assert case.because in explained(route)
    if case.next_hops is not None:
        assert route.next_hops == case.next_hops
    assert route.steps[-1].name == "result"


@pytest.mark.parametrize(
    "recipient",
    [
        pytest.param("", id="empty"),
        pytest.param("nobody", id="no-at-sign"),
        pytest.param("a@b@example.com", id="two-at-signs"),
        pytest.param("user@", id="no-domain"),
        pytest.param("@example.com", id="no-local-part"),
        pytest.param("user@-bad-.com", id="bad-label"),
        pytest.param("user@exa mple.com", id="space-in-domain"),
        pytest.param("user@*.example.com", id="wildcard-domain"),
        pytest.param("user@192.0.2.1", id="bare-ip"),
        pytest.param("us..er@example.com", id="double-dot-local-part"),
    ],
)
def test_it_rejects_an_invalid_recipient_without_raising(recipient: str) -> None:
    route = resolve(recipient, SENDER, MessageFacts(), topology(connector("Internet")))

    assert route.kind == "reject"
    assert route.status.startswith("501 5.1.3")
    assert route.connector is None
    assert "not a valid address" in explained(route)


def test_it_accepts_a_recipient_in_angle_brackets() -> None:
    route = resolve("<bob@example.org>", SENDER, MessageFacts(), topology())

    assert route.kind == "dns"
    assert route.recipient == "bob@example.org"


def test_equal_cost_spreads_the_load_over_every_connector() -> None:
    topo = topology(
        connector("A", ("*.com", 3)),
        connector("B", ("*.com", 3)),
        connector("C", ("*.com", 3)),
        connector("Dear", ("*.com", 4)),
    )

    chosen = [
        resolve("bob@example.com", SENDER, MessageFacts(spread_key=key), topo).connector_name
        for key in range(6)
    ]

    assert chosen == ["A", "B", "C", "A", "B", "C"]
    route = resolve("bob@example.com", SENDER, MessageFacts(spread_key=4), topo)
    assert "spread key 4 mod 3 = 1 chooses 'B'" in explained(route)


def test_equal_cost_spreading_skips_a_down_connector() -> None:
    topo = topology(
        connector("A", ("*.com", 3)),
        connector("B", ("*.com", 3), down=True),
        connector("C", ("*.com", 3)),
    )

    chosen = {
        resolve("bob@example.com", SENDER, MessageFacts(spread_key=key), topo).connector_name
        for key in range(10)
    }

    assert chosen == {"A", "C"}


def test_all_equal_cost_connectors_down_queue_spread_among_them() -> None:
    topo = topology(
        connector("A", ("*.com", 3), down=True), connector("B", ("*.com", 3), down=True)
    )

    routes = [
        resolve("bob@example.com", SENDER, MessageFacts(spread_key=key), topo) for key in (0, 1)
    ]

    assert [r.connector_name for r in routes] == ["A", "B"]
    assert all(r.queued and "down" in r.queued_reason for r in routes)


def test_bridgehead_choice_skips_servers_that_are_down() -> None:
    heads = (
        BridgeheadFacts(10, 1, server_up=False, name="VS on mx1"),
        BridgeheadFacts(11, 2, server_up=True, name="VS on mx2"),
        BridgeheadFacts(12, 3, server_up=True, name="VS on mx3"),
    )
    topo = topology(connector("Internet", bridgeheads=heads))

    routes = [
        resolve("bob@example.org", SENDER, MessageFacts(spread_key=key), topo) for key in range(6)
    ]

    assert {r.bridgehead_virtual_server_id for r in routes} == {11, 12}
    assert "Skipped (server down): 'VS on mx1' (virtual server 10)" in explained(routes[0])


def test_connector_and_bridgehead_spreading_reach_every_pair() -> None:
    topo = topology(
        connector("A", bridgeheads=(BridgeheadFacts(1, 1), BridgeheadFacts(2, 2))),
        connector("B", bridgeheads=(BridgeheadFacts(3, 1), BridgeheadFacts(4, 2))),
    )

    pairs = {
        (route.connector_name, route.bridgehead_virtual_server_id)
        for route in (
            resolve("bob@example.org", SENDER, MessageFacts(spread_key=key), topo)
            for key in range(8)
        )
    }

    assert pairs == {("A", 1), ("A", 2), ("B", 3), ("B", 4)}


def test_a_marked_down_connector_with_live_bridgeheads_queues_with_a_bridgehead() -> None:
    topo = topology(connector("Internet", id=5, down=True))

    route = resolve("bob@example.org", SENDER, MessageFacts(), topo)

    assert route.queued is True
    assert route.bridgehead_virtual_server_id == 1005


def test_a_connector_down_by_its_bridgeheads_queues_without_a_bridgehead() -> None:
    topo = topology(connector("Internet", bridgeheads=(DOWN,)))

    route = resolve("bob@example.org", SENDER, MessageFacts(), topo)

    assert (route.kind, route.connector_name, route.queued) == ("connector", "Internet", True)
    assert route.bridgehead is None
    assert "No bridgehead of 'Internet' is up" in explained(route)


def test_a_connector_without_bridgeheads_is_sent_by_the_source_virtual_server() -> None:
    topo = topology(connector("Internet", bridgeheads=()), source_virtual_server_id=42)

    route = resolve("bob@example.org", SENDER, MessageFacts(), topo)

    assert route.queued is False
    assert route.bridgehead_virtual_server_id == 42
    assert "lists no bridgehead: the source virtual server 42 sends" in explained(route)


def test_the_same_message_always_takes_the_same_way() -> None:
    topo = topology(connector("A", ("*.com", 1)), connector("B", ("*.com", 1)))
    message = MessageFacts(spread_key=12345)

    first = resolve("bob@example.com", SENDER, message, topo)

    assert all(resolve("bob@example.com", SENDER, message, topo) == first for _ in range(5))


def test_the_steps_explain_every_stage_in_order() -> None:
    topo = topology(
        connector("Books", ("*.de", 1), restrictions=reject_from("*@spam.example")),
        connector("Internet"),
    )

    route = resolve("user@Bücher.de", SENDER, MessageFacts(), topo)

    names = [step.name for step in route.steps]
    assert names == [
        "recipient",
        "message",
        "accepted domain",
        "address space",
        "address space",
        "restrictions",
        "cost",
        "bridgehead",
        "next hop",
        "result",
    ]
    assert all(step.decision for step in route.steps)
    assert route.cost == 1
    assert route.address_space == AddressSpaceFacts("*.de", 1)


def test_a_broken_stored_smart_host_does_not_stop_routing() -> None:
    topo = topology(connector("Relay", use_dns=False, smart_hosts="bad host;;[999.1.1.1]"))

    route = resolve("bob@example.org", SENDER, MessageFacts(), topo)

    assert route.kind == "connector"
    assert route.next_hops == ("bad host", "[999.1.1.1]")


def test_an_unknown_priority_is_treated_as_normal() -> None:
    topo = topology(
        connector("Com", ("*.com", 1), content=ContentRestrictions(allow_priority_normal=False))
    )
    message = replace(MessageFacts(), priority="urgent")  # type: ignore[arg-type]

    route = resolve("bob@example.com", SENDER, message, topo)

    assert route.kind == "unreachable"
