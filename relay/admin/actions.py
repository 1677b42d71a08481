"""What an administrator does to queues and messages (Queue Viewer, Find Messages, the API):
freeze and unfreeze, force a connection, delete with or without an NDR. The console and the
API both come here.

Every action runs in one transaction over the rows it changes, locked first
(``select_for_update``): a delivery worker that claims an entry at the same moment either
claims it before (and the action waits for nothing: its lease is cleared, so its later writes,
which go through ``QueueEntry.leased_to``, change nothing) or after (and finds it frozen or
done). Deleting writes a "deleted" tracking event per recipient naming the administrator;
every action is in the audit log. An NDR is queued in the same transaction as the deletion
(``relay.delivery.dsn.submit_dsn`` joins the caller's transaction).

Queue Viewer's derived state and columns live in ``relay.admin.viewer`` and are re-exported
here (``queue_state``, ``with_columns``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from relay.admin.viewer import OPEN_ENTRY_STATES, QueueState, queue_state, with_columns
from relay.delivery.dsn import submit_dsn
from relay.queue import dispatch
from relay.queue.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from relay.queue.tracking import TrackingSettings
from smtpadmin.audit import record_action
from smtpadmin.models import AuditEntry

__all__ = [
    "BULK_ACTIONS",
    "BulkOutcome",
    "Deleted",
    "QueueState",
    "bulk_action",
    "delete_entries",
    "delete_message",
    "delete_queue_messages",
    "freeze_entries",
    "freeze_message",
    "freeze_queue",
    "queue_state",
    "record_bulk",
    "record_queue_delete",
    "record_queue_retry",
    "retry_queue_now",
    "unfreeze_entries",
    "unfreeze_message",
    "unfreeze_queue",
    "with_columns",
]

logger = logging.getLogger(__name__)

# Exchange 2003's code for a message an administrator deleted from a queue (with NDR); the
# reply names no administrator: it may travel to the sender in the NDR.
DELETED_STATUS = "4.3.2"
DELETED_RESPONSE = "4.3.2 Message deleted from the queue by an administrator"
# Messages per transaction in a bulk action: locks stay short, memory stays flat.
CHUNK = 500


@dataclass(frozen=True)
class Deleted:
    """What a delete removed: messages (with at least one recipient deleted), recipients,
    and the queue ids of the NDRs submitted ("" for one that went to badmail)."""

    messages: int = 0
    recipients: int = 0
    dsns: tuple[str, ...] = ()
    dsn_errors: int = 0

    def __add__(self, other: Deleted) -> Deleted:
        return Deleted(
            self.messages + other.messages,
            self.recipients + other.recipients,
            self.dsns + other.dsns,
            self.dsn_errors + other.dsn_errors,
        )


def _username(by: Any) -> str:
    if by is not None and getattr(by, "is_authenticated", False):
        return str(by.get_username())
    return "system"


def _enqueue_on_commit(queue_pks: Iterable[int]) -> None:
    """Ask delivery to look at these queues once the change is committed. With the broker
    down nothing is lost (a wake-up never raises after the commit): the sweeper finds due
    work."""
    dispatch.wake(queue_pks)


# --- queues ------------------------------------------------------------------------------


def _set_frozen(queue: LinkQueue, by: Any, frozen: bool) -> bool:
    with transaction.atomic():
        # A conditional update: a second click, or another administrator, changes nothing.
        changed = LinkQueue.objects.filter(pk=queue.pk, frozen=not frozen).update(frozen=frozen)
        if changed:
            record_action(by, queue, "frozen", "no" if frozen else "yes", "yes" if frozen else "no")
            if not frozen:
                _enqueue_on_commit([queue.pk])
    queue.frozen = frozen
    return bool(changed)


def freeze_queue(queue: LinkQueue, by: Any) -> bool:
    """Freeze: no message leaves the queue (new ones still join it); a batch already on the
    wire finishes. False when it was frozen already."""
    return _set_frozen(queue, by, True)


def unfreeze_queue(queue: LinkQueue, by: Any) -> bool:
    """Unfreeze: delivery resumes at once for what is due. False when it was not frozen."""
    return _set_frozen(queue, by, False)


def retry_queue_now(queue: LinkQueue, by: Any, now: datetime | None = None) -> int:
    """Force Connection: every waiting message of the queue is due now, ignoring the retry
    timer, and delivery is asked to run on commit. Returns how many messages were waiting."""
    now = now or timezone.now()
    with transaction.atomic():
        count = QueueEntry.objects.filter(
            queue=queue, state__in=QueueEntry.DUE_STATES, next_attempt_at__gt=now
        ).update(next_attempt_at=now)
        record_queue_retry(by, queue)
        _enqueue_on_commit([queue.pk])
    return count


def record_queue_retry(by: Any, queue: LinkQueue) -> None:
    record_action(by, queue, "connection", "", "force connection")


def record_queue_delete(
    by: Any, queue: LinkQueue, messages: int, recipients: int, ndr: bool
) -> None:
    record_action(
        by,
        queue,
        "messages",
        f"{messages} message(s), {recipients} recipient(s)",
        "deleted with NDR" if ndr else "deleted without NDR",
    )


def delete_queue_messages(
    queue: LinkQueue, by: Any, ndr: bool, now: datetime | None = None
) -> Deleted:
    """Delete All Messages (with or without NDR): every recipient waiting in this queue is
    deleted; the messages' recipients in other queues are not touched."""
    with transaction.atomic():
        result, _per_message = delete_entries(Q(queue=queue), by, ndr, now)
        if result.messages:
            record_queue_delete(by, queue, result.messages, result.recipients, ndr)
    return result


