"""/api/v1/queues/: Queue Viewer over the API. Each queue's state is derived (Active, Ready,
Retry, Scheduled, Remote, Frozen, Disabled), its columns are aggregates of its waiting
messages, and Freeze, Unfreeze, Force Connection and Delete All Messages (with or without NDR)
change the rows, audit who did it and track the deletions."""

from __future__ import annotations

import email
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from relay.admin import actions
from relay.admin.viewer import QueueState, queue_state, with_columns
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from relay.queue.models import SYSTEM_QUEUES
from smtpadmin.models import AuditEntry, Organization
from tests.relay.queue_world import (
    LOCAL_SENDER,
    WORKER,
    Queues,
    deliver,
    entry,
    fail,
    lease,
    queue_named,
)

pytestmark = pytest.mark.django_db

API = "/api/v1/queues/"


def listed(client: APIClient, **query: Any) -> dict[str, dict[str, Any]]:
    response = client.get(API, query)
    assert response.status_code == 200, response.content
    return {row["name"]: row for row in response.json()["results"]}


def one(client: APIClient, queue: LinkQueue) -> dict[str, Any]:
    response = client.get(f"{API}{queue.pk}/")
    assert response.status_code == 200, response.content
    return dict(response.json())


# --- the list and its columns ------------------------------------------------------------


def test_it_lists_the_link_queues_and_every_system_queue(
    viewer_api: APIClient, queues: Queues
) -> None:
    queues.send(["bob@example.org"])

    rows = listed(viewer_api)

    assert set(SYSTEM_QUEUES.values()) <= set(rows)
    assert rows["example.org"]["kind"] == "connector"
    assert rows["example.org"]["source"] == "Connector Internet"
    assert rows["Messages waiting to be routed"]["kind"] == "system"
    assert rows["Messages waiting to be routed"]["message_count"] == 0


def test_the_columns_count_the_waiting_messages_their_size_and_the_oldest(
    viewer_api: APIClient, queues: Queues
) -> None:
    an_hour_ago = timezone.now() - timedelta(hours=1)
    first = queues.send(["bob@example.org"], received_at=an_hour_ago)
    second = queues.send(["carol@example.org", "dave@example.org"], body="x" * 5000)
    queues.send(["erin@example.net"])
    done = queues.send(["frank@example.org"], received_at=an_hour_ago - timedelta(hours=1))
    deliver(entry(done))

    row = listed(viewer_api)["example.org"]

    assert row["message_count"] == 2
    assert row["total_size"] == first.size + second.size
    assert row["oldest_message_at"] == an_hour_ago.isoformat().replace("+00:00", "Z")
    assert row["next_retry_at"] is None
    assert row["state"] == "ready"
    assert listed(viewer_api)["example.net"]["message_count"] == 1


