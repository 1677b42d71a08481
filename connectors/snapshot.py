"""The topology snapshot that routing reads: frozen dataclasses built from the database by
``connectors.topology.build_topology`` (or by hand in tests and benchmarks). Patterns and
addresses are in their stored (normal) form: lower-case IDNA domains."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, NamedTuple

from smtpadmin.validators import pattern_specificity

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
AcceptedDomainType = Literal["authoritative", "internal_relay", "external_relay"]
ConnectorScope = Literal["organization", "routing_group"]


@dataclass(frozen=True)
class MessageFacts:
    """What routing needs to know about the message besides its envelope."""

    size: int = 0  # bytes
    priority: Priority = "normal"
    system: bool = False  # a DSN / NDR; the null sender makes a message a system one anyway
    # Chooses among equal-cost connectors and among bridgeheads, so a given message always
    # takes the same way (reproducible in tests) while different messages spread the load.
    spread_key: int = 0


@dataclass(frozen=True)
class AcceptedDomainFacts:
    pattern: str
    type: AcceptedDomainType


@dataclass(frozen=True)
class AddressSpaceFacts:
    pattern: str
    cost: int = 1


@dataclass(frozen=True)
class BridgeheadFacts:
    virtual_server_id: int
    server_id: int
    server_up: bool = True
    name: str = ""

    @property
    def label(self) -> str:
        return (
            f"'{self.name}' (virtual server {self.virtual_server_id})"
            if self.name
            else (f"virtual server {self.virtual_server_id}")
        )


@dataclass(frozen=True)
class DeliveryRestrictions:
    enforced: bool = False
    accept_by_default: bool = True
    # Rejected senders when accepting by default, accepted senders when rejecting by default.
    sender_exceptions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContentRestrictions:
    allow_priority_high: bool = True
    allow_priority_normal: bool = True
    allow_priority_low: bool = True
    allow_system_messages: bool = True
    allow_non_system_messages: bool = True
    max_message_size_kb: int | None = None


@dataclass(frozen=True)
class ConnectorFacts:
    id: int
    name: str
    enabled: bool = True
    scope: ConnectorScope = "organization"
    routing_group_id: int | None = None
    use_dns: bool = True
    smart_hosts: str = ""
    address_spaces: tuple[AddressSpaceFacts, ...] = ()
    bridgeheads: tuple[BridgeheadFacts, ...] = ()
    restrictions: DeliveryRestrictions = field(default_factory=DeliveryRestrictions)
    content: ContentRestrictions = field(default_factory=ContentRestrictions)
    # "Allow messages to be relayed to these domains": its bridgeheads accept mail for its
    # address spaces from any client, as a backup MX does.
    allow_relay: bool = False
    # Marked down by delivery after connection-level failures.
    down: bool = False
    down_reason: str = ""


def pattern_keys(domain: str) -> tuple[str, ...]:
    """Every pattern that covers ``domain``: the name itself, ``*.`` and each parent after a
    dot, and ``*``. ``pattern_matches(p, domain)`` holds exactly when ``p`` is one of these,
    so an index by pattern finds the matches in as many lookups as the name has labels."""
    keys = [domain]
    dot = domain.find(".")
    while dot != -1:
        keys.append("*" + domain[dot:])
        dot = domain.find(".", dot + 1)
    keys.append("*")
    return tuple(dict.fromkeys(keys))  # "*.x" as a domain is also its own parent key


class SpaceMatch(NamedTuple):
    """One address space of one connector, as the index holds it."""

    rank: int  # the connector's place in routing's order (name, then id)
    position: int  # the space's place in the connector's list
    specificity: int
    cost: int
    connector: ConnectorFacts
    space: AddressSpaceFacts


@dataclass(frozen=True)
class RoutingIndex:
    """Connectors' address spaces and the accepted domains by pattern, built once per
    snapshot so that routing looks a domain up instead of scanning every connector."""

    connectors: tuple[ConnectorFacts, ...]  # the tuples it was built from, to tell if it fits
    accepted_domains: tuple[AcceptedDomainFacts, ...]
    spaces: dict[str, tuple[SpaceMatch, ...]]
    accepted: dict[str, tuple[tuple[int, AcceptedDomainFacts], ...]]

    @classmethod
    def build(
        cls,
        connectors: tuple[ConnectorFacts, ...],
        accepted_domains: tuple[AcceptedDomainFacts, ...],
    ) -> RoutingIndex:
        spaces: dict[str, list[SpaceMatch]] = {}
        ordered = sorted(connectors, key=lambda c: (c.name, c.id))
        for rank, connector in enumerate(ordered):
            for position, space in enumerate(connector.address_spaces):
                spaces.setdefault(space.pattern, []).append(
                    SpaceMatch(
                        rank,
                        position,
                        pattern_specificity(space.pattern),
                        space.cost,
                        connector,
                        space,
                    )
                )
        accepted: dict[str, list[tuple[int, AcceptedDomainFacts]]] = {}
        for position, domain in enumerate(accepted_domains):
            accepted.setdefault(domain.pattern, []).append((position, domain))
        return cls(
            connectors,
            accepted_domains,
            {k: tuple(v) for k, v in spaces.items()},
            {k: tuple(v) for k, v in accepted.items()},
        )

    @cached_property
    def restricted_patterns(self) -> frozenset[str]:
        """The address spaces of connectors that enforce delivery restrictions: a sender can
        be refused for a domain only when one of them covers it."""
        return frozenset(
            pattern
            for pattern, matches in self.spaces.items()
            if any(match.connector.restrictions.enforced for match in matches)
        )

    def fits(self, topology: Topology) -> bool:
        return (
            self.connectors is topology.connectors
            and self.accepted_domains is topology.accepted_domains
        )

    def space_matches(self, domain: str) -> list[SpaceMatch]:
        """The address spaces covering ``domain``, in routing's connector order."""
        found = [match for key in pattern_keys(domain) for match in self.spaces.get(key, ())]
        found.sort(key=lambda m: (m.rank, m.position))
        return found

    def accepted_matches(self, domain: str) -> list[AcceptedDomainFacts]:
        """The accepted domains covering ``domain``, in the snapshot's order."""
        found = [hit for key in pattern_keys(domain) for hit in self.accepted.get(key, ())]
        found.sort(key=lambda hit: hit[0])
        return [domain for _, domain in found]


