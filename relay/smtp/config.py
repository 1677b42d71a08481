"""What a listener knows about its configuration: plain frozen data, read from the database
by the supervisor (``load``) and handed to every new session. Session policy
(``relay.smtp.policy``) decides on these values alone, so it is testable without a database,
and a configuration change reaches new sessions without touching running ones."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.snapshot import AcceptedDomainFacts
from relay.queue.timings import DeliveryTimes

KB = 1024


@dataclass(frozen=True)
class ListenerConfig:
    """One virtual server, as its listener and its sessions see it."""

    id: int
    name: str = "Default SMTP Virtual Server"
    server_id: int = 0
    server_name: str = ""
    fqdn: str = "localhost"  # banner, EHLO answer, Received "by"
    ip_address: str | None = None  # None = (All Unassigned)
    port: int = 25
    desired_state: str = "running"  # running / stopped / paused
    # General
    connection_limit: int | None = None  # None = unlimited
    connection_limit_per_client: int | None = 20  # None = unlimited
    connection_timeout: float = 600.0  # seconds
    logging_enabled: bool = False
    apply_sender_filter: bool = False
    apply_recipient_filter: bool = False
    apply_connection_filter: bool = False
    # Access
    auth_anonymous: bool = True
    auth_basic: bool = True
    auth_basic_requires_tls: bool = False
    require_tls: bool = False
    certificate_id: int | None = None
    certificate_fingerprint: str = ""  # changes when the certificate changes
    connection_mode: str = "all_except_listed"  # or "only_listed"
    connection_list: tuple[str, ...] = ()
    relay_mode: str = "only_listed"  # or "all_except_listed"
    relay_list: tuple[str, ...] = ()
    relay_allow_authenticated: bool = True
    # Messages (bytes; None = no limit)
    message_size_limit: int | None = 4096 * KB
    session_size_limit: int | None = None
    messages_per_connection: int | None = 20
    recipients_per_message: int | None = 64000
    # Delivery > Advanced
    max_hop_count: int = 15
    reverse_dns_lookup: bool = False
    external_dns_servers: tuple[str, ...] = ()
    # Address spaces of connectors that allow relay and have this virtual server as a
    # bridgehead (``connectors.routing.relay_patterns``): accepted from any client.
    relay_patterns: frozenset[str] = frozenset()
    # Intake: expiration and delay-notification times of this and every other virtual
    # server (a connector's bridgehead decides for the mail it delivers).
    delivery_times: tuple[DeliveryTimes, ...] = ()

    @property
    def binding(self) -> tuple[str | None, int]:
        """What the listener binds: (address or None for every address, port)."""
        return (self.ip_address, self.port)


@dataclass(frozen=True)
class OrganizationPolicy:
    """The organization's global settings (Message Delivery): its filters, applied by a
    virtual server only when its "apply ... filter" boxes are on, and its default limits,
    applied by every virtual server."""

    blocked_senders: tuple[str, ...] = ()  # "user@domain" or "*@domain", normal form
    filter_blank_senders: bool = False  # refuse the null sender <>
    blocked_recipients: tuple[str, ...] = ()
    # "Filter recipients who are not in the directory": off, an unknown address of an
    # authoritative domain is accepted and then NDR'd (or forwarded to the virtual server's
    # host for unresolved recipients).
    filter_unknown_recipients: bool = True
    global_accept_list: tuple[str, ...] = ()  # IPs / CIDRs always let in (connection filter)
    global_deny_list: tuple[str, ...] = ()  # IPs / CIDRs always refused (connection filter)
    block_list_providers: tuple[str, ...] = ()  # DNSBL zones, e.g. zen.example.org
    message_tracking_enabled: bool = True
    subject_logging_enabled: bool = False
    # Message Delivery > Defaults, applied by every virtual server together with its own
    # limits (the smaller wins). Bytes / recipients; None = no limit. Receiving: mail for the
    # organization's accepted domains; sending: mail its users send (authenticated) or that
    # leaves it (a recipient outside the accepted domains).
    sending_size_limit: int | None = None
    receiving_size_limit: int | None = None
    recipients_per_message: int | None = None


@dataclass(frozen=True)
class Directory:
    """Which domains and mailboxes this organization receives mail for."""

    accepted_domains: tuple[AcceptedDomainFacts, ...] = ()
    mailboxes: frozenset[str] = field(default_factory=frozenset)  # lower-case addresses
