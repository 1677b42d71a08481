"""relay.local: local recipients into Maildirs, with leases, retries and tracking."""

from __future__ import annotations

import mailbox
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

import relay.local
from relay.intake import Accepted, accept
from relay.local import (
    deliver_due_local,
    deliver_local,
    maildir_path,
    path_component,
    unique_name,
    write_maildir,
)
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from servers.models import Mailbox, RoutingGroup, Server, VirtualServer
from tests.relay.test_intake import CONTENT, World, add_mailbox, envelope, make_world, set_tracking

pytestmark = pytest.mark.django_db

WORKER = "node1/4242"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def accepted_for(world: World, recipients: list[str], **fields: Any) -> Accepted:
    return accept(envelope(world.vs, recipients, **fields))


def local_entry(accepted: Accepted) -> QueueEntry:
    (entry_id,) = accepted.local_entry_ids
    return QueueEntry.objects.get(pk=entry_id)


def messages_in(world: World, address: str) -> list[mailbox.MaildirMessage]:
    path = maildir_path(world.drop, address)
    if not path.is_dir():
        return []
    return list(mailbox.Maildir(path, factory=None, create=False))


def make_due(entry: QueueEntry) -> None:
    """A controllable clock: move the retry time into the past instead of waiting."""
    QueueEntry.objects.filter(pk=entry.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


# --- Maildir -----------------------------------------------------------------------------


def test_it_delivers_into_the_mailboxs_maildir_which_pythons_mailbox_reads_back(
    world: World,
) -> None:
    accepted = accepted_for(world, ["alice@smtpadmin.test"])

    assert deliver_local(local_entry(accepted).pk, WORKER) is True

    (message,) = messages_in(world, "alice@smtpadmin.test")
    assert message.get_subdir() == "new"
    assert message["Subject"] == "Quarterly report"
    assert message["Message-ID"] == "<report.1@outside.test>"
    assert message["Delivered-To"] == "alice@smtpadmin.test"
    assert message["Return-Path"] == "<sender@outside.test>"
    assert accepted.queue_id in message.get_all("Received", [""])[0]
    assert message.get_payload() == "Numbers attached.\n"


def test_the_maildir_lies_under_the_servers_drop_directory_by_domain_and_local_part(
    world: World,
) -> None:
    deliver_local(local_entry(accepted_for(world, ["alice@smtpadmin.test"])).pk, WORKER)

    maildir = world.drop / "smtpadmin.test" / "alice"
    assert sorted(p.name for p in maildir.iterdir()) == ["cur", "new", "tmp"]
    assert list((maildir / "tmp").iterdir()) == []
    (delivered,) = (maildir / "new").iterdir()
    assert stat.S_IMODE(delivered.stat().st_mode) == 0o600


def test_it_names_the_file_time_then_unique_part_then_host_as_the_maildir_spec_says(
    world: World,
) -> None:
    deliver_local(local_entry(accepted_for(world, ["alice@smtpadmin.test"])).pk, WORKER)

    (delivered,) = (world.drop / "smtpadmin.test" / "alice" / "new").iterdir()
    seconds, unique, host = delivered.name.split(".", 2)
    assert abs(int(seconds) - timezone.now().timestamp()) < 60
    # Unique per message, queue entry and mailbox, and the same on every attempt.
    assert re.fullmatch(r"M\d+Q[0-9A-Z]+E\d+A[0-9a-f]{8}", unique)
    assert host == "node1"


def test_unique_names_do_not_repeat_within_one_process_and_microsecond() -> None:
    names = {unique_name(now=1_700_000_000.123456) for _ in range(5000)}
    assert len(names) == 5000


def test_it_writes_the_file_with_lf_line_endings_and_the_message_bytes_unchanged(
    world: World,
) -> None:
    content = b"Subject: bytes\r\n\r\nLine one\r\n\xff\xfe raw 8-bit\r\n"
    deliver_local(
        local_entry(accepted_for(world, ["alice@smtpadmin.test"], content=content)).pk, WORKER
    )

    (delivered,) = (world.drop / "smtpadmin.test" / "alice" / "new").iterdir()
    data = delivered.read_bytes()
    assert b"\r" not in data
    assert data.startswith(
        b"Return-Path: <sender@outside.test>\nDelivered-To: alice@smtpadmin.test\n"
    )
    assert data.endswith(b"\n\nLine one\n\xff\xfe raw 8-bit\n")


def test_each_local_recipient_of_a_message_gets_a_file_of_its_own(world: World) -> None:
    add_mailbox("carol@smtpadmin.test")
    accepted = accepted_for(
        world, ["alice@smtpadmin.test", "bob@smtpadmin.test", "carol@smtpadmin.test"]
    )

    deliver_local(local_entry(accepted).pk, WORKER)

    for address in ("alice@smtpadmin.test", "bob@smtpadmin.test", "carol@smtpadmin.test"):
        (message,) = messages_in(world, address)
        assert message["Delivered-To"] == address
        assert message["Subject"] == "Quarterly report"


def test_one_mailbox_addressed_in_two_spellings_gets_one_file(world: World) -> None:
    accepted = accepted_for(world, ["alice@smtpadmin.test", "Alice@smtpadmin.test"])

    deliver_local(local_entry(accepted).pk, WORKER)

    assert len(messages_in(world, "alice@smtpadmin.test")) == 1
    states = Recipient.objects.filter(message_id=accepted.message_pk).values_list(
        "state", flat=True
    )
    assert list(states) == ["delivered", "delivered"]


def test_it_records_delivered_recipients_a_done_entry_and_delivered_events(
    world: World,
) -> None:
    accepted = accepted_for(world, ["alice@smtpadmin.test", "bob@smtpadmin.test"])
    entry = local_entry(accepted)

    deliver_local(entry.pk, WORKER)

    entry.refresh_from_db()
    assert entry.state == QueueEntry.State.DONE
    assert entry.attempts == 1
    assert entry.completed_at is not None
    assert (entry.lease_owner, entry.lease_until) == ("", None)
    for recipient in entry.recipients.all():
        assert recipient.state == Recipient.State.DELIVERED
        assert recipient.status == "2.0.0"
        assert recipient.last_response.startswith("250 2.0.0")
        assert recipient.completed_at is not None
    delivered = TrackingEvent.objects.filter(queue_id=accepted.queue_id, kind="delivered")
    assert sorted(delivered.values_list("recipient", flat=True)) == [
        "alice@smtpadmin.test",
        "bob@smtpadmin.test",
    ]
    event = delivered.get(recipient="alice@smtpadmin.test")
    assert event.server_name == "node1"
    assert event.message_id == "<report.1@outside.test>"
    assert event.queue_name == "Local delivery"
    assert Path(event.detail).parent.name == "new"


def test_it_still_delivers_but_tracks_nothing_when_tracking_is_off(world: World) -> None:
    accepted = accepted_for(world, ["alice@smtpadmin.test"])
    set_tracking(enabled=False)

    deliver_local(local_entry(accepted).pk, WORKER)

    assert len(messages_in(world, "alice@smtpadmin.test")) == 1
    assert not TrackingEvent.objects.filter(kind="delivered").exists()


# --- mailboxes that went away ------------------------------------------------------------


def test_a_mailbox_disabled_after_rcpt_fails_its_recipient_with_5_1_1(world: World) -> None:
    accepted = accepted_for(world, ["alice@smtpadmin.test", "bob@smtpadmin.test"])
    Mailbox.objects.filter(address="bob@smtpadmin.test").update(enabled=False)
    entry = local_entry(accepted)

    deliver_local(entry.pk, WORKER)

    bob = entry.recipients.get(address="bob@smtpadmin.test")
    assert bob.state == Recipient.State.FAILED
    assert bob.status == "5.1.1"
    assert bob.last_response.startswith("550 5.1.1 <bob@smtpadmin.test>")
    assert messages_in(world, "bob@smtpadmin.test") == []
    assert len(messages_in(world, "alice@smtpadmin.test")) == 1
    entry.refresh_from_db()
    assert entry.state == QueueEntry.State.DONE
    failed = TrackingEvent.objects.get(queue_id=accepted.queue_id, kind="failed")
    assert failed.recipient == "bob@smtpadmin.test"
    assert "5.1.1" in failed.response


def test_a_mailbox_deleted_after_rcpt_fails_its_recipient_with_5_1_1(world: World) -> None:
    accepted = accepted_for(world, ["alice@smtpadmin.test"])
    Mailbox.objects.filter(address="alice@smtpadmin.test").delete()
    entry = local_entry(accepted)

    deliver_local(entry.pk, WORKER)

    (alice,) = entry.recipients.all()
    assert (alice.state, alice.status) == (Recipient.State.FAILED, "5.1.1")
    entry.refresh_from_db()
    assert entry.state == QueueEntry.State.DONE
    assert not (world.drop / "smtpadmin.test" / "alice").exists()


def test_a_local_sender_gets_an_ndr_for_a_mailbox_gone_since_rcpt(world: World) -> None:
    accepted = accepted_for(world, ["bob@smtpadmin.test"], sender="alice@smtpadmin.test")
    Mailbox.objects.filter(address="bob@smtpadmin.test").delete()

    deliver_local(local_entry(accepted).pk, WORKER)

    ndr = Message.objects.exclude(queue_id=accepted.queue_id).get()
    assert ndr.sender == "" and ndr.system
    (to_alice,) = ndr.recipients.all()
    assert to_alice.address == "alice@smtpadmin.test" and to_alice.entry_id is not None
    deliver_local(to_alice.entry_id, WORKER)
    (report,) = messages_in(world, "alice@smtpadmin.test")
    assert report.get_content_type() == "multipart/report"
    assert "5.1.1" in report.as_string()


def test_no_ndr_for_a_null_sender_when_its_mailbox_is_gone(world: World) -> None:
    accepted = accepted_for(world, ["bob@smtpadmin.test"], sender="")
    Mailbox.objects.filter(address="bob@smtpadmin.test").delete()

    deliver_local(local_entry(accepted).pk, WORKER)

    assert Message.objects.count() == 1


# --- file-system failures ----------------------------------------------------------------


def _writable(path: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Callable[[], None]]]:
    """Makes a directory refuse writes, even for root (who ignores permission bits: then the
    immutable attribute does it). Returns the undo, which also runs at the end of the test."""
    undos: list[Callable[[], None]] = []

    def make(path: Path) -> Callable[[], None]:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        immutable = False
        if _writable(path) and shutil.which("chattr"):
            done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
            immutable = done.returncode == 0

        def undo() -> None:
            if immutable:
                subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=True)
            path.chmod(0o755)

        undos.append(undo)
        if _writable(path):
            pytest.skip("no way to make a directory read-only for this user here")
        return undo

    yield make
    for undo in reversed(undos):
        undo()


