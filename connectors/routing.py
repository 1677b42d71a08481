"""Routing: which way one recipient goes, and why.

Pure: ``resolve`` reads a snapshot of the topology made of frozen dataclasses
(``connectors.snapshot``, built from the database by ``connectors.topology.build_topology``)
and returns a ``Route`` whose ``steps``
spell out every decision. The relay's intake and the routing simulator call the same function,
so what the simulator explains is what the relay does.

Patterns and addresses in the snapshot are expected in their stored (normal) form: lower-case
IDNA domains, as ``smtpadmin.validators`` produces them. The address spaces and accepted
domains covering a domain are looked up in the snapshot's index by pattern
(``connectors.snapshot.RoutingIndex``), so a route costs the same with ten connectors or ten
thousand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from django.core.exceptions import ValidationError

from connectors.snapshot import (
    AcceptedDomainFacts,
    AddressSpaceFacts,
    BridgeheadFacts,
    ConnectorFacts,
    ContentRestrictions,
    MessageFacts,
    SpaceMatch,
    Topology,
    pattern_keys,
)
from smtpadmin.validators import (
    normalize_address,
    parse_smart_hosts,
    pattern_specificity,
    sender_pattern_matches,
)

RouteKind = Literal["local", "connector", "smart_host", "dns", "unreachable", "reject"]
ROUTE_KINDS: tuple[RouteKind, ...] = (
    "local",
    "connector",
    "smart_host",
    "dns",
    "unreachable",
    "reject",
)
UNREACHABLE_QUEUE = "Final destination currently unreachable"

_TYPE_LABELS = {
    "authoritative": "authoritative",
    "internal_relay": "internal relay",
    "external_relay": "external relay",
}


# --- the answer --------------------------------------------------------------------------


class Step(NamedTuple):
    name: str
    decision: str


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    recipient: str  # normal form (IDNA domain) when valid, else as given
    domain: str  # "" when the address is invalid
    steps: tuple[Step, ...]
    accepted_domain: AcceptedDomainFacts | None = None
    connector: ConnectorFacts | None = None
    address_space: AddressSpaceFacts | None = None  # the connector's matching space
    bridgehead: BridgeheadFacts | None = None
    next_hops: tuple[str, ...] = ()
    # Mail waits instead of leaving now: on the chosen connector when every connector of the
    # winning address space is down, or in the unreachable queue when there is no route.
    queued: bool = False
    queued_reason: str = ""
    status: str = ""  # SMTP reply / NDR status for "reject" and "unreachable"
    reason: str = ""  # one-line summary

    @property
    def connector_id(self) -> int | None:
        return self.connector.id if self.connector else None

    @property
    def connector_name(self) -> str:
        return self.connector.name if self.connector else ""

    @property
    def bridgehead_virtual_server_id(self) -> int | None:
        return self.bridgehead.virtual_server_id if self.bridgehead else None

    @property
    def cost(self) -> int | None:
        return self.address_space.cost if self.address_space else None


# --- the rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    connector: ConnectorFacts
    space: AddressSpaceFacts  # its most specific matching address space

    @property
    def specificity(self) -> int:
        return pattern_specificity(self.space.pattern)

    @property
    def cost(self) -> int:
        return self.space.cost

    @property
    def label(self) -> str:
        return f"'{self.connector.name}'"


class _Trace:
    def __init__(self, recipient: str) -> None:
        self.recipient = recipient
        self.domain = ""
        self.accepted: AcceptedDomainFacts | None = None
        self.steps: list[Step] = []

    def note(self, name: str, decision: str) -> None:
        self.steps.append(Step(name, decision))

    def route(
        self,
        kind: RouteKind,
        reason: str,
        *,
        connector: ConnectorFacts | None = None,
        address_space: AddressSpaceFacts | None = None,
        bridgehead: BridgeheadFacts | None = None,
        next_hops: tuple[str, ...] = (),
        queued_reason: str = "",
        status: str = "",
    ) -> Route:
        self.note("result", reason)
        return Route(
            kind=kind,
            recipient=self.recipient,
            domain=self.domain,
            steps=tuple(self.steps),
            accepted_domain=self.accepted,
            connector=connector,
            address_space=address_space,
            bridgehead=bridgehead,
            next_hops=next_hops,
            queued=bool(queued_reason),
            queued_reason=queued_reason,
            status=status,
            reason=reason,
        )


def resolve(recipient: str, sender: str, message: MessageFacts, topology: Topology) -> Route:
    """Where mail from ``sender`` to ``recipient`` goes, with the reason for every decision.

    Never raises for bad input: an unusable address is a ``reject`` route.
    """
    trace = _Trace(recipient)
    address = _normal_recipient(recipient, trace)
    if address is None:
        return trace.route(
            "reject",
            f"'{recipient}' is not a valid recipient address.",
            status="501 5.1.3 Bad recipient address syntax",
        )
    trace.recipient = address
    domain = trace.domain = address.rpartition("@")[2]

    sender = _normal_sender(sender)
    null_sender = sender == ""
    system = message.system or null_sender
    _note_message(trace, sender, null_sender, system, message)

    accepted = _match_accepted_domain(domain, topology)
    trace.accepted = accepted
    if accepted is None:
        trace.note(
            "accepted domain",
            f"No accepted domain covers {domain}: it is a remote domain. (Whether this client "
            "may relay is the virtual server's relay restriction, not a routing decision.)",
        )
    elif accepted.type == "authoritative":
        trace.note(
            "accepted domain",
            f"{domain} matches accepted domain '{accepted.pattern}' (authoritative): "
            "delivered to local mailboxes.",
        )
        return _local(address, trace, topology)
    else:
        trace.note(
            "accepted domain",
            f"{domain} matches accepted domain '{accepted.pattern}' "
            f"({_TYPE_LABELS.get(accepted.type, accepted.type)}): routed onward by connector.",
        )

    candidates = _candidates(domain, topology, trace)
    if not candidates:
        return _no_connector(domain, accepted, topology, trace)

    allowed = _apply_restrictions(candidates, sender, null_sender, system, message, trace)
    if isinstance(allowed, Route):
        return allowed
    return _choose(allowed, domain, message, topology, trace)


DELIVERY_RESTRICTION_STATUS = "550 5.7.1"


def sender_restriction(recipient: str, sender: str, topology: Topology) -> Route | None:
    """The "reject" route ``resolve`` gives every message from ``sender`` to ``recipient``
    because the delivery restrictions of every connector that could carry it refuse the
    sender; ``None`` when the answer may depend on the message (its size, priority) or the
    sender may go. Known as soon as RCPT TO, so the relay can refuse there instead of
    bouncing after the 250. Delivery restrictions are weighed before content restrictions
    and name people only, so the answer does not depend on the message's facts."""
    address = _normal_recipient(recipient, _Trace(recipient))
    if address is None:
        return None
    return normal_sender_restriction(address, _normal_sender(sender), topology)


