"""Routing queued recipients again: when their connector is down (failover to the next-cost
connector of the same address space), disabled, deleted or no longer accepts
the message (content restrictions changed), and for mail in "Final destination currently
unreachable" (a route may exist by now).

It asks ``connectors.routing.resolve``, the function intake and the routing simulator use, so
the new queue is the one a new message would take; a recipient whose route still leads to
its queue stays. Only the entries claimed by the caller move: mail being delivered by another
worker right now is never touched, and a recipient is never added to an entry that another
worker is delivering (that worker would finish without it): it waits for the next attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from connectors.models import Connector
from connectors.routing import Route, resolve
from connectors.snapshot import MessageFacts, Priority, Topology
from connectors.topology import build_topology
from relay.delivery.claims import server_name
from relay.delivery.dsn import FAILURE
from relay.delivery.results import send_dsn
from relay.queue.models import LinkQueue, Message, QueueEntry, QueueSpec, Recipient, TrackingEvent
from relay.queue.place import enhanced_status, queue_spec, spread_key
from relay.queue.tracking import TrackingSettings, message_event
from servers.models import VirtualServer
from smtpadmin.validators import parse_smart_hosts


@dataclass
class Rerouted:
    kept: list[QueueEntry] = field(default_factory=list)  # still hold recipients here; claimed
    queues: set[int] = field(default_factory=set)  # queues that received recipients
    moved: int = 0
    failed: int = 0


def connector_problem(connector: Connector | None, now: datetime) -> str:
    """Why a connector's queue should route its mail again ("" = it should not)."""
    if connector is None:
        return "the connector was deleted"
    if not connector.enabled:
        return f"connector '{connector.name}' is disabled"
    if connector.down_until is not None and connector.down_until > now:
        why = f" ({connector.down_reason})" if connector.down_reason else ""
        return f"connector '{connector.name}' is marked down{why}"
    return ""


def next_hop_changed(queue: LinkQueue, connector: Connector) -> str:
    """Why a connector's queue no longer matches its connector's next hop ("" = it does): the
    smart hosts were edited, or it switched between smart hosts and DNS. Its mail is routed
    again into the queue new mail takes, so an edit applies to mail already queued."""
    if connector.use_dns or not connector.smart_hosts.strip():
        if queue.smart_hosts:
            return f"connector '{connector.name}' now routes by DNS"
        return ""
    try:
        hosts = ";".join(str(host) for host in parse_smart_hosts(connector.smart_hosts))
    except ValidationError:
        return ""  # an odd stored value: keep the queue as it is
    if queue.smart_hosts != hosts:
        return f"connector '{connector.name}' now forwards to {hosts}"
    return ""


def content_refusal(connector: Connector, message: Message) -> str:
    """Why the connector's content restrictions refuse ``message`` now ("" = they do not):
    they may have changed since the message was routed."""
    limit = connector.max_message_size_kb
    if limit is not None and message.size > limit * 1024:
        return f"the message is over connector '{connector.name}''s {limit} KB limit"
    allowed = {
        "high": connector.allow_priority_high,
        "normal": connector.allow_priority_normal,
        "low": connector.allow_priority_low,
    }
    if not allowed.get(message.priority, True):
        return f"connector '{connector.name}' no longer takes {message.priority} priority mail"
    system = message.system or message.null_sender
    if system and not connector.allow_system_messages:
        return f"connector '{connector.name}' no longer takes system messages"
    if not system and not connector.allow_non_system_messages:
        return f"connector '{connector.name}' no longer takes non-system messages"
    return ""