def test_a_queue_whose_messages_wait_after_a_failure_is_in_retry_with_the_reason(
    viewer_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"])
    failed = fail(entry(message), "451 4.7.1 Greylisted, try again later", minutes=10)

    row = one(viewer_api, queue_named("example.org"))

    assert row["state"] == "retry"
    assert row["last_error"] == "451 4.7.1 Greylisted, try again later"
    assert row["next_retry_at"] is not None
    next_retry = failed.next_attempt_at.isoformat().replace("+00:00", "Z")
    assert row["next_retry_at"] == next_retry


def test_a_queue_with_a_due_message_is_ready_even_when_another_waits_for_retry(
    viewer_api: APIClient, queues: Queues
) -> None:
    fail(entry(queues.send(["bob@example.org"])))
    queues.send(["carol@example.org"])

    assert one(viewer_api, queue_named("example.org"))["state"] == "ready"


def test_a_queue_a_worker_is_delivering_is_active(viewer_api: APIClient, queues: Queues) -> None:
    lease(entry(queues.send(["bob@example.org"])))

    assert one(viewer_api, queue_named("example.org"))["state"] == "active"


def test_an_expired_lease_is_not_active_any_more(viewer_api: APIClient, queues: Queues) -> None:
    item = entry(queues.send(["bob@example.org"]))
    QueueEntry.objects.filter(pk=item.pk).update(
        lease_owner=WORKER, lease_until=timezone.now() - timedelta(seconds=1)
    )

    assert one(viewer_api, queue_named("example.org"))["state"] == "ready"


def test_a_frozen_queue_is_frozen_even_while_a_worker_finishes_a_batch(
    viewer_api: APIClient, queues: Queues
) -> None:
    lease(entry(queues.send(["bob@example.org"])))
    LinkQueue.objects.filter(name="example.org").update(frozen=True)

    assert one(viewer_api, queue_named("example.org"))["state"] == "frozen"


def test_disabling_outbound_mail_disables_the_outbound_queues_only(
    viewer_api: APIClient, queues: Queues
) -> None:
    queues.send(["bob@example.org", "alice@smtpadmin.test"])
    Organization.objects.filter(pk=1).update(outbound_mail_disabled=True)
    Organization.get()

    rows = listed(viewer_api)

    assert rows["example.org"]["state"] == "disabled"
    assert rows["Local delivery"]["state"] == "ready"
    assert rows["Messages waiting to be routed"]["state"] == "ready"


def test_a_connector_outside_its_schedule_makes_its_queues_scheduled(
    viewer_api: APIClient, queues: Queues
) -> None:
    queues.send(["bob@example.org"])
    queues.internet.schedule_mode = "never"
    queues.internet.save()

    assert one(viewer_api, queue_named("example.org"))["state"] == "scheduled"


def test_a_connector_that_waits_for_etrn_makes_its_queues_remote(
    viewer_api: APIClient, queues: Queues
) -> None:
    queues.send(["bob@example.org"])
    queues.internet.queue_for_remote_delivery = True
    queues.internet.save()

    assert one(viewer_api, queue_named("example.org"))["state"] == "remote"


def test_a_connector_marked_down_puts_its_waiting_queue_in_retry_with_its_reason(
    viewer_api: APIClient, queues: Queues
) -> None:
    item = entry(queues.send(["bob@example.org"]))
    QueueEntry.objects.filter(pk=item.pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    queues.internet.__class__.objects.filter(pk=queues.internet.pk).update(
        down_until=timezone.now() + timedelta(minutes=10),
        down_reason="4.4.1 Connection refused by every smart host",
    )

    row = one(viewer_api, queue_named("example.org"))

    assert row["state"] == "retry"
    assert row["last_error"] == "4.4.1 Connection refused by every smart host"


def test_the_state_of_a_plain_queue_object_is_read_from_the_database(queues: Queues) -> None:
    fail(entry(queues.send(["bob@example.org"])))
    plain = LinkQueue.objects.get(name="example.org")
    annotated = with_columns(LinkQueue.objects.filter(pk=plain.pk)).get()

    assert queue_state(plain) == queue_state(annotated) == QueueState.RETRY


def test_the_list_needs_the_same_number_of_queries_for_many_queues(
    viewer_api: APIClient, queues: Queues
) -> None:
    queues.send(["bob@example.org"])
    listed(viewer_api)  # creates the system queues

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            listed(viewer_api)
        return len(queries)

    few = count()
    for n in range(8):
        queues.send([f"user@domain{n}.example"])
    assert count() == few


def test_queues_can_be_filtered_searched_and_sorted(viewer_api: APIClient, queues: Queues) -> None:
    queues.send(["bob@example.org", "carol@example.org"])
    queues.send(["erin@example.net"])

    assert set(listed(viewer_api, kind="connector")) == {"example.org", "example.net"}
    assert set(listed(viewer_api, search="example.net")) == {"example.net"}
    response = viewer_api.get(API, {"ordering": "-message_count", "kind": "connector"})
    assert [row["name"] for row in response.json()["results"]] == ["example.org", "example.net"]


# --- freeze, unfreeze, force connection --------------------------------------------------


def test_freeze_and_unfreeze_change_the_state_and_are_audited_once(
    admin_api: APIClient, queues: Queues
) -> None:
    queues.send(["bob@example.org"])
    queue = queue_named("example.org")

    frozen = admin_api.post(f"{API}{queue.pk}/freeze/")
    again = admin_api.post(f"{API}{queue.pk}/freeze/")

    assert frozen.status_code == again.status_code == 200
    assert frozen.json()["state"] == "frozen" and frozen.json()["frozen"] is True
    (audit,) = AuditEntry.objects.filter(object_type="Link Queue")
    assert (audit.username, audit.field, audit.old_value, audit.new_value) == (
        "adam-admin",
        "frozen",
        "no",
        "yes",
    )
    thawed = admin_api.post(f"{API}{queue.pk}/unfreeze/")
    assert thawed.status_code == 200 and thawed.json()["state"] == "ready"
    assert AuditEntry.objects.filter(object_type="Link Queue").count() == 2


def test_the_action_paths_answer_without_the_trailing_slash_too(
    admin_api: APIClient, queues: Queues
) -> None:
    queues.send(["bob@example.org"])
    queue = queue_named("example.org")

    response = admin_api.post(f"{API}{queue.pk}/freeze")

    assert response.status_code == 200
    assert LinkQueue.objects.get(pk=queue.pk).frozen


def test_force_connection_makes_every_waiting_message_due_now(
    admin_api: APIClient, queues: Queues
) -> None:
    first = fail(entry(queues.send(["bob@example.org"])), minutes=30)
    second = fail(entry(queues.send(["carol@example.org"])), minutes=60)
    queue = queue_named("example.org")
    before = timezone.now()

    response = admin_api.post(f"{API}{queue.pk}/retry/")

    assert response.status_code == 200
    assert response.json()["state"] == "ready"
    for item in (first, second):
        item.refresh_from_db()
        assert item.next_attempt_at <= timezone.now()
        assert item.next_attempt_at >= before
        assert item.state == QueueEntry.State.RETRY  # still a retry, now due
    assert AuditEntry.objects.get(object_type="Link Queue").new_value == "force connection"


# --- delete all messages -----------------------------------------------------------------


def test_delete_all_without_ndr_deletes_this_queues_recipients_only(
    admin_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org", "erin@example.net"])
    queue = queue_named("example.org")

    response = admin_api.post(f"{API}{queue.pk}/delete-messages/", {"ndr": False}, format="json")

    assert response.status_code == 200
    assert response.json() == {
        "messages": 1,
        "recipients": 1,
        "ndr": False,
        "dsns": [],
        "dsn_errors": 0,
    }
    bob = message.recipients.get(address="bob@example.org")
    assert (bob.state, bob.status) == (Recipient.State.DELETED, "4.3.2")
    assert message.recipients.get(address="erin@example.net").state == Recipient.State.PENDING
    assert entry(message, "example.org").state == QueueEntry.State.DONE
    assert entry(message, "example.net").state == QueueEntry.State.READY
    assert one(admin_api, queue)["message_count"] == 0
    assert not Message.objects.filter(system=True).exists()


def test_a_deletion_is_tracked_per_recipient_with_the_administrator_and_audited(
    admin_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org", "carol@example.org"])
    queue = queue_named("example.org")

    admin_api.post(f"{API}{queue.pk}/delete-messages/", {}, format="json")

    events = TrackingEvent.objects.filter(kind=TrackingEvent.Kind.DELETED).order_by("recipient")
    assert [(e.recipient, e.by, e.queue_id) for e in events] == [
        ("bob@example.org", "adam-admin", message.queue_id),
        ("carol@example.org", "adam-admin", message.queue_id),
    ]
    assert all(e.queue_name == "example.org" and e.detail == "without NDR" for e in events)
    audit = AuditEntry.objects.get(object_type="Link Queue")
    assert audit.new_value == "deleted without NDR"
    assert audit.old_value == "1 message(s), 2 recipient(s)"


def test_delete_all_with_ndr_sends_each_sender_one_report_saying_an_administrator_deleted_it(
    admin_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org", "carol@example.org"], sender=LOCAL_SENDER)
    queue = queue_named("example.org")

    response = admin_api.post(f"{API}{queue.pk}/delete-messages/", {"ndr": True}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["messages"], body["recipients"], body["ndr"]) == (1, 2, True)
    (dsn_id,) = body["dsns"]
    dsn = Message.objects.get(queue_id=dsn_id)
    assert dsn.system and dsn.sender == ""
    assert list(dsn.recipients.values_list("address", flat=True)) == [LOCAL_SENDER]
    report = email.message_from_bytes(dsn.raw)
    assert report.get_content_type() == "multipart/report"
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Status: 4.3.2" in text and "Action: failed" in text
    assert "bob@example.org" in text and "carol@example.org" in text
    assert all(r.dsn_sent_at is not None for r in message.recipients.all())


def test_deleting_what_a_worker_is_sending_takes_its_lease_so_it_cannot_revive_the_entry(
    admin_api: APIClient, queues: Queues
) -> None:
    item = lease(entry(queues.send(["bob@example.org"])))

    admin_api.post(f"{API}{item.queue_id}/delete-messages/", {"ndr": False}, format="json")

    assert item.leased_to(WORKER).update(state=QueueEntry.State.RETRY) == 0
    assert QueueEntry.objects.get(pk=item.pk).state == QueueEntry.State.DONE


def test_deleting_an_empty_queue_changes_nothing_and_audits_nothing(
    admin_api: APIClient, queues: Queues
) -> None:
    deliver(entry(queues.send(["bob@example.org"])))

    response = admin_api.post(
        f"{API}{queue_named('example.org').pk}/delete-messages/", {}, format="json"
    )

    assert response.json()["messages"] == 0
    assert not AuditEntry.objects.exists()
    assert not TrackingEvent.objects.filter(kind=TrackingEvent.Kind.DELETED).exists()


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["999999/", "abc/", "999999/freeze/", "abc/freeze/"])
def test_unknown_queues_are_404(admin_api: APIClient, queues: Queues, path: str) -> None:
    method = admin_api.post if "freeze" in path else admin_api.get
    assert method(f"{API}{path}").status_code == 404


@pytest.mark.parametrize(
    "payload",
    [{"ndr": "maybe"}, {"ndr": None}, {"nrd": True}, ["ndr"], {"ndr": "\x00"}],
)
def test_odd_delete_payloads_are_400_and_delete_nothing(
    admin_api: APIClient, queues: Queues, payload: Any
) -> None:
    message = queues.send(["bob@example.org"])

    response = admin_api.post(
        f"{API}{queue_named('example.org').pk}/delete-messages/", payload, format="json"
    )

    assert response.status_code == 400, response.content
    assert message.recipients.get().state == Recipient.State.PENDING


@pytest.mark.parametrize("action", ["freeze", "unfreeze", "retry", "delete-messages"])
def test_a_view_only_administrator_may_read_but_not_act(
    viewer_api: APIClient, queues: Queues, action: str
) -> None:
    message = queues.send(["bob@example.org"])
    queue = queue_named("example.org")

    assert viewer_api.get(f"{API}{queue.pk}/").status_code == 200
    response = viewer_api.post(f"{API}{queue.pk}/{action}/", {}, format="json")

    assert response.status_code == 403
    assert not LinkQueue.objects.get(pk=queue.pk).frozen
    assert message.recipients.get().state == Recipient.State.PENDING
    assert not AuditEntry.objects.exists()


def test_actions_called_directly_with_no_user_are_recorded_as_system(queues: Queues) -> None:
    queues.send(["bob@example.org"])
    queue = queue_named("example.org")

    assert actions.freeze_queue(queue, None) is True
    assert actions.freeze_queue(queue, None) is False
    assert AuditEntry.objects.get().username == "system"
