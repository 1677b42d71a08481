"""relay.delivery.dsn.submit_dsn: reports queued as system messages through the same queues
as any mail (a local sender's Maildir, a remote sender's link queue), parsed back with
``email``; double bounces into badmail; "send copy of NDR to"; delays and expirations."""

from __future__ import annotations

import threading
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from relay.delivery.badmail import badmail_directory
from relay.delivery.dsn import submit_dsn
from relay.intake import accept, submit_system_message
from relay.local import deliver_local, maildir_path
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from tests.relay.test_dsn_report import (
    NOW,
    UNKNOWN,
    build,
    decoded,
    parse,
    parts_of,
    status_blocks,
    text_of,
    unfolded,
)
from tests.relay.test_intake import (
    CONTENT,
    World,
    add_mailbox,
    envelope,
    make_world,
    set_tracking,
)
from tests.threads import TestThread, finish_all

WORKER = "node1/4242"


@pytest.fixture
def world(tmp_path: Path, settings: Any) -> World:
    settings.VAR_DIR = tmp_path / "var"
    return make_world(tmp_path)


def queued(world: World, sender: str, recipients: list[str], content: bytes = CONTENT) -> Message:
    accepted = accept(envelope(world.vs, recipients, sender=sender, content=content))
    return Message.objects.get(pk=accepted.message_pk)


def fail(message: Message, address: str, reply: str = UNKNOWN) -> Recipient:
    recipient = message.recipients.get(address=address)
    recipient.state = Recipient.State.FAILED
    recipient.status = reply.split()[1]
    recipient.last_response = reply
    recipient.completed_at = timezone.now()
    recipient.save()
    return recipient


def dsn_message(queue_id: str | None) -> Message:
    assert queue_id is not None
    return Message.objects.get(queue_id=queue_id)


def badmail(tmp_path: Path) -> Path:
    """The default badmail directory of the world's server: <VAR_DIR>/badmail/node1."""
    return tmp_path / "var" / "badmail" / "node1"


