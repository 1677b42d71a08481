"""The one place an attempt's outcome becomes rows, whichever transport made it (an SMTP
connection, a Maildir): every recipient delivered, deferred or failed, every entry done or
waiting for its retry time (the virtual server's intervals), the queue's last attempt,
tracking events, and which failures their sender must hear of.

The failure DSN itself is the delivery stage's to build and queue: ``record`` returns it as
wanted (``Recorded.dsns``), and the caller submits it in the same transaction. A failed
recipient whose DSN was never made keeps ``dsn_sent_at`` empty, which is how the sweeper
finds it later: the wanted DSN is on record either way.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models.sql import InsertQuery

from relay.metrics import count_outcomes
from relay.queue.models import LinkQueue, QueueEntry, Recipient, TrackingEvent, retry_delay
from relay.queue.tracking import TrackingSettings, message_event
from servers.models import VirtualServer

# Without a virtual server (it was deleted): the installation's default intervals.
DEFAULT_RETRY_MINUTES = (10, 10, 10, 15)


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"  # waits for the retry
    FAILED = "failed"  # for good: its sender gets a DSN


DELIVERED = Outcome.DELIVERED
DEFERRED = Outcome.DEFERRED
FAILED = Outcome.FAILED

_KINDS = {
    DELIVERED: TrackingEvent.Kind.DELIVERED,
    DEFERRED: TrackingEvent.Kind.DEFERRED,
    FAILED: TrackingEvent.Kind.FAILED,
}


@dataclass(frozen=True)
class Verdict:
    """What became of one recipient in one attempt."""

    recipient: Recipient
    outcome: Outcome
    reply: str  # the remote reply ("550 5.1.1 No such user") or our reason ("4.4.1 ...")
    status: str  # enhanced status code, "5.1.1"
    detail: str = ""  # for tracking: where it went (the Maildir file); else the attempt number


@dataclass(frozen=True)
class Handoff:
    """What one attempt says beside its verdicts, for the queue and for tracking."""

    hop: str  # the next hop it reached ("mx1.example.org [192.0.2.1]:25", "local delivery")
    queue_error: str = ""  # why no connection worked ("" when one did)
    # A "transferred" event per message handed to a next hop (SMTP); a Maildir has none.
    transferred: bool = True


@dataclass
class Tally:
    delivered: int = 0
    deferred: int = 0
    failed: int = 0

    def add(self, other: Tally) -> None:
        self.delivered += other.delivered
        self.deferred += other.deferred
        self.failed += other.failed

    def count(self, verdict: Verdict) -> None:
        if verdict.outcome == DELIVERED:
            self.delivered += 1
        elif verdict.outcome == DEFERRED:
            self.deferred += 1
        else:
            self.failed += 1


@dataclass(frozen=True)
class DsnWanted:
    """A failure DSN for these recipients of this message (``remote_mta``: the hop that
    answered, "" for local delivery)."""

    message_pk: int
    recipient_pks: tuple[int, ...]
    remote_mta: str


@dataclass(frozen=True)
class Recorded:
    tally: Tally
    dsns: tuple[DsnWanted, ...] = field(default=())


def retry_minutes(vs: VirtualServer | None) -> tuple[int, int, int, int]:
    """The first, second, third and subsequent retry intervals that apply."""
    if vs is None:
        return DEFAULT_RETRY_MINUTES
    return (
        vs.retry_first_minutes,
        vs.retry_second_minutes,
        vs.retry_third_minutes,
        vs.retry_subsequent_minutes,
    )


def server_name(vs: VirtualServer | None) -> str:
    """The server a tracking event is written for: the one whose virtual server delivers."""
    if vs is not None and vs.server_id:
        return vs.server.name
    return str(getattr(settings, "SMTPADMIN_SERVER_NAME", ""))


def delivering_server(entry: QueueEntry) -> str:
    """The server that delivers ``entry``: a local queue's own server (whose drop directory
    it is), else the one of the entry's virtual server."""
    queue = entry.queue
    if queue.kind == LinkQueue.Kind.LOCAL and queue.server is not None:
        return queue.server.name
    return server_name(entry.virtual_server)


def entry_fields(entry: QueueEntry, judged: Sequence[Verdict], now: datetime) -> dict[str, object]:
    """The entry after an attempt: done, or (some recipient waits) in Retry until the next
    retry time of its virtual server's intervals; its lease given up. Pure."""
    attempts = entry.attempts + 1
    fields: dict[str, object] = {
        "attempts": attempts,
        "last_attempt_at": now,
        "lease_owner": "",
        "lease_until": None,
    }
    waiting = [v for v in judged if v.outcome == DEFERRED]
    shown = waiting or [v for v in judged if v.outcome == FAILED] or list(judged)
    if shown:
        fields["last_response"] = shown[0].reply
    if waiting:
        delay = retry_delay(attempts, retry_minutes(entry.virtual_server))
        fields.update(state=QueueEntry.State.RETRY, next_attempt_at=now + delay)
    else:
        fields.update(state=QueueEntry.State.DONE, completed_at=now)
    return fields


