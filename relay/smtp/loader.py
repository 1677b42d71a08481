"""Reads the relay's configuration from the database into the plain snapshots of
``relay.smtp.config``. Runs in a worker thread of the relay, never on the event loop.

The supervisor calls ``load`` every second. The virtual servers of this server (a handful of
rows) and the organization are read every time, so a change made by any means, including
``QuerySet.update()``, is seen; the directory (accepted domains and mailboxes, possibly many)
is re-read only when its cheap fingerprint (count and latest change) moved, and routing's
snapshot (every connector) only when ``configuration_fingerprint`` moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, cast

from connectors.routing import relay_patterns
from connectors.snapshot import AcceptedDomainFacts, AcceptedDomainType, Topology
from connectors.topology import Aggregate, aggregates, shared_topologies
from relay.queue.place import all_delivery_times
from relay.smtp.config import KB, Directory, ListenerConfig, OrganizationPolicy
from servers.models import AcceptedDomain, Mailbox, VirtualServer
from smtpadmin.models import Organization


@dataclass(frozen=True)
class RelayConfiguration:
    listeners: tuple[ListenerConfig, ...]
    organization: OrganizationPolicy
    directory: Directory
    directory_fingerprint: tuple[Any, ...] = ()
    # certificate id -> (chain PEM, key PEM), for the certificates the listeners use.
    certificates: dict[int, tuple[str, str]] = field(default_factory=dict, compare=False)
    # virtual server id -> the routing snapshot as seen from it (for intake).
    topologies: dict[int, Topology] = field(default_factory=dict, compare=False)


def _kb(value: int | None) -> int | None:
    return value * KB if value else None


def listener_config(vs: VirtualServer) -> ListenerConfig:
    certificate = vs.certificate
    return ListenerConfig(
        id=vs.pk,
        name=vs.name,
        server_id=vs.server_id,
        server_name=vs.server.name,
        fqdn=vs.effective_fqdn,
        ip_address=vs.ip_address or None,
        port=vs.port,
        desired_state=vs.desired_state,
        connection_limit=vs.connection_limit,
        connection_limit_per_client=vs.connection_limit_per_client or None,
        connection_timeout=float(vs.connection_timeout_minutes * 60),
        logging_enabled=vs.logging_enabled,
        apply_sender_filter=vs.apply_sender_filter,
        apply_recipient_filter=vs.apply_recipient_filter,
        apply_connection_filter=vs.apply_connection_filter,
        auth_anonymous=vs.auth_anonymous,
        auth_basic=vs.auth_basic,
        auth_basic_requires_tls=vs.auth_basic_requires_tls,
        require_tls=vs.require_tls,
        certificate_id=certificate.pk if certificate else None,
        certificate_fingerprint=certificate.fingerprint_sha256 if certificate else "",
        connection_mode=vs.connection_mode,
        connection_list=tuple(vs.connection_list or ()),
        relay_mode=vs.relay_mode,
        relay_list=tuple(vs.relay_list or ()),
        relay_allow_authenticated=vs.relay_allow_authenticated,
        message_size_limit=_kb(vs.message_size_limit_kb),
        session_size_limit=_kb(vs.session_size_limit_kb),
        messages_per_connection=vs.messages_per_connection,
        recipients_per_message=vs.recipients_per_message,
        max_hop_count=vs.max_hop_count,
        reverse_dns_lookup=vs.reverse_dns_lookup,
        external_dns_servers=tuple(vs.external_dns_servers or ()),
    )


def organization_policy(organization: Organization) -> OrganizationPolicy:
    return OrganizationPolicy(
        blocked_senders=tuple(organization.blocked_senders or ()),
        filter_blank_senders=organization.filter_blank_senders,
        blocked_recipients=tuple(organization.blocked_recipients or ()),
        filter_unknown_recipients=organization.filter_unknown_recipients,
        global_accept_list=tuple(organization.global_accept_list or ()),
        global_deny_list=tuple(organization.global_deny_list or ()),
        block_list_providers=tuple(organization.block_list_providers or ()),
        message_tracking_enabled=organization.message_tracking_enabled,
        subject_logging_enabled=organization.subject_logging_enabled,
        sending_size_limit=_kb(organization.sending_size_limit_kb),
        receiving_size_limit=_kb(organization.receiving_size_limit_kb),
        recipients_per_message=organization.recipients_limit,
    )


def directory_fingerprint() -> tuple[Any, ...]:
    """Counts and latest changes of accepted domains and mailboxes, in one query that the
    indexes answer (no scan of the mailboxes every second)."""
    return aggregates(
        [
            Aggregate(model, expression)
            for model in (AcceptedDomain, Mailbox)
            for expression in ("COUNT(*)", "MAX({modified_at})")
        ]
    )


def load_directory() -> Directory:
    return Directory(
        accepted_domains=tuple(
            AcceptedDomainFacts(domain, cast(AcceptedDomainType, kind))
            for domain, kind in AcceptedDomain.objects.order_by("domain").values_list(
                "domain", "type"
            )
        ),
        mailboxes=frozenset(
            address.lower()
            for address in Mailbox.objects.filter(enabled=True).values_list("address", flat=True)
        ),
    )


def topologies(virtual_servers: list[VirtualServer]) -> dict[int, Topology]:
    """Routing's snapshot for each virtual server: the process's shared one, built again only
    when the configuration changed, with the source fields of each."""
    if not virtual_servers:
        return {}
    views = shared_topologies.topologies(virtual_servers, include_mailboxes=False)
    # Routing needs the mailboxes where unresolved recipients are forwarded rather than left
    # to local delivery's NDR; the cache reads them once per change of the mailbox set.
    forwarding = [vs for vs in virtual_servers if vs.unresolved_forward_host]
    with_mailboxes = dict(
        zip(
            (vs.pk for vs in forwarding),
            shared_topologies.topologies(forwarding, include_mailboxes=True) if forwarding else (),
            strict=True,
        )
    )
    return {
        vs.pk: with_mailboxes.get(vs.pk, view)
        for vs, view in zip(virtual_servers, views, strict=True)
    }


def _relay_patterns(
    view: Topology, vs_id: int, previous: RelayConfiguration | None
) -> frozenset[str]:
    """``relay_patterns`` of the view, worked out again only when the snapshot changed."""
    if previous is not None and previous.topologies.get(vs_id) is view:
        for listener in previous.listeners:
            if listener.id == vs_id:
                return listener.relay_patterns
    return relay_patterns(view)


def load(server_id: int, previous: RelayConfiguration | None = None) -> RelayConfiguration:
    virtual_servers = list(
        VirtualServer.objects.filter(server_id=server_id)
        .select_related("server", "certificate")
        .order_by("pk")
    )
    fingerprint = directory_fingerprint()
    if previous is not None and previous.directory_fingerprint == fingerprint:
        directory = previous.directory
    else:
        directory = load_directory()
    certificates = {
        vs.certificate.pk: (vs.certificate.certificate_pem, vs.certificate.private_key_pem)
        for vs in virtual_servers
        if vs.certificate is not None
    }
    times = all_delivery_times()
    views = topologies(virtual_servers)
    return RelayConfiguration(
        listeners=tuple(
            replace(
                listener_config(vs),
                delivery_times=times,
                relay_patterns=_relay_patterns(views[vs.pk], vs.pk, previous),
            )
            for vs in virtual_servers
        ),
        topologies=views,
        organization=organization_policy(Organization.get()),
        directory=directory,
        directory_fingerprint=fingerprint,
        certificates=certificates,
    )