def test_a_read_only_drop_directory_leaves_the_entry_in_retry_not_lost(
    world: World, read_only: Callable[[Path], Callable[[], None]]
) -> None:
    accepted = accepted_for(world, ["alice@smtpadmin.test"])
    entry = local_entry(accepted)
    read_only(world.drop)
    before = timezone.now()

    assert deliver_local(entry.pk, WORKER) is True

    entry.refresh_from_db()
    assert entry.state == QueueEntry.State.RETRY
    assert entry.attempts == 1
    assert entry.last_response.startswith("451 4.3.0 Local delivery failed")
    assert (entry.lease_owner, entry.lease_until) == ("", None)
    first = timedelta(minutes=world.vs.retry_first_minutes)
    assert before + first <= entry.next_attempt_at <= timezone.now() + first
    (alice,) = entry.recipients.all()
    assert alice.state == Recipient.State.DEFERRED
    assert alice.last_response.startswith("451 4.3.0")
    assert TrackingEvent.objects.filter(queue_id=accepted.queue_id, kind="deferred").exists()


def test_an_entry_left_in_retry_is_delivered_once_the_file_system_is_back(
    world: World, read_only: Callable[[Path], Callable[[], None]]
) -> None:
    entry = local_entry(accepted_for(world, ["alice@smtpadmin.test"]))
    writable_again = read_only(world.drop)
    deliver_local(entry.pk, WORKER)
    writable_again()

    assert deliver_due_local(world.server.pk, WORKER) == 0  # not due before its retry time
    make_due(entry)
    assert deliver_due_local(world.server.pk, WORKER) == 1

    entry.refresh_from_db()
    assert (entry.state, entry.attempts) == (QueueEntry.State.DONE, 2)
    assert len(messages_in(world, "alice@smtpadmin.test")) == 1


