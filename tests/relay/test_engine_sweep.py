"""relay.delivery.engine.sweep: expirations (4.4.7), one delay notification per entry,
failure DSNs still owed, and the queues with due work."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes
from email.message import Message as EmailMessage

import pytest
from django.utils import timezone

from relay.delivery.engine import sweep
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from smtpadmin.models import Organization
from tests.relay.engine_world import (
    LOCAL_SENDER,
    Outbound,
    deliver,
    dsns_for,
    entry_of,
    events,
    queue_of,
    recipient,
)
from tests.sinks import SinkFactory

pytestmark = pytest.mark.django_db


def report_fields(dsn_bytes: bytes) -> list[dict[str, str]]:
    """The per-recipient fields of a DSN's message/delivery-status part."""
    report = message_from_bytes(dsn_bytes)
    for part in report.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            assert isinstance(blocks, list)
            return [dict(block.items()) for block in blocks[1:] if isinstance(block, EmailMessage)]
    raise AssertionError("no message/delivery-status part")


def test_mail_still_queued_at_its_expiration_time_fails_with_4_4_7_and_one_dsn(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    mx.rcpt = lambda address: "451 4.3.0 Try later"
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    entry = entry_of(message, queue)
    deliver(queue, timezone.now())

    sweep(now=entry.expires_at - timedelta(seconds=1))
    assert recipient(message).state == "deferred"

    sweep(now=entry.expires_at)

    bob = recipient(message)
    assert (bob.state, bob.status) == ("failed", "4.4.7")
    assert bob.last_response == "451 4.3.0 Try later"  # the reason, for the DSN
    assert entry_of(message, queue).state == "done"
    (expired,) = events(message, TrackingEvent.Kind.EXPIRED)
    assert expired.recipient == "bob@example.org"
    # The delay notification went out on the way (after 12 hours), then the expiration.
    delayed, failed = (report_fields(dsn.raw)[0] for dsn in dsns_for(LOCAL_SENDER))
    assert (delayed["Action"], failed["Action"]) == ("delayed", "failed")
    assert failed["Status"] == "4.4.7"
    assert "451 4.3.0 Try later" in failed["Diagnostic-Code"]

    sweep(now=entry.expires_at + timedelta(hours=1))
    assert len(dsns_for(LOCAL_SENDER)) == 2


def test_a_frozen_message_does_not_expire_while_it_is_frozen(outbound: Outbound) -> None:
    message = outbound.send(["bob@example.org"])
    entry = entry_of(message, queue_of(message))
    QueueEntry.objects.filter(pk=entry.pk).update(state=QueueEntry.State.FROZEN)

    sweep(now=entry.expires_at + timedelta(minutes=1))

    assert recipient(message).state == "pending"


def test_one_delay_notification_goes_out_after_the_delay_time(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    mx.rcpt = lambda address: "451 4.2.0 Mailbox busy"
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    message = outbound.send(["bob@example.org"])
    queue = queue_of(message)
    entry = entry_of(message, queue)
    assert entry.delay_notify_at is not None
    deliver(queue, timezone.now())

    sweep(now=entry.delay_notify_at - timedelta(seconds=1))
    assert dsns_for(LOCAL_SENDER) == []

    sweep(now=entry.delay_notify_at)
    sweep(now=entry.delay_notify_at + timedelta(hours=1))

    (dsn,) = dsns_for(LOCAL_SENDER)
    (fields,) = report_fields(dsn.raw)
    assert fields["Action"] == "delayed"
    assert fields["Status"].startswith("4.")
    assert entry_of(message, queue).delay_notified_at == entry.delay_notify_at
    bob = recipient(message)
    # Still waiting, and a failure later still gets its own DSN.
    assert (bob.state, bob.dsn_sent_at) == ("deferred", None)


def test_no_delay_notification_for_the_null_sender(outbound: Outbound) -> None:
    message = outbound.send(["bob@example.org"], sender="")
    entry = entry_of(message, queue_of(message))
    assert entry.delay_notify_at is not None

    sweep(now=entry.delay_notify_at)

    assert entry_of(message, queue_of(message)).delay_notified_at is not None
    assert Message.objects.filter(system=True).count() == 1  # the original only


def test_a_failure_dsn_still_owed_is_sent_by_the_sweeper(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    mx.reject_all()
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    message = outbound.send(["bob@example.org"])
    now = timezone.now()
    deliver(queue_of(message), now)
    # As if the DSN could not be made when the failure was recorded (a crash, a bug).
    Message.objects.filter(system=True).delete()
    Recipient.objects.filter(message=message).update(dsn_sent_at=None)

    sweep(now=now)  # the deliverer's own moment: not yet
    assert dsns_for(LOCAL_SENDER) == []

    sweep(now=now + timedelta(minutes=2))

    (dsn,) = dsns_for(LOCAL_SENDER)
    assert report_fields(dsn.raw)[0]["Status"] == "5.1.1"
    assert recipient(message).dsn_sent_at == now + timedelta(minutes=2)
    sweep(now=now + timedelta(minutes=3))
    assert len(dsns_for(LOCAL_SENDER)) == 1


def test_the_sweeper_lists_outbound_queues_with_due_work_and_only_those(
    outbound: Outbound, sink: SinkFactory
) -> None:
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    due = queue_of(outbound.send(["bob@example.org"]))
    frozen = queue_of(outbound.send(["bob@frozen.example"]))
    LinkQueue.objects.filter(pk=frozen.pk).update(frozen=True)
    waiting_message = outbound.send(["bob@waiting.example"])
    waiting = queue_of(waiting_message)
    local = queue_of(outbound.send(["bob@smtpadmin.test"]))
    unreachable = queue_of(outbound.send(["bob@partner.test"]))
    now = timezone.now()
    QueueEntry.objects.filter(message=waiting_message).update(
        state="retry", next_attempt_at=now + timedelta(minutes=1)
    )

    found = sweep(now=now)

    assert due.pk in found and unreachable.pk in found
    assert frozen.pk not in found and waiting.pk not in found and local.pk not in found
    assert waiting.pk in sweep(now=now + timedelta(minutes=1))

    Organization.objects.filter(pk=1).update(outbound_mail_disabled=True)
    assert sweep(now=now) == []
