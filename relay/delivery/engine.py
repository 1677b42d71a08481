"""Outbound delivery of one link queue: claim due entries, open one connection to the next
hop, send them, record what every recipient's reply means.

``deliver_queue`` is what the Celery task ``relay.tasks.deliver`` runs, and ``sweep`` what
the beat task ``relay.tasks.sweep`` runs; both are plain functions that take the clock
(``now``) so tests decide what time it is. What happens in ``deliver_queue``:

1. Nothing leaves a frozen queue, nothing leaves while the organization's outbound mail is
   disabled, nothing leaves a connector's queue outside its schedule (oversize messages by
   the oversize schedule) or while it waits for the remote side (ETRN).
2. The oldest due entries are claimed with a lease (``SMTPADMIN_DELIVERY_LEASE_SECONDS``),
   ``CHUNK`` at a time: the first claim decides the virtual server whose settings and
   connection limits the connection follows (over its limits: ``BUSY``, nothing sent), the
   next claims come while the connection is open, up to its "messages per connection".
   When the queue is empty the connection waits for mail queued to it meanwhile, up to
   ``SMTPADMIN_DELIVERY_CONNECTION_CACHE_SECONDS`` (``relay.delivery.idle``), then says QUIT.
   Each claim is one statement that also writes when the attempt began (``last_attempt_at``).
   Entries past their expiration time expire instead. A first claim that found a full chunk
   asks for another task, so a long queue gets connections in parallel.
3. A connector queue whose connector is down (or disabled, deleted, now forwards elsewhere,
   or whose content limits no longer take the message) routes its recipients again: failover
   to the next-cost connector of the same address space, or they stay when there is none.
4. The hop plan (smart hosts in order, else MX through the virtual server's DNS servers)
   and the outbound options (the connector's security, else the virtual server's) go to
   ``send_stream``; every recipient is delivered (2xx), deferred to the next retry time of
   the virtual server's intervals, or failed with a DSN (``relay.queue.rules``), recorded
   in a transaction of its own as soon as its message's replies are in: a worker that dies
   mid-connection leaves only the message in flight to be sent again.
5. When no hop could be reached at all, a smart-host connector is marked down for
   ``CONNECTOR_DOWN_FOR`` and the mail waiting in that queue is routed again (failover);
   new routing decisions return to the connector once that time has passed, or as soon as
   a connection through it works again (mail with nowhere else to go is still tried).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from connectors.models import Connector
from relay.delivery.claims import (
    CHUNK,
    claim,
    claim_more,
    claim_opening,
    has_due_work,
    lease_owner,
    lease_seconds,
    outbound_disabled,
    release,
    sendable,
)
from relay.delivery.idle import IdleWait, cache_seconds
from relay.delivery.reroute import connector_problem, content_refusal, next_hop_changed, reroute
from relay.delivery.results import Handoff, Tally, Verdict, record
from relay.delivery.sweeper import expire, sweep
from relay.delivery.transports import Batch, Reach, Sent, SmtpTransport, Transport
from relay.queue import dispatch, leases, outcomes
from relay.queue.models import UNREACHABLE_KEY, LinkQueue, QueueEntry, Recipient, retry_delay
from relay.queue.outcomes import retry_minutes
from relay.queue.rules import load_rules
from relay.queue.tracking import TrackingSettings

__all__ = [
    "CONNECTOR_DOWN_FOR",
    "Delivered",
    "deliver_claimed",
    "deliver_queue",
    "has_due_work",
    "mark_connector_down",
    "sweep",
]

# What deliver_queue returns.
SENT = "sent"  # every recipient tried was delivered
SOFT_FAIL = "soft_fail"  # some wait for a retry
HARD_FAIL = "hard_fail"  # none wait, some failed
NOTHING = "nothing"  # nothing due (or another worker got there first)
SCHEDULED = "scheduled"  # outside the connector's schedule
FROZEN = "frozen"
DISABLED = "disabled"  # outbound mail disabled for the organization
REMOTE = "remote"  # the connector holds its mail for remote triggered delivery (ETRN)
BUSY = "busy"  # the virtual server's outbound connection limits are reached
REROUTED = "rerouted"  # the mail claimed went to other queues; nothing was sent from here

# How long a connector stays marked down after a connection-level failure: routing fails
# over meanwhile, and afterwards new mail goes back to it. Ten minutes, like Exchange's
# damping of link state changes, and the default first retry interval.
CONNECTOR_DOWN_FOR = timedelta(minutes=10)
# Only connectors that forward to smart hosts are marked down: their hosts are the
# connector. A connector routing by DNS reaches a different host for every domain, so one
# domain's dead MX says nothing about the others (its queue just retries).
MARK_DNS_CONNECTORS_DOWN = False
# Entries routed again at once when a connector goes down; a longer queue's other entries
# fail over at their retry time. Keeps the delivering task short.
FAILOVER_AT_ONCE = 1000


def deliver_queue(queue_pk: int, worker: str, *, now: datetime | None = None) -> str:
    """One connection's worth of due mail of one link queue; see the module docstring.
    ``worker`` names the caller in leases ("host/pid"). ``now`` holds the clock (tests);
    without it every claim and record reads the time, so mail queued while the connection
    is open goes out on it."""
    clock: Callable[[], datetime] = (lambda: now) if now is not None else timezone.now
    at = clock()
    asynchronous_commits()
    queue = LinkQueue.objects.select_related("connector").filter(pk=queue_pk).first()
    if queue is None or queue.kind == LinkQueue.Kind.LOCAL:
        return NOTHING  # local delivery is the relay worker's
    if queue.frozen:
        return FROZEN
    if outbound_disabled():
        return DISABLED
    owner = lease_owner(worker)
    if queue.kind == LinkQueue.Kind.SYSTEM:
        return _route_again(queue, owner, at) if queue.key == UNREACHABLE_KEY else NOTHING
    connector = queue.connector
    if connector is not None and connector.queue_for_remote_delivery:
        return REMOTE
    sizes = sendable(queue, at)
    if sizes is None:
        return SCHEDULED
    opening = claim_opening(queue, owner, at, sizes)
    if opening is None:
        return BUSY
    if not opening.entries:
        return SCHEDULED if sizes and has_due_work(queue.pk, at) else NOTHING
    if opening.full:
        # A long queue: another connection may take its share in parallel (up to the
        # connection limits, which that task's claim checks; that task may ask for another).
        dispatch.wake([queue.pk], at_once=True)
    kept = _usable(queue, connector, opening.entries, owner, at)
    entries, expired = kept
    if not entries:
        return REROUTED if not expired else HARD_FAIL
    carried = len(opening.entries)
    # Mail of this queue queued while the connection is open goes out on it (a fixed clock,
    # in tests, cannot see time pass: no waiting then).
    idle = IdleWait(queue.pk, cache_seconds() if now is None else 0.0)

    drained = not opening.full  # the last claim left nothing due
    vs = opening.entries[0].virtual_server

    def more(wait: bool) -> list[QueueEntry]:
        """The next chunk for the open connection, up to its "messages per connection";
        with ``wait`` (nothing left to send), waiting for mail of the queue up to the
        connection cache time."""
        nonlocal carried, drained
        while carried < opening.limit:
            if drained and not wait and idle.quiet():
                return []  # nothing came since the queue was left empty
            moment = clock()
            room = min(CHUNK, opening.limit - carried)

            def take(room: int = room) -> list[QueueEntry]:
                return claim_more(queue, owner, clock(), sizes, opening.vs_id, room, vs)

            found = idle.wait(take) if wait else take()
            drained = len(found) < room
            if not found:
                return []
            carried += len(found)
            usable, _ = _usable(queue, connector, found, owner, moment)
            if usable:
                return usable
        return []

    try:
        return _send(queue, connector, entries, owner, clock, more)
    finally:
        idle.close()


def asynchronous_commits() -> None:
    """This process's transactions on PostgreSQL commit without waiting for the WAL flush.
    Each message's outcome is a transaction of its own, and waiting for a disk flush per
    message would be most of delivery's time. What it risks is only a crash of the database
    server itself (not of a worker) within a fraction of a second: the outcomes of that
    moment roll back, whole (a failure with its DSN, a move with its rows), and the mail is
    sent again: a duplicate, never a loss. Intake, which accepts mail, commits as before."""
    if connection.vendor != "postgresql":
        return
    connection.ensure_connection()
    raw = connection.connection
    if getattr(raw, "smtpadmin_async_commit", False):
        return  # set for this connection already: a session setting lasts as long as it does
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    # Inside a transaction the setting would end with a rollback: only a committed one counts.
    raw.smtpadmin_async_commit = not connection.in_atomic_block


def _usable(
    queue: LinkQueue,
    connector: Connector | None,
    entries: list[QueueEntry],
    owner: str,
    now: datetime,
) -> tuple[list[QueueEntry], bool]:
    """The claimed entries to send from here: expired ones expire, and a connector queue's
    entries that must go elsewhere are routed again. Also whether any expired."""
    expired = [e for e in entries if e.expires_at <= now]
    if expired:
        expire(expired, owner, now)
        entries = [e for e in entries if e.expires_at > now]
    if entries and queue.kind == LinkQueue.Kind.CONNECTOR:
        entries = _failover(queue, connector, entries, owner, now)
    return entries, bool(expired)


def _failover(
    queue: LinkQueue,
    connector: Connector | None,
    entries: list[QueueEntry],
    owner: str,
    now: datetime,
) -> list[QueueEntry]:
    """The entries that stay to be sent from here; the others were routed elsewhere."""
    problem = connector_problem(connector, now)
    if not problem and connector is not None:
        problem = next_hop_changed(queue, connector)
    refused: dict[int, str] = {}
    for entry in entries:
        why = problem or (content_refusal(connector, entry.message) if connector else "")
        if why:
            refused[entry.pk] = why
    if not refused:
        return entries
    moving = [e for e in entries if e.pk in refused]
    kept: list[QueueEntry] = []
    for reason in dict.fromkeys(refused.values()):
        batch = [e for e in moving if refused[e.pk] == reason]
        outcome = reroute(batch, owner, now, reason)
        kept += outcome.kept
        _enqueue(outcome.queues)
    # Still routed here (every connector of the address space is down): try anyway, it is
    # their retry time, and a connector is only marked down for a while.
    return [e for e in entries if e.pk not in refused or e in kept]


def _send(
    queue: LinkQueue,
    connector: Connector | None,
    entries: list[QueueEntry],
    owner: str,
    clock: Callable[[], datetime],
    more: Callable[[bool], list[QueueEntry]],
) -> str:
    transport = SmtpTransport(queue, connector, entries[0].virtual_server, load_rules())
    done = deliver_claimed(
        transport,
        queue,
        entries,
        owner,
        clock(),
        seconds=lease_seconds(),
        more=more,
        clock=clock,
        mark_attempts=False,
    )
    if (
        done.sent.reach is not Reach.NOT_TRIED
        and connector is not None
        and (MARK_DNS_CONNECTORS_DOWN or _forwards_to_smart_hosts(queue))
    ):
        _link_state(queue, connector, done.sent, owner, clock())
    if done.tally.deferred:
        return SOFT_FAIL
    return HARD_FAIL if done.tally.failed else SENT


# --- the one dequeuer of every transport ---------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    sent: Sent
    tally: Tally


def open_recipients(entries: Sequence[QueueEntry]) -> dict[int, tuple[Recipient, ...]]:
    """The recipients of these entries still waiting for delivery, by entry pk."""
    found: dict[int, list[Recipient]] = {entry.pk: [] for entry in entries}
    for recipient in Recipient.objects.filter(
        entry__in=list(entries), state__in=Recipient.OPEN_STATES
    ).order_by("pk"):
        found.setdefault(recipient.entry_id or 0, []).append(recipient)
    return {pk: tuple(recipients) for pk, recipients in found.items()}


def renewer(
    pks: Sequence[int] | Callable[[], Sequence[int]], owner: str, seconds: float
) -> Callable[[], None]:
    """What a transport calls between slow steps: extends the claim on ``pks`` (or on what
    that function says is held now; those ``owner`` still holds: a lease that ran out is not
    taken back), at most four times per lease length, so a transport may call it after every
    message."""
    last = time.monotonic()
    held = pks if callable(pks) else lambda: pks

    def renew() -> None:
        nonlocal last
        if time.monotonic() - last < seconds / 4:
            return
        last = time.monotonic()
        leases.renew(held(), owner, seconds=seconds)

    return renew


def deliver_claimed(
    transport: Transport,
    queue: LinkQueue,
    entries: Sequence[QueueEntry],
    owner: str,
    now: datetime,
    *,
    seconds: float,
    more: Callable[[bool], list[QueueEntry]] | None = None,
    clock: Callable[[], datetime] | None = None,
    mark_attempts: bool = True,
) -> Delivered:
    """One attempt at entries ``owner`` claimed (for ``seconds``, renewed while it lasts),
    whatever the transport: their open recipients go to ``transport``, with more claimed
    entries from ``more`` when the transport asks for them. An entry the transport reports
    is recorded at once, in its own transaction (with its failure DSN), while the transport
    goes on; what it returns at the end is recorded then, while the claim still holds. The
    times recorded are ``clock``'s (``now`` without one). ``mark_attempts``: an attempt's
    beginning is written before the transport starts (``leases.begin_attempt``), for a
    transport that looks for what a dead attempt left behind; SMTP cannot look (the next
    hop has what it has), and the outcome writes the attempt's time anyway."""
    read = clock or (lambda: now)
    tracking = TrackingSettings.load()
    handed: dict[int, QueueEntry] = {}  # claimed, handed to the transport, not recorded
    tally = Tally()

    def part(found: Sequence[QueueEntry]) -> Batch:
        handed.update((e.pk, e) for e in found)
        recipients = open_recipients(found)
        if mark_attempts:
            first = leases.begin_attempt(found, owner, read())
        else:
            first = frozenset(e.pk for e in found if e.last_attempt_at is None)
        return Batch(tuple(found), recipients, first, renew, report, next_part)

    def next_part(wait: bool) -> Batch | None:
        found = more(wait) if more is not None else []
        return part(found) if found else None

    def report(pk: int, verdicts: Sequence[Verdict], handoff: Handoff) -> None:
        entry = handed.pop(pk)
        tally.add(
            record(
                queue,
                [entry],
                {pk: verdicts},
                owner=owner,
                handoff=handoff,
                now=read(),
                tracking=tracking,
                touch_queue=False,
            )
        )

    renew = renewer(lambda: list(handed), owner, seconds)
    sent = transport.send(part(entries))
    rest = list(handed.values())
    if not rest:
        outcomes.touch(queue, sent.handoff, read())
        return Delivered(sent, tally)
    verdicts = {e.pk: sent.verdicts.get(e.pk, ()) for e in rest}
    tally.add(
        record(
            queue, rest, verdicts, owner=owner, handoff=sent.handoff, now=read(), tracking=tracking
        )
    )
    return Delivered(sent, tally)


