"""The snapshot that routing reads, built from the configuration in the database.

Kept apart from ``connectors.routing`` so routing stays a pure function; this is the only
place that knows how models map onto the snapshot. The number of queries is constant,
however many connectors, bridgeheads or mailboxes there are.
"""

from __future__ import annotations

from typing import cast

from django.db.models import Prefetch

from connectors.models import Connector
from connectors.snapshot import (
    AcceptedDomainFacts,
    AcceptedDomainType,
    AddressSpaceFacts,
    BridgeheadFacts,
    ConnectorFacts,
    ConnectorScope,
    ContentRestrictions,
    DeliveryRestrictions,
    Topology,
)
from servers.models import AcceptedDomain, Mailbox, Server, VirtualServer


def build_topology(
    source_virtual_server: VirtualServer | None = None, *, include_mailboxes: bool = True
) -> Topology:
    """The routing snapshot as seen from ``source_virtual_server`` (default: the first one).

    ``include_mailboxes=False`` leaves the mailbox set out (``None``): cheaper when only
    remote routing matters, and then routing does not check local recipients.
    """
    if source_virtual_server is None:
        source_virtual_server = (
            VirtualServer.objects.select_related("server").order_by("id").first()
        )
    accepted = tuple(
        AcceptedDomainFacts(domain.domain, cast(AcceptedDomainType, domain.type))
        for domain in AcceptedDomain.objects.order_by("domain")
    )
    connectors = Connector.objects.order_by("name").prefetch_related(
        "address_spaces",
        Prefetch(
            "bridgeheads",
            queryset=VirtualServer.objects.select_related("server").order_by("id"),
        ),
    )
    # Disabled mailboxes are left out: to routing they are unknown recipients.
    mailboxes = (
        frozenset(
            address.lower()
            for address in Mailbox.objects.filter(enabled=True).values_list("address", flat=True)
        )
        if include_mailboxes
        else None
    )
    source_server = source_virtual_server.server if source_virtual_server else None
    return Topology(
        accepted_domains=accepted,
        connectors=tuple(connector_facts(connector) for connector in connectors),
        source_server_id=source_server.pk if source_server else None,
        source_routing_group_id=source_server.routing_group_id if source_server else None,
        source_virtual_server_id=source_virtual_server.pk if source_virtual_server else None,
        smart_hosts=source_virtual_server.smart_hosts if source_virtual_server else "",
        mailboxes=mailboxes,
    )


def connector_facts(connector: Connector) -> ConnectorFacts:
    """One connector as routing sees it; expects address spaces and bridgeheads prefetched."""
    return ConnectorFacts(
        id=connector.pk,
        name=connector.name,
        enabled=connector.enabled,
        scope=cast(ConnectorScope, connector.scope),
        routing_group_id=connector.routing_group_id,
        use_dns=connector.use_dns,
        smart_hosts=connector.smart_hosts,
        address_spaces=tuple(
            AddressSpaceFacts(space.domain, space.cost) for space in connector.address_spaces.all()
        ),
        bridgeheads=tuple(
            BridgeheadFacts(
                virtual_server_id=vs.pk,
                server_id=vs.server_id,
                server_up=vs.server.status == Server.Status.RUNNING,
                name=str(vs),
            )
            for vs in connector.bridgeheads.all()
        ),
        restrictions=DeliveryRestrictions(
            enforced=connector.restrictions_enforced,
            accept_by_default=connector.accept_by_default,
            sender_exceptions=tuple(str(s) for s in connector.sender_exceptions or ()),
        ),
        content=ContentRestrictions(
            allow_priority_high=connector.allow_priority_high,
            allow_priority_normal=connector.allow_priority_normal,
            allow_priority_low=connector.allow_priority_low,
            allow_system_messages=connector.allow_system_messages,
            allow_non_system_messages=connector.allow_non_system_messages,
            max_message_size_kb=connector.max_message_size_kb,
        ),
        down=connector.is_marked_down,
        down_reason=connector.down_reason,
    )
