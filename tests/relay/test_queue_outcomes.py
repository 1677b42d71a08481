"""relay.queue.outcomes.record: local and remote delivery write their outcomes through the
same function, with the tracking events and retry times each wrote before; the failure DSNs
it asks for are the delivery stage's to queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from relay.delivery.engine import deliver_queue
from relay.delivery.results import record as record_and_report
from relay.local import deliver_local
from relay.models import Message, QueueEntry, Recipient, TrackingEvent
from relay.queue import leases, outcomes
from relay.queue.outcomes import DEFERRED, DELIVERED, FAILED, DsnWanted, Handoff, Verdict
from tests.relay.engine_world import LOCAL_SENDER, Outbound, dead_smart_host, entry_of, queue_of
from tests.relay.test_intake import set_tracking
from tests.sinks import SinkFactory

pytestmark = pytest.mark.django_db

LOCAL = Handoff(hop="local delivery", transferred=False)
REMOTE = Handoff(hop="[127.0.0.1]:2525")
OWNER = "worker-a/100#1"


def claimed(outbound: Outbound, address: str) -> QueueEntry:
    """The one entry of a message to ``address``, claimed by ``OWNER``."""
    message = outbound.send([address])
    entry = entry_of(message, queue_of(message))
    (won,) = leases.claim(
        [entry.pk],
        OWNER,
        timezone.now(),
        seconds=60,
        load=("message", "virtual_server__server", "queue__server", "queue__connector"),
    )
    return won


def remote(outbound: Outbound) -> QueueEntry:
    outbound.connector("Partner", [("example.org", 1)], dead_smart_host())
    return claimed(outbound, "bob@example.org")


def verdict(entry: QueueEntry, outcome: outcomes.Outcome, reply: str, **fields: Any) -> Verdict:
    (recipient,) = entry.recipients.all()
    return Verdict(recipient, outcome, reply, reply.split()[1], **fields)


def record(entry: QueueEntry, judged: Verdict, handoff: Handoff, **fields: Any) -> Any:
    fields.setdefault("owner", OWNER)
    fields.setdefault("now", timezone.now())
    return outcomes.record(entry.queue, [entry], {entry.pk: [judged]}, handoff=handoff, **fields)


def test_local_and_remote_delivery_both_write_through_the_one_record(
    outbound: Outbound, sink: SinkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str]]] = []
    real = outcomes.record

    def spy(*args: Any, **kwargs: Any) -> Any:
        verdicts = args[2]
        calls.append((kwargs["handoff"].hop, [v.outcome for vs in verdicts.values() for v in vs]))
        return real(*args, **kwargs)

    monkeypatch.setattr(outcomes, "record", spy)
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], mx.smart_host)
    to_bob = outbound.send(["bob@example.org"])
    to_alice = outbound.send(["alice@smtpadmin.test"])

    assert deliver_local(entry_of(to_alice, queue_of(to_alice)).pk, "node1/1") is True
    assert deliver_queue(queue_of(to_bob).pk, "worker-a/100") == "sent"

    assert calls == [("local delivery", ["delivered"]), (f"[127.0.0.1]:{mx.port}", ["delivered"])]


@pytest.mark.parametrize("address", ["alice@smtpadmin.test", "bob@example.org"])
def test_a_deferral_waits_the_virtual_servers_retry_intervals_local_and_remote_alike(
    outbound: Outbound, address: str
) -> None:
    outbound.configure(retry_first_minutes=7, retry_second_minutes=13)
    if address.endswith("example.org"):
        outbound.connector("Partner", [("example.org", 1)], dead_smart_host())
    entry = claimed(outbound, address)
    now = timezone.now()

    record(entry, verdict(entry, DEFERRED, "451 4.3.0 try later"), LOCAL, now=now)

    entry.refresh_from_db()
    assert (entry.state, entry.attempts, entry.lease_owner) == ("retry", 1, "")
    assert entry.next_attempt_at == now + timedelta(minutes=7)
    assert entry.last_response == "451 4.3.0 try later"
    (recipient,) = entry.recipients.all()
    assert (recipient.state, recipient.status) == ("deferred", "4.3.0")
    (again,) = leases.claim([entry.pk], OWNER, entry.next_attempt_at, seconds=60)
    record(again, verdict(again, DEFERRED, "451 4.3.0 still"), LOCAL, now=entry.next_attempt_at)
    again.refresh_from_db()
    assert again.next_attempt_at == entry.next_attempt_at + timedelta(minutes=13)


def test_local_delivery_tracks_the_maildir_file_and_no_transfer(outbound: Outbound) -> None:
    entry = claimed(outbound, "alice@smtpadmin.test")

    record(entry, verdict(entry, DELIVERED, "250 2.0.0 Delivered", detail="/drop/a/new/1"), LOCAL)

    (event,) = TrackingEvent.objects.filter(queue_id=entry.message.queue_id).exclude(
        kind__in=["received", "routed"]
    )
    assert (event.kind, event.recipient) == ("delivered", "alice@smtpadmin.test")
    assert (event.detail, event.next_hop) == ("/drop/a/new/1", "local delivery")
    assert (event.server_name, event.queue_name) == ("node1", "Local delivery")


def test_remote_delivery_tracks_the_transfer_and_each_recipient(outbound: Outbound) -> None:
    entry = remote(outbound)

    record(entry, verdict(entry, DELIVERED, "250 2.0.0 Ok"), REMOTE)

    found = TrackingEvent.objects.filter(queue_id=entry.message.queue_id).exclude(
        kind__in=["received", "routed"]
    )
    transferred, delivered = found.order_by("pk")
    assert (transferred.kind, delivered.kind) == ("transferred", "delivered")
    assert transferred.detail == "1 of 1 recipient(s) accepted by [127.0.0.1]:2525"
    assert (delivered.detail, delivered.next_hop) == ("attempt 1", "[127.0.0.1]:2525")
    assert delivered.connector_name == "Partner"
    assert delivered.virtual_server_name == "Inbound"


def test_record_asks_for_the_failure_dsn_and_queues_none_itself(outbound: Outbound) -> None:
    entry = remote(outbound)
    messages = Message.objects.count()

    recorded = record(entry, verdict(entry, FAILED, "550 5.1.1 no such user"), REMOTE)

    (bob,) = entry.recipients.all()
    assert recorded.dsns == (DsnWanted(entry.message_id, (bob.pk,), "[127.0.0.1]:2525"),)
    assert (recorded.tally.failed, recorded.tally.delivered) == (1, 0)
    assert Message.objects.count() == messages  # the delivery stage queues it
    assert (bob.state, bob.dsn_sent_at) == ("failed", None)  # the sweeper's mark: still owed


def test_the_delivery_stage_queues_the_dsn_with_the_failure(outbound: Outbound) -> None:
    entry = remote(outbound)
    judged = verdict(entry, FAILED, "550 5.1.1 no such user")

    tally = record_and_report(
        entry.queue, [entry], {entry.pk: [judged]}, owner=OWNER, handoff=REMOTE, now=timezone.now()
    )

    assert tally.failed == 1
    (dsn,) = Message.objects.filter(system=True, recipients__address=LOCAL_SENDER)
    assert dsn.sender == ""
    assert Recipient.objects.get(pk=judged.recipient.pk).dsn_sent_at is not None


def test_an_attempt_whose_lease_ran_out_records_only_what_nobody_recorded(
    outbound: Outbound,
) -> None:
    entry = claimed(outbound, "alice@smtpadmin.test")
    later = timezone.now() + timedelta(seconds=61)
    (taken,) = leases.claim([entry.pk], "successor/2#1", later, seconds=60)
    delivered = verdict(entry, DELIVERED, "250 2.0.0 Delivered", detail="/drop/a/new/1")

    record(entry, delivered, LOCAL)  # the old owner: the recipient is still open

    taken.refresh_from_db()
    assert (taken.lease_owner, taken.attempts, taken.state) == ("successor/2#1", 0, "ready")
    assert entry.recipients.get().state == "delivered"
    assert TrackingEvent.objects.filter(kind="delivered").count() == 1

    record(entry, delivered, LOCAL)  # once more: nothing new to record

    assert TrackingEvent.objects.filter(kind="delivered").count() == 1


def test_tracking_off_records_the_outcome_without_events(outbound: Outbound) -> None:
    set_tracking(enabled=False)
    entry = claimed(outbound, "alice@smtpadmin.test")

    record(entry, verdict(entry, DELIVERED, "250 2.0.0 Delivered"), LOCAL)

    assert entry.recipients.get().state == "delivered"
    assert not TrackingEvent.objects.exists()