@dataclass(frozen=True)
class Topology:
    accepted_domains: tuple[AcceptedDomainFacts, ...] = ()
    connectors: tuple[ConnectorFacts, ...] = ()
    source_server_id: int | None = None
    source_routing_group_id: int | None = None
    source_virtual_server_id: int | None = None
    smart_hosts: str = ""  # the source virtual server's smart hosts, ';'-separated
    # The source virtual server's "forward mail with unresolved recipients to host": where an
    # address of an authoritative domain with no mailbox goes instead of an NDR (only known
    # when ``mailboxes`` is).
    unresolved_forward_host: str = ""
    # None = the mailbox set is not known here, so local recipients are not checked.
    mailboxes: frozenset[str] | None = None
    # Built from the connectors and accepted domains when not given; ``dataclasses.replace``
    # passes it on, so a copy with other source fields shares it (and rebuilds it when the
    # connectors or accepted domains are not the same tuples).
    index: RoutingIndex | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Local parts compare case-insensitively; fold once here rather than per lookup.
        if self.mailboxes is not None and any(m != m.lower() for m in self.mailboxes):
            object.__setattr__(self, "mailboxes", frozenset(m.lower() for m in self.mailboxes))
        if self.index is None or not self.index.fits(self):
            index = RoutingIndex.build(self.connectors, self.accepted_domains)
            object.__setattr__(self, "index", index)

    @property
    def routing_index(self) -> RoutingIndex:
        assert self.index is not None  # set by __post_init__
        return self.index
