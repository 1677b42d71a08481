"""What routing can answer at RCPT time, before the message exists: a sender refused by the
delivery restrictions of every connector that could carry the mail (``sender_restriction``),
the address spaces a virtual server accepts for relay as a connector's bridgehead
(``relay_patterns``), and unresolved recipients of an authoritative domain forwarded to the
virtual server's host. Case tables, then properties over random topologies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from connectors.routing import relay_patterns, resolve, sender_restriction
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
from tests.connectors.test_routing_properties import (
    connector_lists,
    domains,
    messages,
    senders,
    topology_of,
)

REFUSE_BAD = DeliveryRestrictions(enforced=True, sender_exceptions=("*@bad.test",))
ONLY_GOOD = DeliveryRestrictions(
    enforced=True, accept_by_default=False, sender_exceptions=("*@good.test",)
)


def connector(
    number: int,
    pattern: str = "partner.test",
    *,
    restrictions: DeliveryRestrictions = REFUSE_BAD,
    **facts: object,
) -> ConnectorFacts:
    return ConnectorFacts(
        id=number,
        name=f"Link {number}",
        address_spaces=(AddressSpaceFacts(pattern),),
        bridgeheads=(BridgeheadFacts(number * 10, 1),),
        restrictions=restrictions,
        **facts,  # type: ignore[arg-type]
    )


def world(*connectors: ConnectorFacts, **source: object) -> Topology:
    return Topology(
        accepted_domains=(AcceptedDomainFacts("smtpadmin.test", "authoritative"),),
        connectors=connectors,
        source_server_id=1,
        source_routing_group_id=1,
        source_virtual_server_id=10,
        **source,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("connectors", "sender", "recipient", "refused"),
    [
        pytest.param((connector(1),), "eve@bad.test", "u@partner.test", True, id="only-refuses"),
        pytest.param((connector(1),), "amy@ok.test", "u@partner.test", False, id="not-listed"),
        pytest.param((connector(1),), "", "u@partner.test", False, id="null-sender"),
        pytest.param(
            (connector(1, restrictions=ONLY_GOOD),), "amy@ok.test", "u@partner.test", True,
            id="reject-by-default",
        ),
        pytest.param(
            (connector(1, restrictions=ONLY_GOOD),), "amy@good.test", "u@partner.test", False,
            id="reject-by-default-listed",
        ),
        pytest.param(
            (connector(1), connector(2, restrictions=DeliveryRestrictions())),
            "eve@bad.test", "u@partner.test", False, id="another-connector-takes-it",
        ),
        pytest.param(
            (connector(1), connector(2, restrictions=ONLY_GOOD)),
            "eve@bad.test", "u@partner.test", True, id="both-refuse",
        ),
        pytest.param(
            (connector(1), connector(2, "*", restrictions=DeliveryRestrictions())),
            "eve@bad.test", "u@partner.test", True, id="no-fallback-to-less-specific",
        ),
        pytest.param(
            (connector(1, enabled=False),), "eve@bad.test", "u@partner.test", False,
            id="disabled-connector",
        ),
        pytest.param((connector(1),), "eve@bad.test", "u@other.test", False, id="other-domain"),
        pytest.param(
            (connector(1, "*"),), "eve@bad.test", "alice@smtpadmin.test", False, id="local",
        ),
    ],
)  # fmt: skip
def test_a_sender_every_matching_connector_refuses_is_known_at_rcpt(
    connectors: tuple[ConnectorFacts, ...], sender: str, recipient: str, refused: bool
) -> None:
    topology = world(*connectors)
    route = sender_restriction(recipient, sender, topology)
    assert (route is not None) is refused
    if route is not None:
        assert route.kind == "reject"
        assert route.status.startswith("550 5.7.1 ")
        # The connector's own reason, as the NDR after the 250 would give it.
        assert "'Link 1'" in route.status
        assert ("bad.test" in route.status) or ("good.test" in route.status)
        late = resolve(recipient, sender, MessageFacts(), topology)
        assert (route.kind, route.status, route.reason) == (late.kind, late.status, late.reason)
        assert route.steps[-1] == late.steps[-1]


@settings(max_examples=300, deadline=None)
@given(connector_lists(), domains, senders, messages)
def test_rcpt_time_refusal_is_exactly_routings_refusal_for_every_message(
    connectors: list[ConnectorFacts], domain: str, sender: str, message: MessageFacts
) -> None:
    """Whatever the message turns out to be (size, priority, system or not), routing refuses
    it for its sender exactly when RCPT already did, with the same reply; and when RCPT lets
    it through, routing never refuses it for the sender."""
    topology = topology_of(connectors)
    recipient = f"user@{domain}"
    early = sender_restriction(recipient, sender, topology)
    system = replace_system(message, sender)
    late = resolve(recipient, sender, system, topology)
    if early is not None:
        assert late.kind == "reject"
        assert late.status == early.status
    else:
        assert not (late.kind == "reject" and late.status.startswith("550 5.7.1"))


def replace_system(message: MessageFacts, sender: str) -> MessageFacts:
    # Intake marks a message system exactly when its sender is null.
    return MessageFacts(message.size, message.priority, sender == "", message.spread_key)


# --- relay to a connector's address space ---------------------------------------------------


def relaying(number: int, pattern: str, *heads: int, **facts: object) -> ConnectorFacts:
    return ConnectorFacts(
        id=number,
        name=f"Relay {number}",
        address_spaces=(AddressSpaceFacts(pattern),),
        bridgeheads=tuple(BridgeheadFacts(vs, 1) for vs in heads),
        **{"allow_relay": True, **facts},  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("connectors", "patterns"),
    [
        pytest.param((relaying(1, "conn.test", 10),), {"conn.test"}, id="bridgehead"),
        pytest.param((relaying(1, "conn.test", 10, 20),), {"conn.test"}, id="one-of-two"),
        pytest.param((relaying(1, "conn.test", 20),), set(), id="not-a-bridgehead"),
        pytest.param((relaying(1, "conn.test", 10, enabled=False),), set(), id="disabled"),
        pytest.param(
            (relaying(1, "conn.test", 10, allow_relay=False),), set(), id="box-off",
        ),
        pytest.param((relaying(1, "conn.test"),), {"conn.test"}, id="no-bridgehead-listed"),
        pytest.param(
            (relaying(1, "conn.test", scope="routing_group", routing_group_id=2),), set(),
            id="no-bridgehead-other-group",
        ),
        pytest.param(
            (relaying(1, "a.test", 10), relaying(2, "*.b.test", 10), relaying(3, "c.test", 30)),
            {"a.test", "*.b.test"}, id="several",
        ),
    ],
)  # fmt: skip
def test_a_virtual_server_relays_for_the_connectors_it_is_a_bridgehead_of(
    connectors: tuple[ConnectorFacts, ...], patterns: set[str]
) -> None:
    assert relay_patterns(world(*connectors)) == patterns


# --- unresolved recipients ------------------------------------------------------------------


def test_an_unknown_address_of_an_authoritative_domain_goes_to_the_unresolved_host() -> None:
    topology = world(
        mailboxes=frozenset({"alice@smtpadmin.test"}),
        unresolved_forward_host="[127.0.0.1]:2525",
    )
    route = resolve("nobody@smtpadmin.test", "a@outside.test", MessageFacts(), topology)
    assert route.kind == "smart_host"
    assert route.next_hops == ("[127.0.0.1]:2525",)
    assert "unresolved" in route.reason
    # A mailbox that exists is still delivered here.
    assert resolve("Alice@smtpadmin.test", "", MessageFacts(), topology).kind == "local"


def test_without_the_host_an_unknown_address_is_refused_by_routing() -> None:
    topology = world(mailboxes=frozenset({"alice@smtpadmin.test"}))
    route = resolve("nobody@smtpadmin.test", "a@outside.test", MessageFacts(), topology)
    assert route.kind == "reject"
    assert route.status.startswith("550 5.1.1")


def test_content_restrictions_are_never_judged_at_rcpt() -> None:
    """A connector that refuses normal priority refuses the message, but only the message
    can say its priority: RCPT lets it through."""
    closed = ConnectorFacts(
        id=1,
        name="Link 1",
        address_spaces=(AddressSpaceFacts("partner.test"),),
        content=ContentRestrictions(allow_priority_normal=False),
    )
    topology = world(closed)
    assert sender_restriction("u@partner.test", "amy@ok.test", topology) is None
    assert resolve("u@partner.test", "amy@ok.test", MessageFacts(), topology).kind == (
        "unreachable"
    )