def normal_sender_restriction(address: str, sender: str, topology: Topology) -> Route | None:
    """``sender_restriction`` for addresses already in their normal form (domains in
    lower-case IDNA; the sender lower case, "" = the null sender), as an SMTP session has
    them: no IDNA work per RCPT."""
    domain = address.rpartition("@")[2]
    if not sender or not _any_enforced(domain, topology):
        return None  # the usual case, answered without building the explanation
    trace = _Trace(address)
    trace.note("recipient", f"Recipient {address}, domain {domain}.")
    trace.domain = domain
    accepted = trace.accepted = _match_accepted_domain(domain, topology)
    if accepted is not None and accepted.type == "authoritative":
        return None
    candidates = _candidates(domain, topology, trace)
    if not candidates or not all(
        candidate.connector.restrictions.enforced for candidate in candidates
    ):
        return None
    refused = _apply_restrictions(candidates, sender, False, False, MessageFacts(), trace)
    return refused if isinstance(refused, Route) and refused.kind == "reject" else None


def _any_enforced(domain: str, topology: Topology) -> bool:
    """Some connector with an address space covering ``domain`` enforces delivery
    restrictions: only then can a sender be refused for it."""
    restricted = topology.routing_index.restricted_patterns
    return bool(restricted) and any(key in restricted for key in pattern_keys(domain))


