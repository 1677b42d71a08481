"""relay.local after a crash: the next attempt finds the Maildir file the dead one left (in
new/, or in cur/ where a reader moved it) and records it instead of writing a second copy;
the lease it waits for is the configured one."""

from __future__ import annotations

import mailbox
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

import relay.delivery.engine
import relay.local
from relay.admin.actions import freeze_message, unfreeze_message
from relay.intake import accept
from relay.local import deliver_due_local, deliver_local, maildir_name, maildir_path, write_maildir
from relay.models import Message, QueueEntry, Recipient, TrackingEvent
from tests.relay.test_intake import World, envelope, make_world

pytestmark = pytest.mark.django_db

DEAD = "node1/1111"
SUCCESSOR = "node1/2222"


class Killed(BaseException):
    """The relay process dying at this point: nothing after it runs."""


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def queued_for_alice(world: World) -> QueueEntry:
    (entry_id,) = accept(envelope(world.vs, ["alice@smtpadmin.test"])).local_entry_ids
    return QueueEntry.objects.get(pk=entry_id)


def killed_before_recording(entry: QueueEntry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery by ``DEAD`` that wrote its files into new/ and died before the database
    recorded them: its lease is left behind, the recipients are still open."""

    def die(*args: Any, **kwargs: Any) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(relay.delivery.engine, "record", die)
        with pytest.raises(Killed):
            deliver_local(entry.pk, DEAD)


def expire_lease(entry: QueueEntry) -> None:
    """A controllable clock: the dead worker's lease runs out now."""
    QueueEntry.objects.filter(pk=entry.pk).update(lease_until=timezone.now() - timedelta(seconds=1))


def files(world: World, address: str) -> dict[str, list[str]]:
    folder = maildir_path(world.drop, address)
    return {sub: sorted(p.name for p in (folder / sub).iterdir()) for sub in ("tmp", "new", "cur")}


def test_a_delivery_killed_after_its_file_reached_new_is_recorded_not_written_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = queued_for_alice(world)
    killed_before_recording(entry, monkeypatch)
    (left_behind,) = files(world, "alice@smtpadmin.test")["new"]
    expire_lease(entry)

    assert deliver_due_local(world.server.pk, SUCCESSOR) == 1

    assert files(world, "alice@smtpadmin.test") == {"tmp": [], "new": [left_behind], "cur": []}
    entry.refresh_from_db()
    assert (entry.state, entry.attempts) == (QueueEntry.State.DONE, 1)
    (alice,) = entry.recipients.all()
    assert alice.state == Recipient.State.DELIVERED
    (event,) = TrackingEvent.objects.filter(kind="delivered")
    assert Path(event.detail).name == left_behind


def test_a_file_a_reader_moved_to_cur_still_counts_as_delivered(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = queued_for_alice(world)
    killed_before_recording(entry, monkeypatch)
    folder = maildir_path(world.drop, "alice@smtpadmin.test")
    # A mail client opens the Maildir meanwhile: new/ to cur/, with the seen flag.
    box = mailbox.Maildir(folder, create=False)
    (key,) = box.keys()
    seen = box[key]
    seen.set_subdir("cur")
    seen.add_flag("S")
    box[key] = seen
    (in_cur,) = files(world, "alice@smtpadmin.test")["cur"]
    assert in_cur.endswith(":2,S")
    expire_lease(entry)

    assert deliver_due_local(world.server.pk, SUCCESSOR) == 1

    assert files(world, "alice@smtpadmin.test") == {"tmp": [], "new": [], "cur": [in_cur]}
    entry.refresh_from_db()
    assert entry.state == QueueEntry.State.DONE
    assert entry.recipients.get().state == Recipient.State.DELIVERED


def test_mail_frozen_after_the_relay_died_is_still_delivered_once_when_unfrozen(
    world: World, monkeypatch: pytest.MonkeyPatch, full_admin: Any
) -> None:
    """Freezing clears the dead relay's lease: what tells the next attempt to look for the
    file must outlive that."""
    entry = queued_for_alice(world)
    killed_before_recording(entry, monkeypatch)
    message = Message.objects.get(pk=entry.message_id)
    freeze_message(message, full_admin)
    unfreeze_message(message, full_admin)
    entry.refresh_from_db()
    assert (entry.lease_until, entry.state) == (None, QueueEntry.State.READY)

    assert deliver_local(entry.pk, SUCCESSOR) is True

    assert len(files(world, "alice@smtpadmin.test")["new"]) == 1


def test_a_first_attempt_does_not_search_the_mailbox_for_a_copy(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of an entry no attempt began at can be on disk; cur/ may hold thousands."""
    entry = queued_for_alice(world)

    def searched(*args: Any) -> None:
        raise AssertionError("a first attempt searched the Maildir")

    monkeypatch.setattr(relay.local, "find_delivered", searched)
    monkeypatch.setattr(relay.local, "_discard_unfinished", searched)

    assert deliver_local(entry.pk, SUCCESSOR) is True

    assert len(files(world, "alice@smtpadmin.test")["new"]) == 1


def test_a_half_written_file_a_killed_attempt_left_in_tmp_is_replaced_never_delivered(
    world: World,
) -> None:
    entry = queued_for_alice(world)
    message = Message.objects.get(pk=entry.message_id)
    name = maildir_name(
        message.received_at, message.queue_id, entry.pk, "alice@smtpadmin.test", "node1"
    )
    folder = maildir_path(world.drop, "alice@smtpadmin.test")
    for sub in ("tmp", "new", "cur"):
        (folder / sub).mkdir(parents=True)
    # What a relay killed in the middle of the write leaves: part of the message in tmp/, and
    # its claim on the entry, expired.
    (folder / "tmp" / f"{name},T4242x0badc0de").write_bytes(b"Return-Path: <sender@o")
    QueueEntry.objects.filter(pk=entry.pk).update(
        lease_owner=DEAD,
        lease_until=timezone.now() - timedelta(seconds=1),
        last_attempt_at=timezone.now() - timedelta(seconds=61),
    )

    assert deliver_local(entry.pk, SUCCESSOR) is True

    assert files(world, "alice@smtpadmin.test") == {"tmp": [], "new": [name], "cur": []}
    delivered = (folder / "new" / name).read_bytes()
    assert delivered.startswith(b"Return-Path: <sender@outside.test>\nDelivered-To: alice@")
    assert delivered.endswith(b"Numbers attached.\n")


def test_a_recovery_waits_the_configured_local_delivery_lease(
    world: World, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS = 1
    entry = queued_for_alice(world)
    before = timezone.now()
    killed_before_recording(entry, monkeypatch)
    entry.refresh_from_db()
    assert entry.lease_owner.startswith(f"{DEAD}#")
    assert entry.lease_until is not None
    assert before + timedelta(seconds=1) <= entry.lease_until
    assert entry.lease_until <= timezone.now() + timedelta(seconds=1)

    assert deliver_due_local(world.server.pk, SUCCESSOR) == 0  # the lease still holds
    wait_until(entry.lease_until)
    assert deliver_due_local(world.server.pk, SUCCESSOR) == 1

    assert len(files(world, "alice@smtpadmin.test")["new"]) == 1


def wait_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - timezone.now()).total_seconds()) + 0.05)


def test_an_attempt_whose_lease_ran_out_records_nothing_over_its_successors_delivery(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay that stalled past its lease (a hung disk) wakes up after another one
    delivered the entry: it neither writes a second copy nor records a second delivery."""
    entry = queued_for_alice(world)
    deliver_files = relay.local._deliver_files
    stalled: list[bool] = []

    def stall_then_go_on(*args: Any) -> Any:
        if not stalled:
            stalled.append(True)
            expire_lease(entry)
            assert deliver_local(entry.pk, SUCCESSOR) is True
        return deliver_files(*args)

    monkeypatch.setattr(relay.local, "_deliver_files", stall_then_go_on)

    assert deliver_local(entry.pk, DEAD) is True

    assert len(files(world, "alice@smtpadmin.test")["new"]) == 1
    assert TrackingEvent.objects.filter(kind="delivered").count() == 1
    entry.refresh_from_db()
    assert (entry.state, entry.attempts, entry.lease_owner) == (QueueEntry.State.DONE, 1, "")


def test_an_attempt_that_loses_the_race_to_link_keeps_the_winners_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "box"
    name = "1700000000.M1QABCE1A00000000.node1"
    first = write_maildir(folder, b"Subject: one\n\nbody\n", name)
    # The other attempt linked its file after this one looked and before it linked.
    not_seen: Callable[[Path, str], None] = lambda path, name: None  # noqa: E731
    monkeypatch.setattr(relay.local, "find_delivered", not_seen)

    second = write_maildir(folder, b"Subject: one\n\nbody\n", name)

    assert second == first
    assert sorted(p.name for p in (folder / "new").iterdir()) == [name]
    assert list((folder / "tmp").iterdir()) == []


def test_the_maildir_name_is_the_same_on_every_attempt_and_differs_per_entry_and_mailbox() -> None:
    received = datetime(2026, 12, 3, 9, 0, 1, 250, tzinfo=timezone.get_current_timezone())
    name = maildir_name(received, "1JVKNV1388TFGV", 7, "alice@smtpadmin.test", "node1")

    assert name == maildir_name(received, "1JVKNV1388TFGV", 7, "Alice@smtpadmin.test", "node1")
    assert name.startswith(f"{int(received.timestamp())}.M250Q1JVKNV1388TFGVE7A")
    assert name.endswith(".node1")
    others = {
        maildir_name(received, "1JVKNV1388TFGV", 8, "alice@smtpadmin.test", "node1"),
        maildir_name(received, "1JVKNV1388TFGV", 7, "alice/x@smtpadmin.test", "node1"),
        maildir_name(received, "1JVKNV1388TFGX", 7, "alice@smtpadmin.test", "node1"),
    }
    assert name not in others and len(others) == 3
    assert "/" not in maildir_name(received, "Q", 1, "a@b", "odd/host:name")
    assert ":" not in maildir_name(received, "Q", 1, "a@b", "odd/host:name")