# --- messages ----------------------------------------------------------------------------


def freeze_message(message: Message, by: Any) -> int:
    """Freeze the message in every queue it waits in; returns how many queues that is."""
    count = len(freeze_entries(Q(message=message)))
    if count:
        record_action(by, message, "state", "queued", "frozen")
    return count


def unfreeze_message(message: Message, by: Any) -> int:
    """Unfreeze it: back to Retry (if it was tried before) or Ready, delivery asked on
    commit; returns how many queues it waits in."""
    count = len(unfreeze_entries(Q(message=message)))
    if count:
        record_action(by, message, "state", "frozen", "queued")
    return count


def delete_message(message: Message, by: Any, ndr: bool, now: datetime | None = None) -> Deleted:
    """Delete the message from every queue: each recipient still waiting becomes "deleted"
    (4.3.2), with an NDR to the sender when ``ndr``. Delivered and failed recipients keep
    their outcome; the message stays readable (properties, .eml, tracking)."""
    with transaction.atomic():
        result, per_message = delete_entries(Q(message=message), by, ndr, now)
        if result.recipients:
            record_action(
                by,
                message,
                "recipients",
                ", ".join(address for _pk, address in per_message[message.pk])[:2000],
                "deleted with NDR" if ndr else "deleted without NDR",
            )
    return result


# --- bulk --------------------------------------------------------------------------------

BULK_ACTIONS = {
    "freeze": "Freeze",
    "unfreeze": "Unfreeze",
    "delete": "Delete",
}


@dataclass(frozen=True)
class BulkOutcome:
    action: str
    ndr: bool
    matched: int  # messages the filter found
    changed: int  # messages the action changed (frozen ones are not frozen twice)
    recipients: int = 0  # recipients deleted
    dsns: int = 0  # NDRs submitted
    dsn_errors: int = 0


def bulk_action(
    messages: models.QuerySet[Message],
    action: str,
    by: Any,
    *,
    ndr: bool = False,
    description: str = "",
    now: datetime | None = None,
) -> BulkOutcome:
    """Apply ``action`` (freeze, unfreeze or delete) to every message of ``messages``, a few
    hundred per transaction. Audited once, with the criteria in ``description``."""
    if action not in BULK_ACTIONS:
        raise ValueError(f"unknown bulk action {action!r}")
    pks = list(messages.order_by().values_list("pk", flat=True).distinct())
    pks.sort()
    changed = recipients = 0
    deleted = Deleted()
    for start in range(0, len(pks), CHUNK):
        chunk = Q(message_id__in=pks[start : start + CHUNK])
        if action == "freeze":
            changed += len({e.message_id for e in freeze_entries(chunk)})
        elif action == "unfreeze":
            changed += len({e.message_id for e in unfreeze_entries(chunk)})
        else:
            result, _per_message = delete_entries(chunk, by, ndr, now)
            deleted += result
            changed += result.messages
            recipients += result.recipients
    if changed:
        record_bulk(by, action, ndr, changed, description)
    return BulkOutcome(
        action=action,
        ndr=ndr and action == "delete",
        matched=len(pks),
        changed=changed,
        recipients=recipients,
        dsns=len(deleted.dsns),
        dsn_errors=deleted.dsn_errors,
    )


def record_bulk(by: Any, action: str, ndr: bool, count: int, description: str) -> None:
    """One audit entry for a bulk action on what a search found."""
    label = BULK_ACTIONS[action] + (
        (" with NDR" if ndr else " without NDR") if action == "delete" else ""
    )
    is_user = by is not None and getattr(by, "is_authenticated", False)
    AuditEntry.objects.create(
        user=by if is_user else None,
        username=_username(by),
        action=AuditEntry.Action.ACTION,
        object_type="Message",
        object_repr=f"{count} message(s) matching {description or 'the search'}"[:300],
        field="bulk",
        new_value=label.lower(),
    )


# --- the work on entries -----------------------------------------------------------------


def _lock_entries(condition: Q, states: Sequence[str]) -> list[QueueEntry]:
    """The entries matching ``condition`` in ``states``, locked until the transaction ends.
    A worker's claim (a conditional UPDATE) waits for the lock, then sees the new state."""
    return list(
        QueueEntry.objects.select_for_update(of=("self",))
        .filter(condition, state__in=states)
        .select_related("queue")
        .order_by("pk")
    )