@pytest.mark.django_db
def test_a_local_senders_dsn_is_delivered_into_their_maildir(world: World) -> None:
    original = queued(world, "alice@smtpadmin.test", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")

    queue_id = submit_dsn(
        original.pk, [bob.pk], "failure", remote_mta="mx1.remote.test [192.0.2.1]:25"
    )

    dsn = dsn_message(queue_id)
    (entry,) = dsn.entries.select_related("queue")
    assert entry.queue.kind == LinkQueue.Kind.LOCAL
    assert deliver_local(entry.pk, WORKER) is True
    (path,) = (maildir_path(world.drop, "alice@smtpadmin.test") / "new").iterdir()
    delivered = parse(path.read_bytes())
    assert delivered["Return-Path"] == "<>"
    assert delivered["Delivered-To"] == "alice@smtpadmin.test"
    assert delivered["Received"].startswith(f"by mx.smtpadmin.test (smtpadmin) id {queue_id};")
    assert delivered["From"].addresses[0].addr_spec == "postmaster@smtpadmin.test"
    assert delivered["To"].addresses[0].addr_spec == "alice@smtpadmin.test"
    assert delivered["Subject"] == "Delivery Status Notification (Failure)"
    per_message, block = status_blocks(delivered)
    assert per_message["Reporting-MTA"] == "dns; mx.smtpadmin.test"
    assert per_message["X-Smtpadmin-Queue-ID"] == original.queue_id
    assert parsedate_to_datetime(per_message["Arrival-Date"]) == original.received_at.replace(
        microsecond=0
    )
    assert block["Final-Recipient"] == "rfc822; bob@remote.test"
    assert (block["Action"], block["Status"]) == ("failed", "5.1.1")
    assert block["Remote-MTA"] == "dns; mx1.remote.test"
    assert unfolded(block["Diagnostic-Code"]) == f"smtp; {UNKNOWN}"
    returned = decoded(parts_of(delivered)[2])
    assert b"Subject: Quarterly report" in returned
    assert b"Numbers attached." not in path.read_bytes()


@pytest.mark.django_db
def test_a_remote_senders_dsn_waits_in_the_link_queue_for_the_senders_domain(
    world: World,
) -> None:
    original = queued(world, "sender@outside.test", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")

    dsn = dsn_message(submit_dsn(original.pk, [bob.pk], "failure"))

    assert dsn.sender == "" and dsn.system is True
    (entry,) = dsn.entries.select_related("queue")
    assert (entry.queue.key, entry.queue.kind) == ("dns:outside.test", LinkQueue.Kind.DNS)
    assert entry.state == QueueEntry.State.READY
    (recipient,) = dsn.recipients.all()
    assert (recipient.address, recipient.state) == ("sender@outside.test", "pending")
    assert parse(dsn.raw)["To"].addresses[0].addr_spec == "sender@outside.test"


@pytest.mark.django_db
def test_it_marks_the_recipients_reported_and_tracks_a_dsn_sent_event(world: World) -> None:
    set_tracking(enabled=True)
    original = queued(world, "sender@outside.test", ["bob@remote.test", "carol@remote.test"])
    bob = fail(original, "bob@remote.test")
    carol = fail(original, "carol@remote.test", "552 5.2.2 mailbox full")

    queue_id = submit_dsn(original.pk, [bob.pk, carol.pk], "failure", now=NOW)

    assert list(original.recipients.values_list("dsn_sent_at", flat=True)) == [NOW, NOW]
    events = TrackingEvent.objects.filter(queue_id=original.queue_id, kind="dsn_sent")
    assert sorted(events.values_list("recipient", flat=True)) == [
        "bob@remote.test",
        "carol@remote.test",
    ]
    assert all(f"failure DSN {queue_id} to <sender@outside.test>" in e.detail for e in events)
    dsn = dsn_message(queue_id)
    assert [b["Final-Recipient"] for b in status_blocks(parse(dsn.raw))[1:]] == [
        "rfc822; bob@remote.test",
        "rfc822; carol@remote.test",
    ]
    received = TrackingEvent.objects.get(queue_id=queue_id, kind="received")
    assert received.detail == f"failure DSN for {original.queue_id}"


@pytest.mark.django_db
def test_reporting_the_same_failure_twice_sends_one_dsn(world: World) -> None:
    original = queued(world, "sender@outside.test", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")

    first = submit_dsn(original.pk, [bob.pk], "failure")
    second = submit_dsn(original.pk, [bob.pk], "failure")

    assert first is not None and second is None
    assert Message.objects.filter(system=True).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_reporting_the_same_failure_at_once_send_one_dsn(world: World) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite serialises the writers instead")
    original = queued(world, "alice@smtpadmin.test", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")
    first_in = threading.Event()
    release = threading.Event()
    results: dict[str, str | None] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                results["first"] = submit_dsn(original.pk, [bob.pk], "failure")
                first_in.set()
                release.wait(10)  # hold the row lock, uncommitted
        finally:
            connections.close_all()

    def second() -> None:
        try:
            results["second"] = submit_dsn(original.pk, [bob.pk], "failure")
        finally:
            connections.close_all()

    one = TestThread(first)
    two = TestThread(second)
    one.start()
    assert first_in.wait(10)
    two.start()
    two.join(0.5)
    assert two.is_alive(), "the second waits for the first's row lock"
    release.set()
    finish_all([one, two], 10)

    assert results["first"] is not None
    assert results["second"] is None
    assert Message.objects.filter(system=True).count() == 1


@pytest.mark.django_db
def test_the_dsn_commits_or_rolls_back_with_the_callers_transaction(world: World) -> None:
    original = queued(world, "sender@outside.test", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")

    with pytest.raises(RuntimeError), transaction.atomic():
        submit_dsn(original.pk, [bob.pk], "failure")
        raise RuntimeError("the delivery's own transaction fails")

    assert Message.objects.filter(system=True).count() == 0
    assert Recipient.objects.get(pk=bob.pk).dsn_sent_at is None


@pytest.mark.django_db
def test_send_copy_of_ndr_to_gets_every_ndr_as_a_second_envelope_recipient(world: World) -> None:
    add_mailbox("postmaster@smtpadmin.test")
    world.vs.ndr_copy_to = "postmaster@smtpadmin.test"
    world.vs.save()
    original = queued(world, "sender@outside.test", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")

    dsn = dsn_message(submit_dsn(original.pk, [bob.pk], "failure"))

    assert sorted(dsn.recipients.values_list("address", flat=True)) == [
        "postmaster@smtpadmin.test",
        "sender@outside.test",
    ]
    assert parse(dsn.raw)["To"].addresses[0].addr_spec == "sender@outside.test"
    local = dsn.entries.get(queue__kind=LinkQueue.Kind.LOCAL)
    deliver_local(local.pk, WORKER)
    (path,) = (maildir_path(world.drop, "postmaster@smtpadmin.test") / "new").iterdir()
    assert status_blocks(parse(path.read_bytes()))[1]["Status"] == "5.1.1"


@pytest.mark.django_db
def test_a_null_sender_message_gets_no_dsn_and_goes_to_badmail(
    world: World, tmp_path: Path
) -> None:
    set_tracking(enabled=True)
    original = queued(world, "", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")

    assert submit_dsn(original.pk, [bob.pk], "failure") is None

    assert Message.objects.exclude(pk=original.pk).count() == 0
    assert badmail_directory(world.vs) == badmail(tmp_path)
    eml, txt = sorted(badmail(tmp_path).iterdir(), key=lambda p: p.suffix)
    assert eml.read_bytes() == original.raw
    assert eml.name.endswith(".eml") and txt.name == eml.with_suffix(".txt").name
    reason = txt.read_text()
    assert "null sender" in reason
    assert f"Queue ID: {original.queue_id}" in reason
    assert f"bob@remote.test: 5.1.1 {UNKNOWN}" in reason
    assert Recipient.objects.get(pk=bob.pk).dsn_sent_at is not None
    event = TrackingEvent.objects.get(queue_id=original.queue_id, kind="badmail")
    assert event.recipient == "bob@remote.test"
    assert str(eml) in event.detail


@pytest.mark.django_db
def test_badmail_goes_to_the_virtual_servers_own_badmail_directory_when_set(
    world: World, tmp_path: Path
) -> None:
    world.vs.badmail_directory = str(tmp_path / "vsi 1" / "BadMail")
    world.vs.save()
    original = queued(world, "", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")

    submit_dsn(original.pk, [bob.pk], "failure")

    names = sorted(p.suffix for p in (tmp_path / "vsi 1" / "BadMail").iterdir())
    assert names == [".eml", ".txt"]
    assert not (tmp_path / "var" / "badmail").exists()


@pytest.mark.django_db
def test_a_double_bounce_is_reported_to_send_copy_of_ndr_to(world: World, tmp_path: Path) -> None:
    world.vs.ndr_copy_to = "postmaster@smtpadmin.test"
    world.vs.save()
    original = queued(world, "", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")

    assert submit_dsn(original.pk, [bob.pk], "failure") is None

    report = Message.objects.get(system=True, recipients__address="postmaster@smtpadmin.test")
    parsed = parse(report.raw)
    assert parsed["To"].addresses[0].addr_spec == "postmaster@smtpadmin.test"
    per_message, block = status_blocks(parsed)
    assert per_message["X-Smtpadmin-Sender"] is None, "the null sender is not named"
    assert (block["Final-Recipient"], block["Status"]) == ("rfc822; bob@remote.test", "5.1.1")
    assert "null sender" in unfolded(text_of(parts_of(parsed)[0]))
    assert len(list(badmail(tmp_path).glob("*.eml"))) == 1


@pytest.mark.django_db
def test_a_failed_report_to_send_copy_of_ndr_to_only_goes_to_badmail_never_round_again(
    world: World, tmp_path: Path
) -> None:
    world.vs.ndr_copy_to = "postmaster@smtpadmin.test"
    world.vs.save()
    original = queued(world, "", ["postmaster@smtpadmin.test"])
    failed = fail(original, "postmaster@smtpadmin.test", "452 4.3.1 disk full")

    assert submit_dsn(original.pk, [failed.pk], "failure") is None

    assert Message.objects.exclude(pk=original.pk).count() == 0
    assert len(list(badmail(tmp_path).glob("*.eml"))) == 1


@pytest.mark.django_db
def test_a_dsn_that_fails_in_turn_is_a_double_bounce_into_badmail(
    world: World, tmp_path: Path
) -> None:
    original = queued(world, "sender@outside.test", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")
    dsn = dsn_message(submit_dsn(original.pk, [bob.pk], "failure"))
    back = fail(dsn, "sender@outside.test", "550 5.1.1 <sender@outside.test>: no such user")

    assert submit_dsn(dsn.pk, [back.pk], "failure") is None

    assert Message.objects.filter(system=True).count() == 1
    (eml,) = badmail(tmp_path).glob("*.eml")
    assert eml.read_bytes() == dsn.raw


@pytest.mark.django_db
def test_a_dsn_that_cannot_even_be_routed_goes_to_badmail(world: World, tmp_path: Path) -> None:
    original = queued(world, "not an address", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")

    assert submit_dsn(original.pk, [bob.pk], "failure") is None

    (eml,) = badmail(tmp_path).glob("*.eml")
    assert parse(eml.read_bytes())["Subject"] == "Delivery Status Notification (Failure)"
    assert "could not be routed" in eml.with_suffix(".txt").read_text()
    assert Recipient.objects.get(pk=bob.pk).dsn_sent_at is not None


@pytest.mark.django_db
def test_a_delay_notification_tells_until_when_and_leaves_the_recipient_open(
    world: World,
) -> None:
    world.vs.ndr_copy_to = "postmaster@smtpadmin.test"
    world.vs.save()
    original = queued(world, "sender@outside.test", ["bob@remote.test"])
    bob = original.recipients.get()
    bob.state = Recipient.State.DEFERRED
    bob.status = "4.4.1"
    bob.last_response = "421 4.4.1 mx1.remote.test: connection timed out"
    bob.save()
    entry = original.entries.get()

    dsn = dsn_message(submit_dsn(original.pk, [bob.pk], "delay"))

    parsed = parse(dsn.raw)
    assert parsed["Subject"] == "Delivery Status Notification (Delay)"
    block = status_blocks(parsed)[1]
    assert (block["Action"], block["Status"]) == ("delayed", "4.4.1")
    assert parsedate_to_datetime(block["Will-Retry-Until"]) == entry.expires_at.replace(
        microsecond=0
    )
    assert list(dsn.recipients.values_list("address", flat=True)) == ["sender@outside.test"]
    assert Recipient.objects.get(pk=bob.pk).dsn_sent_at is None


@pytest.mark.django_db
def test_no_delay_notification_for_a_null_sender_message_and_no_badmail(
    world: World, tmp_path: Path
) -> None:
    original = queued(world, "", ["bob@remote.test"])

    assert submit_dsn(original.pk, [original.recipients.get().pk], "delay") is None

    assert Message.objects.count() == 1
    assert not (tmp_path / "var" / "badmail").exists()


@pytest.mark.django_db
def test_an_expiration_dsn_reports_4_4_7_with_the_last_reply(world: World) -> None:
    original = queued(world, "alice@smtpadmin.test", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test", "451 4.4.1 mx1.remote.test: connection refused")

    dsn = dsn_message(submit_dsn(original.pk, [bob.pk], "expiration"))

    parsed = parse(dsn.raw)
    block = status_blocks(parsed)[1]
    assert (block["Action"], block["Status"]) == ("failed", "4.4.7")
    assert (
        unfolded(block["Diagnostic-Code"]) == "smtp; 451 4.4.1 mx1.remote.test: connection refused"
    )
    assert "could not be delivered in time" in unfolded(text_of(parts_of(parsed)[0]))


@pytest.mark.django_db
def test_the_remote_mta_comes_from_tracking_when_the_caller_does_not_name_it(
    world: World,
) -> None:
    set_tracking(enabled=True)
    original = queued(world, "sender@outside.test", ["bob@remote.test"])
    bob = fail(original, "bob@remote.test")
    TrackingEvent.objects.create(
        kind="failed",
        queue_id=original.queue_id,
        recipient="bob@remote.test",
        next_hop="mx2.remote.test [192.0.2.2]:25",
        response=UNKNOWN,
    )

    dsn = dsn_message(submit_dsn(original.pk, [bob.pk], "failure"))

    assert status_blocks(parse(dsn.raw))[1]["Remote-MTA"] == "dns; mx2.remote.test"


@pytest.mark.django_db
def test_8bit_headers_of_a_local_senders_message_survive_into_the_dsn_in_their_maildir(
    world: World,
) -> None:
    content = "Subject: Grüße aus Köln\r\nFrom: alice@smtpadmin.test\r\n\r\nHallo\r\n".encode()
    original = queued(world, "alice@smtpadmin.test", ["bob@remote.test"], content=content)
    bob = fail(original, "bob@remote.test")

    dsn = dsn_message(submit_dsn(original.pk, [bob.pk], "failure"))
    deliver_local(dsn.entries.get().pk, WORKER)

    (path,) = (maildir_path(world.drop, "alice@smtpadmin.test") / "new").iterdir()
    delivered = parse(path.read_bytes())
    human, _status, headers = parts_of(delivered)
    assert "Subject:  Grüße aus Köln" in text_of(human)
    assert "Subject: Grüße aus Köln".encode() in decoded(headers)
    assert b"Hallo" not in path.read_bytes()


@pytest.mark.django_db
def test_a_system_message_is_routed_and_queued_like_any_mail_with_our_received_header(
    world: World,
) -> None:
    content = build(sender="alice@smtpadmin.test", to="alice@smtpadmin.test")

    accepted = submit_system_message(
        world.vs.pk, ["alice@smtpadmin.test", "x@remote.test"], content
    )

    message = Message.objects.get(pk=accepted.message_pk)
    assert (message.sender, message.system, message.protocol) == ("", True, "")
    assert message.raw.startswith(
        f"Received: by mx.smtpadmin.test (smtpadmin) id {accepted.queue_id};".encode()
    )
    assert message.message_id == parse(content)["Message-ID"]
    kinds = sorted(message.entries.values_list("queue__kind", flat=True))
    assert kinds == ["dns", "local"]
    assert len(accepted.local_entry_ids) == 1
