"""The queue commands for the shell: mailq, queuestats, flushqueue, delmsg. They act through the
console's functions (audited as --as), refuse without an Administrator, and exit 1 with a clear
line for what does not exist."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from relay.queue.models import LinkQueue, Message, QueueEntry, Recipient
from smtpadmin.models import AuditEntry
from smtpadmin.roles import Role
from tests.relay.world import World
from tests.smtpadmin.test_api_permissions import make_queued_message, make_user

pytestmark = pytest.mark.django_db


def run(*arguments: str) -> str:
    out = io.StringIO()
    call_command(*arguments, stdout=out)
    return out.getvalue()


@pytest.fixture
def admin_user() -> object:
    return make_user("olga", Role.ADMINISTRATOR)


def test_mailq_on_an_empty_queue() -> None:
    assert run("mailq").strip() == "Mail queue is empty"


def test_mailq_lists_each_message_with_its_waiting_recipients_and_last_reply() -> None:
    one = make_queued_message("example.net")
    two = make_queued_message("example.org")
    QueueEntry.objects.filter(message=two).update(
        state=QueueEntry.State.RETRY, last_response="451 4.7.1 Greylisted,\r\n try later"
    )
    frozen = make_queued_message("example.org")
    QueueEntry.objects.filter(message=frozen).update(state=QueueEntry.State.FROZEN)
    active = make_queued_message("example.org")
    QueueEntry.objects.filter(message=active).update(
        lease_owner="w1", lease_until=timezone.now() + timedelta(minutes=5)
    )
    done = make_queued_message("example.com")
    QueueEntry.objects.filter(message=done).update(state=QueueEntry.State.DONE)
    Recipient.objects.filter(message=done).update(state=Recipient.State.DELIVERED)

    text = run("mailq")
    lines = text.splitlines()
    assert lines[0].startswith("-Queue ID-")
    assert any(
        line.startswith(f"{one.queue_id} ") and "someone@example.com" in line for line in lines
    )
    assert f"{frozen.queue_id}!" in text and f"{active.queue_id}*" in text
    assert "(451 4.7.1 Greylisted, try later)" in text  # folded onto one line
    assert "friend@example.org" in text and "[example.net]" in text
    assert done.queue_id not in text
    assert lines[-1] == "-- 1 Kbytes in 4 Requests."
    only = run("mailq", "--queue", "example.net")
    assert one.queue_id in only and two.queue_id not in only


def test_queuestats_lists_queues_with_mail_and_totals() -> None:
    make_queued_message("example.net")
    make_queued_message("example.net")
    LinkQueue.objects.create(
        key="dns:empty.test", kind="dns", name="empty.test", domain="empty.test"
    )
    lines = run("queuestats").splitlines()
    assert lines[0].split() == [
        "ID",
        "MESSAGES",
        "KBYTES",
        "STATE",
        "OLDEST",
        "RETRY",
        "IN",
        "QUEUE",
    ]
    (row,) = [line for line in lines[1:] if line.endswith("example.net")]
    assert row.split()[1] == "2"
    assert not any(line.endswith("empty.test") for line in lines)
    assert lines[-1].split()[:2] == ["total", "2"]
    assert any(line.endswith("empty.test") for line in run("queuestats", "--all").splitlines())


def test_changes_need_an_administrator_named_with_as() -> None:
    make_queued_message("example.net")
    with pytest.raises(CommandError, match="--as USERNAME"):
        run("flushqueue", "example.net")
    make_user("vera", Role.VIEW_ONLY)
    with pytest.raises(CommandError, match="not an Administrator"):
        run("flushqueue", "example.net", "--as", "vera")
    with pytest.raises(CommandError, match="No active user"):
        run("delmsg", "--all", "--as", "nobody")


def test_flushqueue_makes_waiting_mail_due_now_and_is_audited(admin_user: object) -> None:
    message = make_queued_message("example.net")
    later = timezone.now() + timedelta(hours=1)
    QueueEntry.objects.filter(message=message).update(
        state=QueueEntry.State.RETRY, next_attempt_at=later
    )
    text = run("flushqueue", "example.net", "--as", "olga")
    assert "example.net: forced a connection (1 message(s) made due now)" in text
    entry = QueueEntry.objects.get(message=message)
    assert entry.next_attempt_at <= timezone.now()
    audit = AuditEntry.objects.latest("pk")
    assert audit.username == "olga" and "force connection" in audit.new_value
    with pytest.raises(CommandError, match=r"No queue 'nowhere\.test'"):
        run("flushqueue", "nowhere.test", "--as", "olga")


def test_flushqueue_without_a_queue_forces_every_queue_with_mail(admin_user: object) -> None:
    make_queued_message("example.net")
    make_queued_message("example.org")
    text = run("flushqueue", "--as", "olga")
    assert "example.net: forced" in text and "example.org: forced" in text


def test_delmsg_deletes_by_queue_id_and_reports_unknown_ids(admin_user: object) -> None:
    keep = make_queued_message("example.net")
    gone = make_queued_message("example.net")
    with pytest.raises(CommandError, match="no message with queue id NOSUCHID"):
        run("delmsg", gone.queue_id, "NOSUCHID", "--as", "olga")
    assert Recipient.objects.get(message=gone).state == Recipient.State.DELETED
    assert Recipient.objects.get(message=keep).state == Recipient.State.PENDING
    assert AuditEntry.objects.filter(username="olga").exists()


def test_delmsg_all_of_one_queue_with_ndr(world: World, admin_user: object) -> None:
    net = make_queued_message("example.net")
    org = make_queued_message("example.org")
    text = run("delmsg", "--all", "--queue", "example.org", "--ndr", "--as", "olga")
    assert text.startswith("deleted 1 message(s), 1 recipient(s), with NDR (1 NDR(s) queued)")
    assert Recipient.objects.get(message=org).state == Recipient.State.DELETED
    assert Recipient.objects.get(message=net).state == Recipient.State.PENDING
    ndr = Message.objects.filter(system=True).get()
    assert ndr.recipients.get().address == "someone@example.com"
    with pytest.raises(CommandError, match="ids or --all"):
        run("delmsg", "--as", "olga")
