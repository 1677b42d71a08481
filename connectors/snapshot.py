"""The topology snapshot that routing reads: frozen dataclasses built from the database by
``connectors.topology.build_topology`` (or by hand in tests and benchmarks). Patterns and
addresses are in their stored (normal) form: lower-case IDNA domains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
    # Marked down by delivery after connection-level failures.
    down: bool = False
    down_reason: str = ""


@dataclass(frozen=True)
class Topology:
    accepted_domains: tuple[AcceptedDomainFacts, ...] = ()
    connectors: tuple[ConnectorFacts, ...] = ()
    source_server_id: int | None = None
    source_routing_group_id: int | None = None
    source_virtual_server_id: int | None = None
    smart_hosts: str = ""  # the source virtual server's smart hosts, ';'-separated
    # None = the mailbox set is not known here, so local recipients are not checked.
    mailboxes: frozenset[str] | None = None

    def __post_init__(self) -> None:
        # Local parts compare case-insensitively; fold once here rather than per lookup.
        if self.mailboxes is not None and any(m != m.lower() for m in self.mailboxes):
            object.__setattr__(self, "mailboxes", frozenset(m.lower() for m in self.mailboxes))