def _forwards_to_smart_hosts(queue: LinkQueue) -> bool:
    return bool(queue.smart_hosts.strip())


def _link_state(
    queue: LinkQueue, connector: Connector, sent: Sent, owner: str, now: datetime
) -> None:
    """A connection-level failure marks the connector down; when it was up until now, the
    mail waiting in the queue fails over (when it was down already, that happened then). A
    connection that worked clears the mark at once (and an old one that ran out)."""
    was_down = connector.down_until is not None and connector.down_until > now
    if sent.reach is Reach.UNREACHABLE:
        mark_connector_down(connector, now, sent.handoff.queue_error)
        if not was_down:
            _reroute_queue(queue, owner, now, connector_problem(connector, now))
    elif sent.reach is Reach.REACHED and (connector.down_until or connector.down_reason):
        Connector.objects.filter(pk=connector.pk).update(down_until=None, down_reason="")
        connector.down_until, connector.down_reason = None, ""


def mark_connector_down(connector: Connector, now: datetime, reason: str) -> None:
    """Routing avoids the connector until ``now + CONNECTOR_DOWN_FOR`` (a runtime field:
    ``update()``, never a configuration save, never audited)."""
    until = now + CONNECTOR_DOWN_FOR
    reason = (reason or "connection failed")[:300]
    Connector.objects.filter(pk=connector.pk).update(down_until=until, down_reason=reason)
    connector.down_until, connector.down_reason = until, reason