def test_a_drop_directory_blocked_by_a_file_leaves_the_entry_in_retry(world: World) -> None:
    world.drop.mkdir(parents=True)
    (world.drop / "smtpadmin.test").write_text("not a directory")
    entry = local_entry(accepted_for(world, ["alice@smtpadmin.test", "bob@smtpadmin.test"]))

    deliver_local(entry.pk, WORKER)

    entry.refresh_from_db()
    assert entry.state == QueueEntry.State.RETRY
    assert set(entry.recipients.values_list("state", flat=True)) == {"deferred"}


def test_a_second_failure_waits_the_second_retry_interval(world: World) -> None:
    world.vs.retry_first_minutes = 1
    world.vs.retry_second_minutes = 7
    world.vs.save()
    world.drop.mkdir(parents=True)
    (world.drop / "smtpadmin.test").write_text("not a directory")
    entry = local_entry(accepted_for(world, ["alice@smtpadmin.test"]))
    deliver_local(entry.pk, WORKER)
    make_due(entry)
    before = timezone.now()

    deliver_local(entry.pk, WORKER)

    entry.refresh_from_db()
    assert entry.attempts == 2
    assert before + timedelta(minutes=7) <= entry.next_attempt_at
    assert entry.next_attempt_at <= timezone.now() + timedelta(minutes=7)


