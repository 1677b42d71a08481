"""The snapshot's index by pattern routes exactly as the scan over every connector did: the
same route, the same reasons, on random topologies. The scan lives on here as the oracle."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import routing
from connectors.routing import _Candidate, resolve
from connectors.snapshot import (
    AcceptedDomainFacts,
    AddressSpaceFacts,
    ConnectorFacts,
    MessageFacts,
    Topology,
    pattern_keys,
)
from smtpadmin.validators import pattern_matches, pattern_specificity
from tests.connectors.test_routing_properties import (
    connector_lists,
    domains,
    messages,
    patterns,
    senders,
)

# --- the oracle: routing's matching as it was, a scan over every connector -------------------


def scanned_spaces(domain: str, topology: Topology) -> list[_Candidate]:
    matching: list[_Candidate] = []
    for connector in sorted(topology.connectors, key=lambda c: (c.name, c.id)):
        spaces = [s for s in connector.address_spaces if pattern_matches(s.pattern, domain)]
        if not spaces:
            continue
        best = max(spaces, key=lambda s: (pattern_specificity(s.pattern), -s.cost))
        matching.append(_Candidate(connector, best))
    return matching


def scanned_accepted_domain(domain: str, topology: Topology) -> AcceptedDomainFacts | None:
    matches = [d for d in topology.accepted_domains if pattern_matches(d.pattern, domain)]
    return max(matches, key=lambda d: pattern_specificity(d.pattern), default=None)


def resolve_by_scan(
    recipient: str, sender: str, message: MessageFacts, topology: Topology
) -> routing.Route:
    with (
        mock.patch.object(routing, "_matching_spaces", scanned_spaces),
        mock.patch.object(routing, "_match_accepted_domain", scanned_accepted_domain),
    ):
        return resolve(recipient, sender, message, topology)


# --- random topologies with the awkward cases: shared names, repeated patterns, ties ---------

accepted_types = st.sampled_from(["authoritative", "internal_relay", "external_relay"])
accepted_lists = st.lists(st.builds(AcceptedDomainFacts, patterns, accepted_types), max_size=4)


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    connectors = draw(connector_lists())
    shuffled = []
    for connector in connectors:
        # Names shared between connectors (then the id orders them), ids out of order, and
        # the same pattern twice in one connector (then the cheaper, else the first, counts).
        name = draw(st.sampled_from([connector.name, "Same", "Also same"]))
        extra = draw(
            st.lists(st.builds(AddressSpaceFacts, patterns, st.integers(1, 100)), max_size=2)
        )
        spaces = draw(st.permutations([*connector.address_spaces, *extra]))
        shuffled.append(
            replace(
                connector,
                name=name,
                id=draw(st.integers(1, 50)),
                address_spaces=tuple(spaces),
            )
        )
    shuffled = draw(st.permutations(shuffled))
    return Topology(
        accepted_domains=tuple(draw(accepted_lists)),
        connectors=tuple(shuffled),
        source_server_id=1,
        source_routing_group_id=draw(st.sampled_from([1, 2, None])),
        source_virtual_server_id=1,
        smart_hosts=draw(st.sampled_from(["", "relay.example.net"])),
        mailboxes=frozenset({"user@a.com", "user@b.net"}),
    )


recipients = st.one_of(
    domains.map(lambda domain: f"user@{domain}"),
    domains.map(lambda domain: f"User@{domain.upper()}"),
    st.sampled_from(["user@a.com", "nobody@b.net", "not an address", "<user@c.com>"]),
)


@settings(deadline=None, max_examples=300)
@given(topologies(), recipients, senders, messages)
def test_the_index_routes_exactly_as_the_scan(
    topology: Topology, recipient: str, sender: str, message: MessageFacts
) -> None:
    assert resolve(recipient, sender, message, topology) == resolve_by_scan(
        recipient, sender, message, topology
    )


@settings(deadline=None, max_examples=300)
@given(topologies(), domains)
def test_the_index_finds_the_spaces_and_domain_the_scan_finds(
    topology: Topology, domain: str
) -> None:
    assert routing._matching_spaces(domain, topology) == scanned_spaces(domain, topology)
    assert routing._match_accepted_domain(domain, topology) == scanned_accepted_domain(
        domain, topology
    )


# Any text, not only normal names: the keys agree with pattern_matches for every string.
texts = st.text(alphabet="ab.*", max_size=7)


@settings(deadline=None, max_examples=1000)
@given(st.one_of(texts, patterns), st.one_of(texts, domains))
def test_a_pattern_covers_a_domain_exactly_when_it_is_one_of_its_keys(
    pattern: str, domain: str
) -> None:
    assert (pattern in pattern_keys(domain)) == pattern_matches(pattern, domain)


def test_keys_run_from_the_name_through_its_parents_to_the_catch_all() -> None:
    assert pattern_keys("mail.example.com") == (
        "mail.example.com",
        "*.example.com",
        "*.com",
        "*",
    )


def names(candidates: Iterable[_Candidate]) -> list[str]:
    return [c.connector.name for c in candidates]


def test_a_copy_with_other_source_fields_shares_the_index_and_new_connectors_get_their_own() -> (
    None
):
    partner = ConnectorFacts(1, "Partner", address_spaces=(AddressSpaceFacts("partner.test"),))
    other = ConnectorFacts(2, "Other", address_spaces=(AddressSpaceFacts("other.test"),))
    topology = Topology(connectors=(partner,))

    moved = replace(topology, source_routing_group_id=7, smart_hosts="relay.example.net")
    grown = replace(topology, connectors=(partner, other))

    assert moved.index is topology.index
    assert grown.index is not topology.index
    assert names(routing._matching_spaces("other.test", grown)) == ["Other"]
    assert names(routing._matching_spaces("other.test", moved)) == []