def freeze_entries(condition: Q) -> list[QueueEntry]:
    with transaction.atomic():
        entries = _lock_entries(condition, QueueEntry.DUE_STATES)
        # The lease goes too: a batch on the wire may finish, but its result must not
        # put the entry back in Ready or Retry behind the administrator's back.
        QueueEntry.objects.filter(pk__in=[e.pk for e in entries]).update(
            state=QueueEntry.State.FROZEN, lease_owner="", lease_until=None
        )
    return entries


def unfreeze_entries(condition: Q) -> list[QueueEntry]:
    with transaction.atomic():
        entries = _lock_entries(condition, [QueueEntry.State.FROZEN])
        pks = [e.pk for e in entries]
        QueueEntry.objects.filter(pk__in=pks).update(
            state=models.Case(
                models.When(attempts=0, then=models.Value(QueueEntry.State.READY)),
                default=models.Value(QueueEntry.State.RETRY),
            )
        )
        _enqueue_on_commit(e.queue_id for e in entries)
    return entries


def delete_entries(
    condition: Q, by: Any, ndr: bool, now: datetime | None
) -> tuple[Deleted, dict[int, list[tuple[int, str]]]]:
    """Delete the open recipients of the open entries matching ``condition`` and, with
    ``ndr``, queue one failure DSN per message for them. Returns the counts and, per message
    pk, its deleted recipients as (pk, address)."""
    submit = _dsn_submitter() if ndr else None
    now = now or timezone.now()
    name = _username(by)
    with transaction.atomic():
        entries = _lock_entries(condition, OPEN_ENTRY_STATES)
        if not entries:
            return Deleted(), {}
        entry_pks = [e.pk for e in entries]
        recipients = list(
            Recipient.objects.select_for_update(of=("self",))
            .filter(entry_id__in=entry_pks, state__in=Recipient.OPEN_STATES)
            .order_by("pk")
        )
        Recipient.objects.filter(pk__in=[r.pk for r in recipients]).update(
            state=Recipient.State.DELETED,
            status=DELETED_STATUS,
            last_response=DELETED_RESPONSE,
            completed_at=now,
        )
        # Clearing the lease: a worker still sending this entry cannot mark it done or due
        # again (its writes go through ``leased_to``).
        QueueEntry.objects.filter(pk__in=entry_pks).update(
            state=QueueEntry.State.DONE,
            completed_at=now,
            lease_owner="",
            lease_until=None,
            last_response=f"Deleted by an administrator ({name})",
        )
        if TrackingSettings.load().enabled and recipients:
            TrackingEvent.objects.bulk_create(_deleted_events(entries, recipients, name, ndr, now))
        per_message: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for recipient in recipients:
            per_message[recipient.message_id].append((recipient.pk, recipient.address))
        deleted = Deleted(messages=len(per_message), recipients=len(recipients))
        if submit is not None:
            deleted = _submit_dsns(deleted, per_message, submit, now)
    return deleted, dict(per_message)


def _deleted_events(
    entries: list[QueueEntry],
    recipients: list[Recipient],
    name: str,
    ndr: bool,
    now: datetime,
) -> list[TrackingEvent]:
    queues = {e.pk: e.queue.name for e in entries}
    messages = {
        m.pk: m
        for m in Message.objects.filter(pk__in={r.message_id for r in recipients})
        .only("pk", "queue_id", "message_id", "sender")
        .annotate(server=F("virtual_server__server__name"))
    }
    detail = "with NDR" if ndr else "without NDR"
    events = []
    for recipient in recipients:
        message = messages[recipient.message_id]
        events.append(
            TrackingEvent(
                kind=TrackingEvent.Kind.DELETED,
                at=now,
                queue_id=message.queue_id,
                message_id=message.message_id,
                sender=message.sender.lower(),
                recipient=recipient.address.lower(),
                server_name=getattr(message, "server", None) or "",
                queue_name=queues.get(recipient.entry_id or 0, ""),
                response=DELETED_RESPONSE,
                by=name,
                detail=detail,
            )
        )
    return events


# --- NDRs --------------------------------------------------------------------------------

DsnSubmitter = Callable[..., "str | None"]


def _dsn_submitter() -> DsnSubmitter:
    return submit_dsn


def _submit_dsns(
    result: Deleted,
    per_message: dict[int, list[tuple[int, str]]],
    submit: DsnSubmitter,
    now: datetime,
) -> Deleted:
    """One failure DSN per message for its deleted recipients (4.3.2), each in a savepoint:
    one that cannot be queued is logged and counted, and the deletion stands."""
    dsns: list[str] = []
    errors = 0
    for message_pk, deleted in sorted(per_message.items()):
        try:
            with transaction.atomic():
                queue_id = submit(message_pk, [pk for pk, _address in deleted], "failure", now)
        except Exception:
            logger.exception("could not queue the NDR for deleted message %s", message_pk)
            errors += 1
        else:
            dsns.append(queue_id or "")
    return Deleted(result.messages, result.recipients, tuple(dsns), errors)