def test_only_the_recipient_whose_maildir_failed_is_retried(world: World) -> None:
    (world.drop / "smtpadmin.test").mkdir(parents=True)
    (world.drop / "smtpadmin.test" / "bob").write_text("not a directory")
    entry = local_entry(accepted_for(world, ["alice@smtpadmin.test", "bob@smtpadmin.test"]))

    deliver_local(entry.pk, WORKER)

    states = dict(entry.recipients.values_list("address", "state"))
    assert states == {"alice@smtpadmin.test": "delivered", "bob@smtpadmin.test": "deferred"}
    (world.drop / "smtpadmin.test" / "bob").unlink()
    make_due(entry)
    deliver_local(entry.pk, WORKER)
    assert len(messages_in(world, "alice@smtpadmin.test")) == 1  # not delivered twice
    assert len(messages_in(world, "bob@smtpadmin.test")) == 1


def test_write_maildir_leaves_nothing_in_tmp_when_the_final_step_fails(tmp_path: Path) -> None:
    maildir = tmp_path / "box"
    for sub in ("tmp", "cur"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new").write_text("not a directory")

    with pytest.raises(OSError):
        write_maildir(maildir, b"Subject: x\n\nbody\n")

    assert list((maildir / "tmp").iterdir()) == []


# --- claiming ----------------------------------------------------------------------------


def test_it_does_not_deliver_an_entry_another_worker_holds(world: World) -> None:
    entry = local_entry(accepted_for(world, ["alice@smtpadmin.test"]))
    assert QueueEntry.claim(entry.pk, "node2/99", seconds=300)

    assert deliver_local(entry.pk, WORKER) is False

    assert messages_in(world, "alice@smtpadmin.test") == []
    entry.refresh_from_db()
    assert entry.lease_owner == "node2/99"


def test_it_delivers_an_entry_whose_worker_died_once_the_lease_expires(world: World) -> None:
    entry = local_entry(accepted_for(world, ["alice@smtpadmin.test"]))
    assert QueueEntry.claim(entry.pk, "node2/99", seconds=300)
    QueueEntry.objects.filter(pk=entry.pk).update(lease_until=timezone.now() - timedelta(seconds=1))

    assert deliver_due_local(world.server.pk, WORKER) == 1

    assert len(messages_in(world, "alice@smtpadmin.test")) == 1
    entry.refresh_from_db()
    assert entry.state == QueueEntry.State.DONE


def test_it_delivers_an_entry_only_once(world: World) -> None:
    entry = local_entry(accepted_for(world, ["alice@smtpadmin.test"]))

    assert deliver_local(entry.pk, WORKER) is True
    assert deliver_local(entry.pk, WORKER) is False
    assert deliver_due_local(world.server.pk, WORKER) == 0

    assert len(messages_in(world, "alice@smtpadmin.test")) == 1


def test_it_does_not_deliver_a_frozen_entry_or_from_a_frozen_queue(world: World) -> None:
    frozen_entry = local_entry(accepted_for(world, ["alice@smtpadmin.test"]))
    QueueEntry.objects.filter(pk=frozen_entry.pk).update(state=QueueEntry.State.FROZEN)
    assert deliver_local(frozen_entry.pk, WORKER) is False

    other = local_entry(accepted_for(world, ["bob@smtpadmin.test"]))
    LinkQueue.objects.filter(pk=other.queue_id).update(frozen=True)
    assert deliver_local(other.pk, WORKER) is False
    assert deliver_due_local(world.server.pk, WORKER) == 0

    other.refresh_from_db()
    assert other.lease_until is None  # the lease taken before the queue check is given back
    assert messages_in(world, "alice@smtpadmin.test") == []
    assert messages_in(world, "bob@smtpadmin.test") == []


def test_it_leaves_an_entry_for_a_remote_next_hop_to_remote_delivery(world: World) -> None:
    accepted = accepted_for(world, ["someone@one.test"])
    (entry,) = QueueEntry.objects.filter(message_id=accepted.message_pk)

    assert deliver_local(entry.pk, WORKER) is False

    entry.refresh_from_db()
    assert (entry.state, entry.lease_until, entry.attempts) == (QueueEntry.State.READY, None, 0)


def test_deliver_due_local_takes_only_this_servers_entries_up_to_the_limit(
    world: World, tmp_path: Path
) -> None:
    other_server = Server.objects.create(
        name="node2",
        routing_group=RoutingGroup.first(),
        last_seen=timezone.now(),
        drop_directory=str(tmp_path / "drop2"),
    )
    other_vs = VirtualServer.objects.create(server=other_server, name="Other", port=2526)
    ours = [local_entry(accepted_for(world, ["alice@smtpadmin.test"])) for _ in range(3)]
    theirs = local_entry(accept(envelope(other_vs, ["bob@smtpadmin.test"])))

    assert deliver_due_local(world.server.pk, WORKER, limit=2) == 2
    assert deliver_due_local(world.server.pk, WORKER, limit=2) == 1
    assert deliver_due_local(world.server.pk, WORKER, limit=2) == 0

    assert len(messages_in(world, "alice@smtpadmin.test")) == 3
    assert {e.state for e in QueueEntry.objects.filter(pk__in=[e.pk for e in ours])} == {"done"}
    theirs.refresh_from_db()
    assert theirs.state == QueueEntry.State.READY
    assert not (tmp_path / "drop2").exists()
    assert deliver_due_local(other_server.pk, "node2/1") == 1
    assert (tmp_path / "drop2" / "smtpadmin.test" / "bob" / "new").is_dir()


# --- paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice", "alice"),
        ("team/sales", "team_sales"),
        ("..", "__"),
        ("a..b", "a__b"),
        (".hidden", "_.hidden"),
        ("nul\x00byte", "nul_byte"),
        ("back\\slash", "back_slash"),
        ("", "_"),
    ],
)
def test_a_local_part_becomes_one_safe_directory_name(text: str, expected: str) -> None:
    assert path_component(text) == expected


