"""From one connection's outcome to rows: each recipient delivered, deferred or failed, each
entry done or waiting for its retry time, tracking events, and the failure DSNs.

``judge`` is pure (the batch result, the plan and the reply rules in; a verdict per
recipient out); ``record`` writes the verdicts in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from django.db import transaction

from relay.delivery.claims import server_name
from relay.delivery.client import BatchResult, RecipientResult
from relay.delivery.dsn import FAILURE, submit_dsn
from relay.delivery.nexthop import HopPlan
from relay.delivery.options import retry_minutes
from relay.queue.models import LinkQueue, QueueEntry, Recipient, TrackingEvent, retry_delay
from relay.queue.rules import Rule, classify, enhanced_status
from relay.queue.tracking import TrackingSettings, message_event

log = logging.getLogger("relay.delivery")

Outcome = Literal["delivered", "deferred", "failed"]
DELIVERED: Outcome = "delivered"
DEFERRED: Outcome = "deferred"
FAILED: Outcome = "failed"

NOT_SENT = "4.4.2 The connection ended before this message was sent"
NO_REPLY = "4.4.2 The next hop gave no reply for this recipient"


@dataclass(frozen=True)
class Verdict:
    recipient: Recipient
    outcome: Outcome
    reply: str  # the remote reply ("550 5.1.1 No such user") or our reason ("4.4.1 ...")
    status: str  # enhanced status code, "5.1.1"


@dataclass
class Tally:
    delivered: int = 0
    deferred: int = 0
    failed: int = 0
    failed_by_message: dict[int, list[int]] = field(default_factory=dict)

    def count(self, verdict: Verdict, message_pk: int) -> None:
        if verdict.outcome == DELIVERED:
            self.delivered += 1
        elif verdict.outcome == DEFERRED:
            self.deferred += 1
        else:
            self.failed += 1
            self.failed_by_message.setdefault(message_pk, []).append(verdict.recipient.pk)


def _status(reply: str, code: int) -> str:
    found = enhanced_status(reply)
    if found:
        return found
    return f"{code // 100}.0.0" if 200 <= code < 600 else "4.4.0"


def _ours(text: str, outcome: Outcome, recipient: Recipient) -> Verdict:
    """A verdict for a reason of ours (DNS, a lost connection), not a remote reply."""
    return Verdict(recipient, outcome, text, enhanced_status(text) or "4.4.0")


def _from_reply(recipient: Recipient, result: RecipientResult, rules: Sequence[Rule]) -> Verdict:
    reply = f"{result.code} {result.text}".strip() if result.code else result.text
    status = _status(result.text, result.code)
    if 200 <= result.code < 300:
        return Verdict(recipient, DELIVERED, reply, status)
    outcome = DEFERRED if classify(result.code, result.text, rules) == "retry" else FAILED
    return Verdict(recipient, outcome, reply, status)


def judge(
    entries: Sequence[QueueEntry],
    recipients: dict[int, list[Recipient]],
    plan: HopPlan,
    batch: BatchResult | None,
    rules: Sequence[Rule],
) -> dict[int, list[Verdict]]:
    """A verdict for every open recipient of every entry (by entry pk). Pure.

    No hop (``batch`` None): the plan's permanent error fails, its temporary one defers. No
    hop usable: the connection error defers everyone. Otherwise each recipient's reply: 2xx
    delivered, the rest as the reply rules say; a message or recipient the connection never
    reached waits for the retry."""
    verdicts: dict[int, list[Verdict]] = {}
    results = {result.key: result for result in batch.results} if batch else {}
    for entry in entries:
        found = results.get(entry.pk)
        judged = []
        for recipient in recipients.get(entry.pk, []):
            if batch is None:
                if plan.permanent_error:
                    judged.append(_ours(plan.permanent_error, FAILED, recipient))
                else:
                    judged.append(_ours(plan.temporary_error or NOT_SENT, DEFERRED, recipient))
            elif found is None:
                judged.append(_ours(batch.connection_error or NOT_SENT, DEFERRED, recipient))
            elif (result := found.recipients.get(recipient.address)) is None:
                judged.append(_ours(NO_REPLY, DEFERRED, recipient))
            else:
                judged.append(_from_reply(recipient, result, rules))
        verdicts[entry.pk] = judged
    return verdicts


def _entry_fields(entry: QueueEntry, judged: list[Verdict], now: datetime) -> dict[str, object]:
    attempts = entry.attempts + 1
    fields: dict[str, object] = {
        "attempts": attempts,
        "last_attempt_at": now,
        "lease_owner": "",
        "lease_until": None,
    }
    waiting = [v for v in judged if v.outcome == DEFERRED]
    shown = waiting or [v for v in judged if v.outcome == FAILED] or judged
    if shown:
        fields["last_response"] = shown[0].reply
    if waiting:
        delay = retry_delay(attempts, retry_minutes(entry.virtual_server))
        fields.update(state=QueueEntry.State.RETRY, next_attempt_at=now + delay)
    else:
        fields.update(state=QueueEntry.State.DONE, completed_at=now)
    return fields


def _events(
    entry: QueueEntry, judged: list[Verdict], hop: str, now: datetime
) -> list[TrackingEvent]:
    message = entry.message
    queue = entry.queue
    common: dict[str, Any] = {
        "at": now,
        "server_name": server_name(entry.virtual_server),
        "virtual_server": entry.virtual_server,
        "virtual_server_name": entry.virtual_server.name if entry.virtual_server else "",
        "queue_name": queue.name,
        "connector_name": queue.connector.name if queue.connector else "",
        "next_hop": hop,
    }
    kinds = {
        DELIVERED: TrackingEvent.Kind.DELIVERED,
        DEFERRED: TrackingEvent.Kind.DEFERRED,
        FAILED: TrackingEvent.Kind.FAILED,
    }
    events = []
    accepted = [v for v in judged if v.outcome == DELIVERED]
    if accepted:
        events.append(
            message_event(
                message,
                TrackingEvent.Kind.TRANSFERRED,
                response=accepted[0].reply,
                size=message.size,
                detail=f"{len(accepted)} of {len(judged)} recipient(s) accepted by {hop}",
                **common,
            )
        )
    events += [
        message_event(
            message,
            kinds[v.outcome],
            recipient=v.recipient.address,
            response=v.reply,
            detail=f"attempt {entry.attempts + 1}",
            **common,
        )
        for v in judged
    ]
    return events


def record(
    queue: LinkQueue,
    entries: Sequence[QueueEntry],
    verdicts: dict[int, list[Verdict]],
    *,
    owner: str,
    hop: str,
    queue_error: str,
    now: datetime,
) -> Tally:
    """Write the verdicts: recipients, entries (while ``owner`` still holds them), the queue's
    last attempt, tracking, and a failure DSN for every message with failed recipients. A
    DSN that cannot be made now does not undo the delivery: the sweeper tries it again."""
    tally = Tally()
    changed: list[Recipient] = []
    events: list[TrackingEvent] = []
    tracking = TrackingSettings.load()
    for entry in entries:
        for verdict in verdicts.get(entry.pk, []):
            recipient = verdict.recipient
            recipient.status = verdict.status
            recipient.last_response = verdict.reply
            if verdict.outcome == DEFERRED:
                recipient.state = Recipient.State.DEFERRED
            else:
                recipient.state = (
                    Recipient.State.DELIVERED
                    if verdict.outcome == DELIVERED
                    else Recipient.State.FAILED
                )
                recipient.completed_at = now
            changed.append(recipient)
            tally.count(verdict, entry.message_id)
        if tracking.enabled:
            events += _events(entry, verdicts.get(entry.pk, []), hop, now)
    with transaction.atomic():
        if changed:
            # The recipients' results are true even if our lease ran out meanwhile: the
            # remote side has answered. But a recipient an administrator deleted (or that
            # ended otherwise) during the attempt stays ended unless it was in fact delivered.
            still_open = set(
                Recipient.objects.select_for_update()
                .filter(pk__in=[r.pk for r in changed], state__in=Recipient.OPEN_STATES)
                .values_list("pk", flat=True)
            )
            changed = [
                r for r in changed if r.pk in still_open or r.state == Recipient.State.DELIVERED
            ]
            Recipient.objects.bulk_update(
                changed, ["state", "status", "last_response", "completed_at"]
            )
        for entry in entries:
            fields = _entry_fields(entry, verdicts.get(entry.pk, []), now)
            entry.leased_to(owner).update(**fields)
        LinkQueue.objects.filter(pk=queue.pk).update(last_attempt_at=now, last_error=queue_error)
        if events:
            TrackingEvent.objects.bulk_create(events)
        for message_pk, recipient_pks in tally.failed_by_message.items():
            send_dsn(message_pk, recipient_pks, FAILURE, now, remote_mta=hop)
    return tally


def send_dsn(
    message_pk: int, recipient_pks: list[int], kind: str, now: datetime, *, remote_mta: str = ""
) -> None:
    """``submit_dsn`` in a savepoint of the caller's transaction: the DSN commits with the
    failure it reports, and a DSN that cannot be made leaves the rest standing (the recipients
    keep ``dsn_sent_at`` empty, so the sweeper tries again)."""
    try:
        with transaction.atomic():
            submit_dsn(message_pk, recipient_pks, kind, now, remote_mta=remote_mta)
    except Exception:
        log.exception("Could not queue the %s DSN for message %s", kind, message_pk)