def relay_patterns(topology: Topology) -> frozenset[str]:
    """The address spaces the source virtual server accepts mail for from any client: those
    of enabled connectors with "allow messages to be relayed to these domains" that it is a
    bridgehead of (a connector that lists none is sent over by every virtual server in its
    scope, so every one of them is). A backup MX for those domains, and nothing more: an address
    space '*' opens nothing."""
    source = topology.source_virtual_server_id
    patterns: set[str] = set()
    for connector in topology.connectors:
        if not connector.allow_relay or not connector.enabled or source is None:
            continue
        if connector.bridgeheads:
            bridgehead = any(b.virtual_server_id == source for b in connector.bridgeheads)
        else:
            bridgehead = connector.scope == "organization" or (
                connector.routing_group_id == topology.source_routing_group_id
            )
        if bridgehead:
            # '*' would accept mail for every domain from anyone: an open relay, never opened
            # (Exchange 2003 did open it; the Relay check flags such a connector).
            patterns.update(s.pattern for s in connector.address_spaces if s.pattern != "*")
    return frozenset(patterns)


def _normal_recipient(recipient: str, trace: _Trace) -> str | None:
    text = recipient.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    try:
        address = normalize_address(text)
    except (ValidationError, ValueError) as exc:
        # ValueError too: resolve promises an answer for any text, and the IDNA codec is
        # not ours to vouch for.
        messages = exc.messages if isinstance(exc, ValidationError) else [str(exc)]
        trace.note("recipient", f"'{recipient}' is not a valid address: {' '.join(messages)}")
        return None
    domain = address.rpartition("@")[2]
    typed_domain = text.rpartition("@")[2]
    if typed_domain != domain:
        trace.note(
            "recipient",
            f"Recipient {address}: domain '{typed_domain}' normalised to {domain} "
            "(IDNA, lower case).",
        )
    else:
        trace.note("recipient", f"Recipient {address}, domain {domain}.")
    return address


def _normal_sender(sender: str) -> str:
    """The sender in the form restriction patterns use: lower case, IDNA; "" = null sender."""
    text = sender.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text:
        return ""
    try:
        return normalize_address(text).lower()
    except (ValidationError, ValueError):
        # A malformed sender still routes; it just matches no exception pattern exactly.
        return text.lower()


def _note_message(
    trace: _Trace, sender: str, null_sender: bool, system: bool, message: MessageFacts
) -> None:
    if null_sender:
        who = "From the null sender <>: a system message (DSN/NDR)"
    else:
        who = f"From <{sender}>: a {'system' if system else 'non-system'} message"
    trace.note("message", f"{who}, priority {message.priority}, {message.size} bytes.")


def _match_accepted_domain(domain: str, topology: Topology) -> AcceptedDomainFacts | None:
    """The most specific accepted domain covering ``domain``; the first listed on a tie."""
    matches = topology.routing_index.accepted_matches(domain)
    return max(matches, key=lambda d: pattern_specificity(d.pattern), default=None)


def _local(address: str, trace: _Trace, topology: Topology) -> Route:
    folded = address.lower()
    if topology.mailboxes is None:
        trace.note(
            "mailbox",
            "The mailbox list is not part of this snapshot; local delivery checks the recipient.",
        )
    elif folded not in topology.mailboxes:
        trace.note("mailbox", f"No mailbox {folded} exists in the authoritative domain.")
        if topology.unresolved_forward_host.strip():
            hosts = _smart_host_list(topology.unresolved_forward_host)
            trace.note(
                "next hop",
                "The source virtual server forwards mail with unresolved recipients to "
                f"{'; '.join(hosts)}.",
            )
            return trace.route(
                "smart_host",
                f"{address} is not a local mailbox: forwarded to {'; '.join(hosts)} "
                "(unresolved recipient).",
                next_hops=hosts,
            )
        return trace.route(
            "reject",
            f"{address} is not a local mailbox: rejected (authoritative domain).",
            status=f"550 5.1.1 <{address}>: Recipient address rejected: user unknown",
        )
    else:
        trace.note("mailbox", f"Mailbox {folded} exists (local parts compare case-insensitively).")
    return trace.route(
        "local",
        f"Local delivery to {address}.",
        next_hops=("local delivery",),
    )


