"""From one SMTP connection's outcome to verdicts, and from verdicts to rows.

``judge`` is pure (the batch result, the plan and the reply rules in; a verdict per
recipient out). ``record`` writes any transport's verdicts through the queue's one
``relay.queue.outcomes.record`` and queues the failure DSNs it asks for in the same
transaction (DSNs are this stage's: they are mail, built and queued through intake).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from django.db import transaction

from relay.delivery.client import BatchResult, RecipientResult
from relay.delivery.dsn import FAILURE, submit_dsn
from relay.delivery.nexthop import HopPlan
from relay.queue import outcomes
from relay.queue.models import LinkQueue, QueueEntry, Recipient
from relay.queue.outcomes import DEFERRED, DELIVERED, FAILED, Handoff, Outcome, Tally, Verdict
from relay.queue.rules import Rule, classify, enhanced_status
from relay.queue.tracking import TrackingSettings

__all__ = [
    "DEFERRED",
    "DELIVERED",
    "FAILED",
    "Handoff",
    "Outcome",
    "Tally",
    "Verdict",
    "judge",
    "record",
    "send_dsn",
]

log = logging.getLogger("relay.delivery")

NOT_SENT = "4.4.2 The connection ended before this message was sent"
NO_REPLY = "4.4.2 The next hop gave no reply for this recipient"


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
) -> Tally:
    """Write the verdicts (``relay.queue.outcomes.record``, which says what ``tracking`` and
    ``touch_queue`` are for) and, in the same transaction, a failure DSN for every message
    with failed recipients. A DSN that cannot be made now does not undo the delivery: the
    sweeper tries it again."""
    failing = any(v.outcome == FAILED for found in verdicts.values() for v in found)
    # Without a DSN to go with it, the record's own transaction (or none, for the one
    # statement a delivered message costs on PostgreSQL) is all it takes.
    with transaction.atomic() if failing else contextlib.nullcontext():
        recorded = outcomes.record(
            queue,
            entries,
            verdicts,
            owner=owner,
            handoff=handoff,
            now=now,
            tracking=tracking,
            touch_queue=touch_queue,
        )
        for wanted in recorded.dsns:
            send_dsn(
                wanted.message_pk,
                list(wanted.recipient_pks),
                FAILURE,
                now,
                remote_mta=wanted.remote_mta,
            )
    return recorded.tally


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