def events(
    entry: QueueEntry, judged: Sequence[Verdict], handoff: Handoff, now: datetime
) -> list[TrackingEvent]:
    """Tracking of one entry's attempt: "transferred" for what a next hop took (when the
    transport hands mail on), then one event per recipient."""
    message = entry.message
    queue = entry.queue
    vs = entry.virtual_server
    common: dict[str, Any] = {
        "at": now,
        "server_name": delivering_server(entry),
        "virtual_server": vs,
        "virtual_server_name": vs.name if vs is not None else "",
        "queue_name": queue.name,
        "connector_name": queue.connector.name if queue.connector else "",
        "next_hop": handoff.hop,
    }
    found: list[TrackingEvent] = []
    accepted = [v for v in judged if v.outcome == DELIVERED]
    if accepted and handoff.transferred:
        found.append(
            message_event(
                message,
                TrackingEvent.Kind.TRANSFERRED,
                response=accepted[0].reply,
                size=message.size,
                detail=f"{len(accepted)} of {len(judged)} recipient(s) accepted by {handoff.hop}",
                **common,
            )
        )
    found += [
        message_event(
            message,
            _KINDS[v.outcome],
            recipient=v.recipient.address,
            response=v.reply,
            detail=v.detail or f"attempt {entry.attempts + 1}",
            **common,
        )
        for v in judged
    ]
    return found


def _apply(verdict: Verdict, now: datetime) -> Recipient:
    recipient = verdict.recipient
    recipient.status = verdict.status
    recipient.last_response = verdict.reply
    if verdict.outcome == DEFERRED:
        recipient.state = Recipient.State.DEFERRED
    else:
        recipient.state = (
            Recipient.State.DELIVERED if verdict.outcome == DELIVERED else Recipient.State.FAILED
        )
        recipient.completed_at = now
    return recipient


def record(
    queue: LinkQueue,
    entries: Sequence[QueueEntry],
    verdicts: Mapping[int, Sequence[Verdict]],
    *,
    owner: str,
    handoff: Handoff,
    now: datetime,
    tracking: TrackingSettings | None = None,
    touch_queue: bool = True,
) -> Recorded:
    """Write one attempt's verdicts (by entry pk) in one transaction (the caller's when
    there is one, so a DSN it submits commits with the failure it reports).

    An entry ``owner`` still holds: every recipient that is still open gets its verdict, and
    so does one that ended otherwise meanwhile (an administrator deleted it) but was in fact
    delivered; the entry is done or retries. An entry whose lease ran out (and may be another
    attempt's now): only recipients still open, for what this attempt found out is true and
    nobody recorded it; the entry itself is its successor's, and a recipient the successor
    recorded is not recorded twice.

    A caller that records message by message passes the organization's ``tracking``
    settings it read once, and ``touch_queue=False``: the queue's last attempt is then its
    own to write, once per connection (``touch``)."""
    tracking = tracking or TrackingSettings.load()
    if len(entries) == 1 and connection.vendor == "postgresql":
        fast = _delivered_in_one_statement(
            entries[0], verdicts.get(entries[0].pk, ()), owner, handoff, now, tracking
        )
        if fast is not None:
            if touch_queue:
                touch(queue, handoff, now)
            count_outcomes(queue, entries, verdicts, fast.tally, now)
            return fast
    tally = Tally()
    # All or nothing, in the caller's transaction when there is one (no savepoint of its own:
    # one round trip less per message).
    with transaction.atomic(savepoint=False):
        # Entries, then recipients: the order the administrator's actions lock them in, so
        # a deletion at the same moment waits for this or this for it, never both at once.
        # The UPDATE that finishes an entry is also how we learn that we still hold it.
        held = {
            entry.pk
            for entry in entries
            if entry.leased_to(owner).update(**entry_fields(entry, verdicts.get(entry.pk, ()), now))
        }
        judged = [(e, v) for e in entries for v in verdicts.get(e.pk, ())]
        kept = _recipients(judged, held, now)
        found: list[TrackingEvent] = []
        failed: dict[int, list[int]] = {}
        for entry in entries:
            ours = [v for v in verdicts.get(entry.pk, ()) if v.recipient.pk in kept]
            for verdict in ours:
                tally.count(verdict)
                if verdict.outcome == FAILED:
                    failed.setdefault(entry.message_id, []).append(verdict.recipient.pk)
            if tracking.enabled and ours:
                found += events(entry, ours, handoff, now)
        if touch_queue:
            touch(queue, handoff, now)
        if found:
            TrackingEvent.objects.bulk_create(found)
    dsns = tuple(
        DsnWanted(message_pk, tuple(pks), handoff.hop) for message_pk, pks in failed.items()
    )
    count_outcomes(queue, entries, verdicts, tally, now)
    return Recorded(tally, dsns)


def touch(queue: LinkQueue, handoff: Handoff, now: datetime) -> None:
    """The queue's last attempt and its error (what Queue Viewer shows)."""
    LinkQueue.objects.filter(pk=queue.pk).update(
        last_attempt_at=now, last_error=handoff.queue_error
    )