def _matching_spaces(domain: str, topology: Topology) -> list[_Candidate]:
    """Every connector with an address space covering ``domain``, by name then id, each with
    its most specific such space (the cheaper one if the same pattern is listed twice, else
    the first listed). Looked up in the snapshot's index: as many lookups as ``domain`` has
    labels, whatever the number of connectors."""
    result: list[_Candidate] = []
    best: SpaceMatch | None = None
    for match in topology.routing_index.space_matches(domain):
        if best is not None and match.rank != best.rank:
            result.append(_Candidate(best.connector, best.space))
            best = None
        if best is None or (match.specificity, -match.cost) > (best.specificity, -best.cost):
            best = match
    if best is not None:
        result.append(_Candidate(best.connector, best.space))
    return result


def _candidates(domain: str, topology: Topology, trace: _Trace) -> list[_Candidate]:
    """Eligible connectors whose address space matches, narrowed to the most specific space."""
    matching: list[_Candidate] = []
    for found in _matching_spaces(domain, topology):
        connector, best = found.connector, found.space
        if not connector.enabled:
            trace.note(
                "eligibility",
                f"'{connector.name}' matches with '{best.pattern}' but is disabled: not used.",
            )
            continue
        if connector.scope == "routing_group" and (
            topology.source_routing_group_id is None
            or connector.routing_group_id != topology.source_routing_group_id
        ):
            trace.note(
                "eligibility",
                f"'{connector.name}' matches with '{best.pattern}' but its scope is routing "
                f"group {connector.routing_group_id} and the source server is in "
                f"{_routing_group_text(topology.source_routing_group_id)}: not used.",
            )
            continue
        matching.append(_Candidate(connector, best))
    if not matching:
        return []
    trace.note(
        "address space",
        "Matching address spaces: "
        + ", ".join(f"{c.label} '{c.space.pattern}' (cost {c.cost})" for c in matching)
        + ".",
    )
    top = max(c.specificity for c in matching)
    winners = [c for c in matching if c.specificity == top]
    losers = [c for c in matching if c.specificity < top]
    text = (
        f"Most specific matching address space: '{winners[0].space.pattern}', "
        f"candidates {_names(winners)}."
    )
    if losers:
        text += (
            f" Less specific spaces lose regardless of cost, and mail never falls back to them: "
            f"{', '.join(f'{c.label} ({c.space.pattern!r}, cost {c.cost})' for c in losers)}."
        )
    trace.note("address space", text)
    return winners


def _routing_group_text(group_id: int | None) -> str:
    return f"routing group {group_id}" if group_id is not None else "no known routing group"


def _names(candidates: Iterable[_Candidate]) -> str:
    return ", ".join(c.label for c in candidates)


def _no_connector(
    domain: str, accepted: AcceptedDomainFacts | None, topology: Topology, trace: _Trace
) -> Route:
    trace.note("address space", f"No eligible connector has an address space matching {domain}.")
    if accepted is not None:
        # Smart host and DNS are for remote domains only: the MX of a domain we accept points
        # back at us, so following it would loop.
        reason = (
            f"{domain} is an accepted relay domain but no connector routes it: "
            f"queued as '{UNREACHABLE_QUEUE}', then NDR 5.4.4."
        )
        return trace.route(
            "unreachable",
            reason,
            queued_reason=UNREACHABLE_QUEUE,
            status=f"554 5.4.4 No route found to {domain}",
        )
    if topology.smart_hosts.strip():
        hosts = _smart_host_list(topology.smart_hosts)
        trace.note(
            "next hop",
            f"The source virtual server forwards to smart host(s) {'; '.join(hosts)}.",
        )
        return trace.route(
            "smart_host",
            f"Sent to the virtual server's smart host(s) {'; '.join(hosts)}.",
            next_hops=hosts,
        )
    trace.note("next hop", "The source virtual server has no smart host: DNS MX lookup.")
    return trace.route(
        "dns",
        f"Sent directly to the DNS MX of {domain}.",
        next_hops=(f"DNS MX of {domain}",),
    )


def _smart_host_list(value: str) -> tuple[str, ...]:
    try:
        return tuple(str(host) for host in parse_smart_hosts(value))
    except ValidationError:
        # Stored values are validated on save; keep an odd legacy value as typed rather than
        # failing to route.
        return tuple(part for part in value.replace(",", ";").split(";") if part.strip())