class _Router:
    """Routing snapshots per receiving virtual server, with connectors down as of ``now``
    (the snapshot's own flag reads the wall clock; tests and the engine pass their clock)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._topologies: dict[int | None, Topology] = {}
        self._down: dict[int, datetime | None] | None = None

    def topology(self, vs: VirtualServer | None) -> Topology:
        key = vs.pk if vs is not None else None
        if key not in self._topologies:
            if self._down is None:
                self._down = dict(
                    Connector.objects.filter(down_until__isnull=False).values_list(
                        "pk", "down_until"
                    )
                )
            down = self._down
            topology = build_topology(vs, include_mailboxes=False)
            connectors = tuple(
                replace(c, down=_after(down.get(c.id), self.now)) for c in topology.connectors
            )
            self._topologies[key] = replace(topology, connectors=connectors)
        return self._topologies[key]

    def route(self, message: Message, address: str) -> Route:
        facts = MessageFacts(
            size=message.size,
            priority=_priority(message.priority),
            system=message.system,
            spread_key=spread_key(message.queue_id),
        )
        return resolve(address, message.sender, facts, self.topology(message.virtual_server))


def _after(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment > now


def _priority(value: str) -> Priority:
    return "high" if value == "high" else "low" if value == "low" else "normal"


def reroute(entries: Sequence[QueueEntry], owner: str, now: datetime, reason: str) -> Rerouted:
    """Route the open recipients of ``entries`` (claimed by ``owner``) again and move those
    whose route changed into their new queue. Entries left without open recipients are done;
    the others are returned in ``kept``, still claimed. A recipient routing now refuses
    fails (with a DSN)."""
    outcome = Rerouted()
    router = _Router(now)
    tracking = TrackingSettings.load()
    for entry in entries:
        with transaction.atomic():
            stays = _reroute_entry(entry, owner, now, reason, router, tracking, outcome)
        if stays:
            outcome.kept.append(entry)
    return outcome


def _reroute_entry(
    entry: QueueEntry,
    owner: str,
    now: datetime,
    reason: str,
    router: _Router,
    tracking: TrackingSettings,
    outcome: Rerouted,
) -> bool:
    message = entry.message
    recipients = list(entry.recipients.filter(state__in=Recipient.OPEN_STATES).order_by("pk"))
    receiving = message.virtual_server
    server_id = receiving.server_id if receiving is not None else None
    if server_id is None and entry.virtual_server is not None:
        server_id = entry.virtual_server.server_id
    moves: dict[str, tuple[QueueSpec, Route, list[Recipient]]] = {}
    refused: list[tuple[Recipient, Route]] = []
    stay = 0
    for recipient in recipients:
        route = router.route(message, recipient.address)
        spec = queue_spec(route, server_id=server_id or 0)
        if spec is None:
            refused.append((recipient, route))
        elif spec.key == entry.queue.key:
            stay += 1
        else:
            moves.setdefault(spec.key, (spec, route, []))[2].append(recipient)
    queues = LinkQueue.for_specs(spec for spec, _, _ in moves.values())
    events: list[TrackingEvent] = []
    common: dict[str, Any] = {"at": now, "server_name": server_name(entry.virtual_server)}
    for key, (_, route, moving) in moves.items():
        target = _target_entry(entry, queues[key], route, now)
        if target is None:
            stay += len(moving)  # its entry there is being delivered: try next time
            continue
        Recipient.objects.filter(pk__in=[r.pk for r in moving]).update(
            entry=target, route=route.kind
        )
        outcome.moved += len(moving)
        if queues[key].kind not in (LinkQueue.Kind.LOCAL, LinkQueue.Kind.SYSTEM):
            outcome.queues.add(queues[key].pk)
        events += [
            message_event(
                message,
                TrackingEvent.Kind.ROUTED,
                recipient=r.address,
                queue_name=queues[key].name,
                connector_name=route.connector_name,
                next_hop="; ".join(route.next_hops),
                detail=f"Routed again from '{entry.queue.name}' ({reason}): {route.reason}",
                **common,
            )
            for r in moving
        ]
    for recipient, route in refused:
        recipient.state = Recipient.State.FAILED
        recipient.status = enhanced_status(route.status) or "5.4.4"
        recipient.last_response = route.status or route.reason
        recipient.completed_at = now
        events.append(
            message_event(
                message,
                TrackingEvent.Kind.FAILED,
                recipient=recipient.address,
                response=recipient.last_response,
                detail=f"Routed again ({reason}): {route.reason}",
                **common,
            )
        )
    if refused:
        Recipient.objects.bulk_update(
            [r for r, _ in refused], ["state", "status", "last_response", "completed_at"]
        )
        outcome.failed += len(refused)
        send_dsn(message.pk, [r.pk for r, _ in refused], FAILURE, now)
    if tracking.enabled and events:
        TrackingEvent.objects.bulk_create(events)
    if not stay:
        entry.leased_to(owner).update(
            state=QueueEntry.State.DONE,
            completed_at=now,
            lease_owner="",
            lease_until=None,
            last_response=f"Routed again: {reason}",
        )
    return stay > 0


def _target_entry(
    source: QueueEntry, queue: LinkQueue, route: Route, now: datetime
) -> QueueEntry | None:
    """The message's entry in ``queue``, made due now (created when missing), or None when
    another worker holds it."""
    vs_id = route.bridgehead_virtual_server_id or source.message.virtual_server_id
    vs_id = vs_id or source.virtual_server_id
    target, created = QueueEntry.objects.get_or_create(
        message=source.message,
        queue=queue,
        defaults={
            "virtual_server_id": vs_id,
            "state": QueueEntry.State.READY,
            "next_attempt_at": now,
            "last_response": route.queued_reason,
            "expires_at": source.expires_at,
            "delay_notify_at": source.delay_notify_at,
            "delay_notified_at": source.delay_notified_at,
            "created_at": now,
        },
    )
    if created:
        return target
    state = QueueEntry.State.FROZEN if target.state == QueueEntry.State.FROZEN else "ready"
    # Conditional, like a claim: an entry another worker is delivering stays as it is.
    woken = (
        QueueEntry.objects.filter(pk=target.pk)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(state=state, next_attempt_at=now, completed_at=None)
    )
    return target if woken else None