_RECIPIENT_FIELDS = ("state", "status", "last_response", "completed_at")


def _recipients(
    judged: Sequence[tuple[QueueEntry, Verdict]], held: set[int], now: datetime
) -> set[int]:
    """Write the verdicts of the recipients that take them (still open, or delivered from an
    entry still held); returns their pks. One recipient (the common message) is one
    conditional UPDATE; more are read under a lock, then written in one statement."""
    if not judged:
        return set()
    if len(judged) == 1:
        entry, verdict = judged[0]
        rows = Recipient.objects.filter(pk=verdict.recipient.pk)
        if not (entry.pk in held and verdict.outcome == DELIVERED):
            rows = rows.filter(state__in=Recipient.OPEN_STATES)
        recipient = _apply(verdict, now)
        written = rows.update(**{name: getattr(recipient, name) for name in _RECIPIENT_FIELDS})
        return {recipient.pk} if written else set()
    still_open = set(
        Recipient.objects.select_for_update()
        .filter(pk__in=[v.recipient.pk for _, v in judged], state__in=Recipient.OPEN_STATES)
        .values_list("pk", flat=True)
    )
    changed = [
        _apply(v, now)
        for entry, v in judged
        if v.recipient.pk in still_open or (entry.pk in held and v.outcome == DELIVERED)
    ]
    if changed:
        Recipient.objects.bulk_update(changed, list(_RECIPIENT_FIELDS))
    return {recipient.pk for recipient in changed}


def _delivered_in_one_statement(
    entry: QueueEntry,
    judged: Sequence[Verdict],
    owner: str,
    handoff: Handoff,
    now: datetime,
    tracking: TrackingSettings,
) -> Recorded | None:
    """The common attempt, a message whose recipients were all delivered, as one statement
    on PostgreSQL (the entry, its recipients and the tracking rows, atomic without a
    transaction around it): what one delivered message costs is one round trip. None when
    the attempt is not such a one (the general path records it).

    The same rules as ``record``: the recipients are written when the entry is still held,
    else only those still open. The tracking rows are written with them; in the rare case of
    a lease that ran out meanwhile, the rows of recipients not written are taken out again."""
    if not judged or any(v.outcome != DELIVERED for v in judged):
        return None
    found = events(entry, judged, handoff, now) if tracking.enabled else []
    insert: tuple[str, Sequence[Any]] = ("", ())
    if found:
        query = InsertQuery(TrackingEvent)
        columns = [f for f in TrackingEvent._meta.concrete_fields if not f.primary_key]
        query.insert_values(columns, list[models.Model](found))
        compiled = query.get_compiler(connection=connection).as_sql()
        if len(compiled) != 1:
            return None
        insert = compiled[0]
    changes = entry_fields(entry, judged, now)
    assignments = ", ".join(f"{_column(QueueEntry, name)} = %s" for name in changes)
    rows = ", ".join(["(%s::bigint, %s::text, %s::text)"] * len(judged))
    recipient = _table(Recipient)
    opened = ", ".join(["%s"] * len(Recipient.OPEN_STATES))
    tracked = f", t AS ({insert[0]} RETURNING id)" if found else ""
    # Table and column names come from the models; every value is a parameter.
    sql = (
        f"WITH e AS (UPDATE {_table(QueueEntry)} SET {assignments} "  # noqa: S608
        f"WHERE id = %s AND lease_owner = %s RETURNING id), "
        f"r AS (UPDATE {recipient} SET state = %s, status = v.status, "
        f"last_response = v.reply, completed_at = %s "
        f"FROM (VALUES {rows}) AS v(id, status, reply) WHERE {recipient}.id = v.id "
        f"AND ({recipient}.state IN ({opened}) OR EXISTS (SELECT 1 FROM e)) "
        f"RETURNING {recipient}.id){tracked} "
        "SELECT (SELECT count(*) FROM e), ARRAY(SELECT id FROM r)"
        + (", ARRAY(SELECT id FROM t)" if found else "")
    )
    parameters: list[Any] = [*changes.values(), entry.pk, owner]
    parameters += [Recipient.State.DELIVERED.value, now]
    for verdict in judged:
        parameters += [verdict.recipient.pk, verdict.status, verdict.reply]
    parameters += [state.value for state in Recipient.OPEN_STATES]
    parameters += list(insert[1])
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        row = cursor.fetchone()
    assert row is not None
    written = set(row[1])
    kept = [v for v in judged if v.recipient.pk in written]
    for verdict in kept:
        _apply(verdict, now)
    if found and len(kept) < len(judged):
        # The lease ran out and another attempt recorded some: their rows are not ours.
        TrackingEvent.objects.filter(pk__in=row[2]).delete()
        if kept:
            TrackingEvent.objects.bulk_create(events(entry, kept, handoff, now))
    return Recorded(Tally(delivered=len(kept)))


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model: type[models.Model], name: str) -> str:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return connection.ops.quote_name(field.column or name)