def _apply_restrictions(
    candidates: list[_Candidate],
    sender: str,
    null_sender: bool,
    system: bool,
    message: MessageFacts,
    trace: _Trace,
) -> list[_Candidate] | Route:
    allowed: list[_Candidate] = []
    delivery_refusals: list[str] = []
    content_refusals: list[str] = []
    for candidate in candidates:
        if null_sender and candidate.connector.restrictions.enforced:
            # Restrictions name people; refusing the null sender would turn NDRs into double
            # bounces. System messages are governed by the content restriction instead.
            trace.note(
                "delivery restrictions",
                f"{candidate.label}: delivery restrictions do not apply to the null sender.",
            )
        refusal = _delivery_refusal(candidate.connector, sender, null_sender)
        if refusal:
            trace.note("delivery restrictions", f"{candidate.label} excluded: {refusal}")
            delivery_refusals.append(f"{candidate.label}: {refusal.rstrip('.')}")
            continue
        refusal = _content_refusal(candidate.connector.content, system, message)
        if refusal:
            trace.note("content restrictions", f"{candidate.label} excluded: {refusal}")
            content_refusals.append(f"{candidate.label}: {refusal.rstrip('.')}")
            continue
        allowed.append(candidate)
    if allowed:
        if len(allowed) == len(candidates):
            trace.note(
                "restrictions",
                f"No delivery or content restriction excludes this message from {_names(allowed)}.",
            )
        return allowed
    space = candidates[0].space.pattern
    trace.note(
        "restrictions",
        f"Every connector for '{space}' excludes this message; mail does not fall back to a "
        "less specific address space.",
    )
    if not content_refusals:
        # Only the sender is refused: a permission matter, answered at once like Exchange's
        # restricted-sender NDR.
        refusals = "; ".join(delivery_refusals)
        return trace.route(
            "reject",
            f"Delivery restrictions: {refusals}.",
            status=f"{DELIVERY_RESTRICTION_STATUS} Sender not allowed to send to "
            f"{trace.domain} (delivery restrictions of connector {refusals})",
        )
    # Excluded connectors count as non-existent: no route at all.
    return trace.route(
        "unreachable",
        f"No connector for '{space}' accepts this message: "
        f"{'; '.join(delivery_refusals + content_refusals)}.",
        queued_reason=UNREACHABLE_QUEUE,
        status=f"554 5.4.4 No route found to {trace.domain} (connector restrictions)",
    )


def _delivery_refusal(connector: ConnectorFacts, sender: str, null_sender: bool) -> str:
    rules = connector.restrictions
    if not rules.enforced or null_sender:
        return ""
    listed = next((p for p in rules.sender_exceptions if sender_pattern_matches(p, sender)), None)
    if rules.accept_by_default and listed is not None:
        return f"messages from everyone are accepted except {listed!r}, which matches <{sender}>."
    if not rules.accept_by_default and listed is None:
        return (
            f"messages from everyone are rejected except "
            f"{', '.join(repr(p) for p in rules.sender_exceptions) or 'nobody'}; "
            f"<{sender}> matches none."
        )
    return ""


def _content_refusal(rules: ContentRestrictions, system: bool, message: MessageFacts) -> str:
    priority_allowed = {
        "high": rules.allow_priority_high,
        "normal": rules.allow_priority_normal,
        "low": rules.allow_priority_low,
    }.get(message.priority, rules.allow_priority_normal)
    if not priority_allowed:
        return f"priority {message.priority} is not allowed."
    if system and not rules.allow_system_messages:
        return "system messages (DSNs/NDRs) are not allowed."
    if not system and not rules.allow_non_system_messages:
        return "non-system messages are not allowed."
    limit = rules.max_message_size_kb
    if limit is not None and message.size > limit * 1024:
        return f"the message ({message.size} bytes) is over the {limit} KB size limit."
    return ""


def _down_reason(connector: ConnectorFacts) -> str:
    if connector.down:
        detail = f" ({connector.down_reason})" if connector.down_reason else ""
        return f"marked down after connection failures{detail}"
    if connector.bridgeheads and not any(b.server_up for b in connector.bridgeheads):
        return "the servers of all its bridgeheads are down"
    return ""


