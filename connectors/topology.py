"""The snapshot that routing reads, built from the configuration in the database.

Kept apart from ``connectors.routing`` so routing stays a pure function; this is the only
place that knows how models map onto the snapshot. The number of queries is constant,
however many connectors, bridgeheads or mailboxes there are.

Building it reads every connector, so a process keeps it (``shared_topologies``) and builds
it again only when ``configuration_fingerprint`` (a few aggregate queries) moved: the relay's
configuration pass every second, its DSNs, the routing API and the console's simulator.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from django.conf import settings
from django.db import connection
from django.db.models import Model, Prefetch
from django.utils import timezone

from connectors.models import AddressSpace, Connector
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
    mailboxes = read_mailboxes() if include_mailboxes else None
    source_server = source_virtual_server.server if source_virtual_server else None
    return Topology(
        accepted_domains=accepted,
        connectors=tuple(connector_facts(connector) for connector in connectors),
        source_server_id=source_server.pk if source_server else None,
        source_routing_group_id=source_server.routing_group_id if source_server else None,
        source_virtual_server_id=source_virtual_server.pk if source_virtual_server else None,
        smart_hosts=source_virtual_server.smart_hosts if source_virtual_server else "",
        unresolved_forward_host=(
            source_virtual_server.unresolved_forward_host if source_virtual_server else ""
        ),
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
        allow_relay=connector.allow_relay,
        down=connector.is_marked_down,
        down_reason=connector.down_reason,
    )


# --- built once per configuration version ------------------------------------------------

Fingerprint = tuple[Any, ...]


class Aggregate(NamedTuple):
    """One number over one table, e.g. ``Aggregate(Connector, "MAX({modified_at})")``; field
    names in braces, an optional condition with ``%s`` parameters."""

    model: type[Model]
    expression: str
    where: str = ""


COUNTED = ("COUNT(*)", "MAX({id})")  # rows added or deleted


def aggregates(columns: Sequence[Aggregate], params: Sequence[Any] = ()) -> Fingerprint:
    """The numbers in one query. Each is its own sub-query, so that a database answers it from
    an index where it can (a count from the smallest index, a maximum from an index on its
    column) instead of reading every row of a wide table."""
    quote = connection.ops.quote_name

    def select(column: Aggregate) -> str:
        meta = column.model._meta
        names = {f.name: quote(f.column or f.attname) for f in meta.concrete_fields}
        where = f" WHERE {column.where.format(**names)}" if column.where else ""
        expression = column.expression.format(**names)
        # Only quoted names from the models go into the text; values are parameters.
        return f"(SELECT {expression} FROM {quote(meta.db_table)}{where})"  # noqa: S608

    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(select(c) for c in columns), list(params))
        return tuple(cursor.fetchone() or ())


def configuration_fingerprint(now: datetime | None = None) -> Fingerprint:
    """Moves whenever anything the routing snapshot (without mailboxes) is built from changes:
    a row added or deleted (counts, highest ids), saved (latest ``modified_at``), an address
    space or bridgehead replaced (new ids), a connector marked down or its mark running out,
    a server coming up or going quiet. Two queries: the aggregates in one, and the servers'
    rows (few, and without a change time), with only whether the heartbeat is recent."""
    now = now or timezone.now()
    bridgeheads = Connector.bridgeheads.through
    numbers = aggregates(
        [
            *(Aggregate(Connector, e) for e in (*COUNTED, "MAX({modified_at})")),
            Aggregate(Connector, "COUNT(*)", "{down_until} > %s"),
            Aggregate(Connector, "MAX({down_until})"),
            *(Aggregate(AddressSpace, e) for e in (*COUNTED, "SUM({cost})")),
            *(Aggregate(bridgeheads, e) for e in (*COUNTED, "SUM({virtualserver})")),
            *(Aggregate(VirtualServer, e) for e in (*COUNTED, "MAX({modified_at})")),
            *(Aggregate(AcceptedDomain, e) for e in (*COUNTED, "MAX({modified_at})")),
        ],
        [connection.ops.adapt_datetimefield_value(now)],
    )
    cutoff = now - timedelta(seconds=settings.SMTPADMIN_HEARTBEAT_TIMEOUT)
    servers = tuple(
        (pk, name, group, seen is not None and seen >= cutoff)
        for pk, name, group, seen in Server.objects.order_by("pk").values_list(
            "pk", "name", "routing_group_id", "last_seen"
        )
    )
    return numbers, servers


def mailbox_fingerprint() -> Fingerprint:
    """Moves when a mailbox is added, deleted or saved (enabling one is a save)."""
    return aggregates([Aggregate(Mailbox, e) for e in (*COUNTED, "MAX({modified_at})")])


def read_mailboxes() -> frozenset[str]:
    # Disabled mailboxes are left out: to routing they are unknown recipients.
    return frozenset(
        address.lower()
        for address in Mailbox.objects.filter(enabled=True).values_list("address", flat=True)
    )


def first_virtual_server() -> VirtualServer | None:
    """The default source of a route: the first virtual server."""
    return VirtualServer.objects.select_related("server").order_by("id").first()


def _source_key(vs: VirtualServer | None) -> tuple[Any, ...]:
    if vs is None:
        return (None, None, None, "", "")
    return (
        vs.pk,
        vs.server_id,
        vs.server.routing_group_id,
        vs.smart_hosts,
        vs.unresolved_forward_host,
    )


def with_source(topology: Topology, vs: VirtualServer | None) -> Topology:
    """The same snapshot as seen from ``vs`` (which has its server loaded)."""
    pk, server_id, group_id, smart_hosts, forward_host = _source_key(vs)
    return replace(
        topology,
        source_server_id=server_id,
        source_routing_group_id=group_id,
        source_virtual_server_id=pk,
        smart_hosts=smart_hosts,
        unresolved_forward_host=forward_host,
    )


class TopologyCache:
    """Routing's snapshot, built once per configuration version and shared by the threads of
    a process. Each call costs the fingerprint queries; a build happens only when the
    fingerprint moved (the mailbox set likewise, by its own fingerprint)."""

    MAX_VIEWS = 256  # snapshots kept per version, one per source and mailbox set

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fingerprint: Fingerprint | None = None
        self._base: Topology | None = None
        self._mailbox_fingerprint: Fingerprint | None = None
        self._mailboxes: frozenset[str] = frozenset()
        self._views: dict[tuple[Any, ...], Topology] = {}
        self.builds = 0  # how many times the snapshot was built (the tests count them)

    def clear(self) -> None:
        with self._lock:
            self._fingerprint = self._base = self._mailbox_fingerprint = None
            self._mailboxes = frozenset()
            self._views.clear()
            self.builds = 0

    def topology(
        self, source: VirtualServer | None = None, *, include_mailboxes: bool = True
    ) -> Topology:
        """As ``build_topology(source, include_mailboxes=...)`` returns it now, read again only
        when the configuration changed. ``source`` needs its server loaded."""
        if source is None:
            source = first_virtual_server()
        return self.topologies([source], include_mailboxes=include_mailboxes)[0]

    def topologies(
        self, sources: Sequence[VirtualServer | None], *, include_mailboxes: bool = True
    ) -> list[Topology]:
        """One snapshot per source (``None`` = no source), for the price of one fingerprint."""
        fingerprint = configuration_fingerprint()
        mailboxes = mailbox_fingerprint() if include_mailboxes else None
        with self._lock:
            # Fingerprints first, then the build: a change in between makes the next call
            # build again, never keeps a stale snapshot.
            if self._base is None or fingerprint != self._fingerprint:
                self._base = build_topology(first_virtual_server(), include_mailboxes=False)
                self._fingerprint = fingerprint
                self._views.clear()
                self.builds += 1
            if mailboxes is not None and mailboxes != self._mailbox_fingerprint:
                self._mailboxes = read_mailboxes()
                self._mailbox_fingerprint = mailboxes
            return [self._view(self._base, vs, mailboxes) for vs in sources]

    def _view(
        self, base: Topology, vs: VirtualServer | None, mailboxes: Fingerprint | None
    ) -> Topology:
        key = (_source_key(vs), mailboxes)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= self.MAX_VIEWS:
                self._views.clear()
            view = with_source(base, vs)
            if mailboxes is not None:
                view = replace(view, mailboxes=self._mailboxes)
            self._views[key] = view
        return view


# The process's snapshot: the relay's configuration pass and DSNs, the API, the simulator.
shared_topologies = TopologyCache()