def test_a_local_part_with_a_slash_stays_inside_the_drop_directory(world: World) -> None:
    add_mailbox("team/sales@smtpadmin.test")
    entry = local_entry(accepted_for(world, ["team/sales@smtpadmin.test"]))

    deliver_local(entry.pk, WORKER)

    maildir = world.drop / "smtpadmin.test" / "team_sales"
    assert len(list(mailbox.Maildir(maildir, create=False))) == 1
    assert not (world.drop / "smtpadmin.test" / "team").exists()


def test_the_stored_message_is_what_the_maildir_file_holds(world: World) -> None:
    accepted = accepted_for(world, ["alice@smtpadmin.test"])
    deliver_local(local_entry(accepted).pk, WORKER)

    (delivered,) = (world.drop / "smtpadmin.test" / "alice" / "new").iterdir()
    assert delivered.read_bytes().endswith(CONTENT.replace(b"\r\n", b"\n"))


def test_a_new_maildir_gets_its_new_folder_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader that sees new/ must find cur/ and tmp/ as well (it lists both).
    created: list[str] = []
    make = relay.local.private_directory

    def recorded(path: Path) -> Any:
        created.append(path.name)
        return make(path)

    monkeypatch.setattr(relay.local, "private_directory", recorded)
    relay.local.ensure_maildir(tmp_path / "alice")

    assert created[-1] == "new"
    assert sorted(created) == ["cur", "new", "tmp"]