def _choose(
    candidates: list[_Candidate],
    domain: str,
    message: MessageFacts,
    topology: Topology,
    trace: _Trace,
) -> Route:
    up: list[_Candidate] = []
    down: list[_Candidate] = []
    for candidate in candidates:
        reason = _down_reason(candidate.connector)
        if reason:
            trace.note("availability", f"{candidate.label} is down: {reason}.")
            down.append(candidate)
        else:
            up.append(candidate)
    pool = up or candidates
    lowest = min(c.cost for c in pool)
    group = sorted(
        (c for c in pool if c.cost == lowest), key=lambda c: (c.connector.name, c.connector.id)
    )
    index = message.spread_key % len(group)
    chosen = group[index]

    costs = ", ".join(f"{c.label} {c.cost}" for c in sorted(candidates, key=lambda c: c.cost))
    text = f"Costs: {costs}. Lowest cost"
    text += " among connectors that are up" if up and len(up) < len(candidates) else ""
    text += f": {lowest} ({_names(group)})."
    if len(group) > 1:
        text += (
            f" Equal cost spreads the load: spread key {message.spread_key} mod {len(group)} "
            f"= {index} chooses {chosen.label}."
        )
    trace.note("cost", text)

    queued_reason = ""
    if not up:
        queued_reason = (
            f"Every usable connector for '{chosen.space.pattern}' is down; mail queues on "
            f"{chosen.label} until it is back (no fallback to a less specific space)."
        )
        trace.note("failover", queued_reason)
    else:
        cheaper_down = [c for c in down if c.cost <= lowest]
        if cheaper_down:
            trace.note(
                "failover",
                f"{_names(cheaper_down)} down: failing over to {chosen.label} (cost {lowest}).",
            )

    bridgehead = _bridgehead(chosen.connector, message.spread_key // len(group), topology, trace)
    next_hops = _next_hops(chosen.connector, domain, trace)
    where = "queued on" if queued_reason else "sent through"
    return trace.route(
        "connector",
        f"{where.capitalize()} connector '{chosen.connector.name}' "
        f"(address space '{chosen.space.pattern}', cost {chosen.cost}).",
        connector=chosen.connector,
        address_space=chosen.space,
        bridgehead=bridgehead,
        next_hops=next_hops,
        queued_reason=queued_reason,
    )


def _bridgehead(
    connector: ConnectorFacts, spread: int, topology: Topology, trace: _Trace
) -> BridgeheadFacts | None:
    if not connector.bridgeheads:
        if topology.source_virtual_server_id is None or topology.source_server_id is None:
            trace.note("bridgehead", f"'{connector.name}' lists no bridgehead.")
            return None
        # Like Exchange's "any local server can send mail over this connector".
        source = BridgeheadFacts(topology.source_virtual_server_id, topology.source_server_id)
        trace.note(
            "bridgehead",
            f"'{connector.name}' lists no bridgehead: the source {source.label} sends.",
        )
        return source
    up = sorted(
        (b for b in connector.bridgeheads if b.server_up), key=lambda b: b.virtual_server_id
    )
    skipped = [b for b in connector.bridgeheads if not b.server_up]
    skipped_text = (
        f" Skipped (server down): {', '.join(b.label for b in skipped)}." if skipped else ""
    )
    if not up:
        trace.note("bridgehead", f"No bridgehead of '{connector.name}' is up.{skipped_text}")
        return None
    # The quotient of the key, not the key itself, so the bridgehead choice does not move in
    # lock-step with the connector choice and every pair gets used.
    chosen = up[spread % len(up)]
    how = f" (spread over {len(up)} that are up)" if len(up) > 1 else ""
    trace.note("bridgehead", f"Bridgehead {chosen.label}{how}.{skipped_text}")
    return chosen


def _next_hops(connector: ConnectorFacts, domain: str, trace: _Trace) -> tuple[str, ...]:
    if connector.use_dns:
        trace.note("next hop", f"'{connector.name}' routes by DNS: MX of {domain}.")
    elif connector.smart_hosts.strip():
        hosts = _smart_host_list(connector.smart_hosts)
        trace.note("next hop", f"'{connector.name}' forwards to smart host(s) {'; '.join(hosts)}.")
        return hosts
    else:
        # The model refuses this combination on save; a snapshot may still carry it.
        trace.note(
            "next hop", f"'{connector.name}' lists no smart host: routing by DNS, MX of {domain}."
        )
    return (f"DNS MX of {domain}",)