def _reroute_queue(queue: LinkQueue, owner: str, now: datetime, reason: str) -> None:
    """Fail over the mail waiting in a queue whose connector just went down: every entry no
    other worker is delivering right now, due or waiting for its retry (up to
    ``FAILOVER_AT_ONCE``; the rest fails over when it is due, in ``_failover``)."""
    pks = list(
        QueueEntry.objects.filter(queue=queue, state__in=QueueEntry.DUE_STATES)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:FAILOVER_AT_ONCE]
    )
    entries = claim(pks, owner, now, due=False)
    outcome = reroute(entries, owner, now, reason)
    release(outcome.kept, owner)
    _enqueue(outcome.queues)


def _route_again(queue: LinkQueue, owner: str, now: datetime) -> str:
    """Mail in "Final destination currently unreachable": route it again; what still has no
    route waits for the next retry time (it fails with 5.4.4 when it expires)."""
    pks = list(
        QueueEntry.objects.due(now)
        .filter(queue=queue)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:100]
    )
    entries = claim(pks, owner, now)
    if not entries:
        return NOTHING
    expired = [e for e in entries if e.expires_at <= now]
    expire(expired, owner, now)
    outcome = reroute([e for e in entries if e.expires_at > now], owner, now, "routing again")
    _enqueue(outcome.queues)
    for entry in outcome.kept:
        attempts = entry.attempts + 1
        delay = retry_delay(attempts, retry_minutes(entry.virtual_server))
        entry.leased_to(owner).update(
            state=QueueEntry.State.RETRY,
            attempts=attempts,
            last_attempt_at=now,
            next_attempt_at=now + delay,
            lease_owner="",
            lease_until=None,
        )
    return SOFT_FAIL if outcome.kept else REROUTED


def _enqueue(queue_pks: set[int]) -> None:
    """Deliver the queues that received mail, once that is committed."""
    dispatch.wake(queue_pks)
