"""/api/v1/messages/: Find Messages over the API (sender, recipient, domain, subject, state,
age, size, queue), a message's properties and its .eml, Freeze / Unfreeze / Delete one by one,
and the same actions in bulk on everything a filter finds (messages/bulk)."""

from __future__ import annotations

import email
import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from relay.models import Message, QueueEntry, Recipient, TrackingEvent
from smtpadmin.models import AuditEntry
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

API = "/api/v1/messages/"


def found(client: APIClient, **query: Any) -> list[str]:
    """The queue ids the list answers for this query (oldest first)."""
    response = client.get(API, {**query, "ordering": "received_at"})
    assert response.status_code == 200, response.content
    return [row["queue_id"] for row in response.json()["results"]]


def state_of(client: APIClient, message: Message) -> str:
    return str(client.get(f"{API}{message.pk}/").json()["state"])


# --- the list ----------------------------------------------------------------------------


def test_the_list_gives_the_contract_fields_with_each_recipients_state(
    viewer_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org", "alice@smtpadmin.test"])

    (row,) = viewer_api.get(API).json()["results"]

    assert row["id"] == message.pk
    assert row["sender"] == "sender@outside.test"
    assert row["state"] == "ready"
    assert row["queue_id"] == message.queue_id
    recipients = {r["address"]: r for r in row["recipients"]}
    assert recipients["bob@example.org"]["state"] == "pending"
    assert recipients["bob@example.org"]["queue"] == queue_named("example.org").pk
    assert recipients["alice@smtpadmin.test"]["queue"] == queue_named("Local delivery").pk
    assert row["expires_at"] is not None


def test_a_messages_state_follows_its_entries_and_then_its_recipients(
    viewer_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org", "erin@example.net"])
    org, net = entry(message, "example.org"), entry(message, "example.net")
    assert state_of(viewer_api, message) == "ready"
    fail(org)
    assert state_of(viewer_api, message) == "retry"
    lease(net)
    assert state_of(viewer_api, message) == "active"
    QueueEntry.objects.filter(pk=org.pk).update(state=QueueEntry.State.FROZEN)
    assert state_of(viewer_api, message) == "frozen"
    deliver(org)
    deliver(net)
    assert state_of(viewer_api, message) == "delivered"
    Recipient.objects.filter(address="erin@example.net").update(state=Recipient.State.FAILED)
    assert state_of(viewer_api, message) == "completed"
    Recipient.objects.filter(message=message).update(state=Recipient.State.FAILED)
    assert state_of(viewer_api, message) == "failed"


def test_each_filter_of_find_messages_narrows_the_list(
    viewer_api: APIClient, queues: Queues
) -> None:
    now = timezone.now()
    old = queues.send(
        ["bob@example.org"], subject="Invoice 17", received_at=now - timedelta(hours=3)
    )
    big = queues.send(["carol@example.net"], body="x" * 20_000, sender="billing@corp.test")
    bounce = queues.send(["dave@example.org"], sender="")
    frozen = queues.send(["erin@example.com"])
    QueueEntry.objects.filter(message=frozen).update(state=QueueEntry.State.FROZEN)
    done = queues.send(["frank@example.org"])
    deliver(entry(done))

    assert found(viewer_api, sender="BILLING@") == [big.queue_id]
    assert found(viewer_api, sender="<>") == [bounce.queue_id]
    assert found(viewer_api, recipient="carol") == [big.queue_id]
    assert found(viewer_api, domain="@Example.ORG") == [
        old.queue_id,
        bounce.queue_id,
        done.queue_id,
    ]
    assert found(viewer_api, subject="invoice") == [old.queue_id]
    assert found(viewer_api, state="frozen") == [frozen.queue_id]
    assert found(viewer_api, state="delivered") == [done.queue_id]
    assert done.queue_id not in found(viewer_api, state="queued")
    assert len(found(viewer_api, state="queued")) == 4
    assert found(viewer_api, older_than_minutes=60) == [old.queue_id]
    assert old.queue_id not in found(viewer_api, newer_than_minutes=60)
    assert found(viewer_api, min_size_kb=15) == [big.queue_id]
    assert big.queue_id not in found(viewer_api, max_size_kb=15)
    queue = queue_named("example.org")
    assert found(viewer_api, queue=queue.pk) == [old.queue_id, bounce.queue_id]
    assert found(viewer_api, queue_id=old.queue_id.lower()) == [old.queue_id]
    assert found(viewer_api, message_id=old.message_id.strip("<>")) == [old.queue_id]
    assert found(viewer_api, domain="example.org", state="queued", max_size_kb=15) == [
        old.queue_id,
        bounce.queue_id,
    ]


@pytest.mark.parametrize(
    "query",
    [
        {"state": "nope"},
        {"queue": "999999"},
        {"queue": "9" * 40},
        {"queue": "abc"},
        {"queue_id": "\x00"},
        {"message_id": "<a\x00b>"},
        {"search": "\x00"},
        {"older_than_minutes": "-1"},
        {"older_than_minutes": "9" * 40},
        {"min_size_kb": "1.5"},
        {"max_size_kb": "9" * 40},
        {"sender": "a\x00b"},
        {"recipient": "x" * 10_000},
        {"ordering": "-;drop"},
        {"page": "0"},
    ],
)
def test_odd_filters_are_a_clean_400_or_404_never_a_500(
    viewer_api: APIClient, queues: Queues, query: dict[str, str]
) -> None:
    queues.send(["bob@example.org"])
    response = viewer_api.get(API, query)
    assert response.status_code in (200, 400, 404), response.content
    assert response["Content-Type"].startswith("application/json")


def test_a_bad_filter_value_names_the_filter(viewer_api: APIClient, queues: Queues) -> None:
    response = viewer_api.get(API, {"state": "nope", "older_than_minutes": "-5"})
    assert response.status_code == 400
    assert set(response.json()) == {"state", "older_than_minutes"}


def test_the_list_needs_the_same_number_of_queries_for_many_messages(
    viewer_api: APIClient, queues: Queues
) -> None:
    queues.send(["bob@example.org"])

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert viewer_api.get(API).status_code == 200
        return len(queries)

    count()  # the first request reads the user's role once
    few = count()
    for n in range(6):
        queues.send([f"user{n}@example.org", f"user{n}@example.net"])
    assert count() == few


# --- properties and content --------------------------------------------------------------


def test_a_messages_properties_have_its_headers_queues_and_expiry(
    viewer_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"], subject="Quarterly report")
    failed = fail(entry(message), "451 4.3.0 Try later")

    detail = viewer_api.get(f"{API}{message.pk}/").json()

    headers = {h["name"]: h["value"] for h in detail["headers"]}
    assert headers["Subject"] == "Quarterly report"
    assert headers["Received"].startswith("from mail.outside.test")
    (queue,) = detail["entries"]
    assert queue["queue_name"] == "example.org"
    assert queue["state"] == "retry" and queue["attempts"] == 1
    assert queue["last_response"] == "451 4.3.0 Try later"
    assert detail["expires_at"] == failed.expires_at.isoformat().replace("+00:00", "Z")
    assert detail["recipients"][0]["last_response"] == "451 4.3.0 Try later"


def test_the_content_is_the_message_as_stored(viewer_api: APIClient, queues: Queues) -> None:
    message = queues.send(["bob@example.org"])

    response = viewer_api.get(f"{API}{message.pk}/content/")

    assert response.status_code == 200
    assert response["Content-Type"] == "message/rfc822"
    assert response["Content-Disposition"] == f'attachment; filename="{message.queue_id}.eml"'
    assert response.content == message.raw
    assert viewer_api.get(f"{API}999999/content/").status_code == 404
    eml = viewer_api.get(f"{API}{message.pk}/content/", HTTP_ACCEPT="message/rfc822")
    assert eml.status_code == 200 and eml.content == message.raw


# --- one message -------------------------------------------------------------------------


def test_freezing_a_message_freezes_it_in_every_queue_and_unfreezing_restores_it(
    admin_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org", "erin@example.net"])
    fail(entry(message, "example.org"))

    frozen = admin_api.post(f"{API}{message.pk}/freeze/")

    assert frozen.status_code == 200 and frozen.json()["state"] == "frozen"
    states = set(QueueEntry.objects.filter(message=message).values_list("state", flat=True))
    assert states == {QueueEntry.State.FROZEN}
    thawed = admin_api.post(f"{API}{message.pk}/unfreeze")  # the path without the slash
    assert thawed.status_code == 200
    assert entry(message, "example.org").state == QueueEntry.State.RETRY  # tried before
    assert entry(message, "example.net").state == QueueEntry.State.READY
    audits = AuditEntry.objects.filter(object_type="Message").order_by("id")
    assert [(a.object_repr, a.new_value) for a in audits] == [
        (message.queue_id, "frozen"),
        (message.queue_id, "queued"),
    ]


def test_freezing_what_a_worker_is_sending_keeps_it_frozen_when_the_batch_ends(
    admin_api: APIClient, queues: Queues
) -> None:
    item = lease(entry(queues.send(["bob@example.org"])))

    admin_api.post(f"{API}{item.message_id}/freeze/")

    # The worker's result is written through its lease, which the freeze took.
    assert item.leased_to(WORKER).update(state=QueueEntry.State.RETRY) == 0
    assert QueueEntry.objects.get(pk=item.pk).state == QueueEntry.State.FROZEN


def test_a_worker_cannot_claim_a_frozen_or_deleted_message(
    admin_api: APIClient, queues: Queues
) -> None:
    frozen = queues.send(["bob@example.org"])
    deleted = queues.send(["carol@example.org"])
    admin_api.post(f"{API}{frozen.pk}/freeze/")
    admin_api.post(f"{API}{deleted.pk}/delete/", {}, format="json")

    assert not QueueEntry.objects.due().filter(message__in=[frozen, deleted]).exists()
    assert not QueueEntry.claim(entry(frozen).pk, WORKER, seconds=60)
    assert not QueueEntry.claim(entry(deleted).pk, WORKER, seconds=60)
    admin_api.post(f"{API}{frozen.pk}/unfreeze/")
    assert QueueEntry.claim(entry(frozen).pk, WORKER, seconds=60)


def test_deleting_a_message_without_ndr_ends_every_waiting_recipient(
    admin_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org", "erin@example.net", "frank@example.com"])
    deliver(entry(message, "example.com"))

    response = admin_api.post(f"{API}{message.pk}/delete/", {"ndr": False}, format="json")

    assert response.status_code == 200
    assert response.json()["recipients"] == 2
    states = dict(message.recipients.values_list("address", "state"))
    assert states == {
        "bob@example.org": "deleted",
        "erin@example.net": "deleted",
        "frank@example.com": "delivered",
    }
    assert state_of(admin_api, message) == "completed"
    audit = AuditEntry.objects.get(object_type="Message")
    assert audit.old_value == "bob@example.org, erin@example.net"
    assert audit.new_value == "deleted without NDR"
    assert TrackingEvent.objects.filter(kind="deleted", by="adam-admin").count() == 2


def test_deleting_a_message_with_ndr_reports_to_its_sender(
    admin_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"], sender=LOCAL_SENDER)

    response = admin_api.post(f"{API}{message.pk}/delete", {"ndr": True}, format="json")

    assert response.status_code == 200
    (dsn_id,) = response.json()["dsns"]
    dsn = Message.objects.get(queue_id=dsn_id)
    assert dsn.recipients.get().address == LOCAL_SENDER
    report = email.message_from_bytes(dsn.raw)
    text = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    assert "Status: 4.3.2" in text.as_string()
    assert TrackingEvent.objects.filter(queue_id=message.queue_id, kind="dsn_sent").exists()


def test_deleting_a_delivered_message_changes_nothing(admin_api: APIClient, queues: Queues) -> None:
    message = queues.send(["bob@example.org"])
    deliver(entry(message))

    response = admin_api.post(f"{API}{message.pk}/delete/", {}, format="json")

    assert response.json()["recipients"] == 0
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("action", ["freeze", "unfreeze", "delete"])
def test_a_view_only_administrator_cannot_act_on_a_message(
    viewer_api: APIClient, queues: Queues, action: str
) -> None:
    message = queues.send(["bob@example.org"])
    response = viewer_api.post(f"{API}{message.pk}/{action}/", {}, format="json")
    assert response.status_code == 403
    assert entry(message).state == QueueEntry.State.READY


def test_the_messages_resource_has_no_create_update_or_http_delete(
    admin_api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"])
    assert admin_api.post(API, {"sender": "x@y.z"}, format="json").status_code == 405
    assert admin_api.patch(f"{API}{message.pk}/", {"sender": ""}, format="json").status_code == 405
    assert admin_api.delete(f"{API}{message.pk}/").status_code == 405


# --- bulk --------------------------------------------------------------------------------


def bulk(client: APIClient, payload: Any) -> Any:
    # ASCII escapes, so lone surrogates reach the server as a client could send them.
    return client.post(f"{API}bulk/", json.dumps(payload), content_type="application/json")


def test_bulk_freeze_freezes_exactly_what_the_filter_finds_and_is_audited_once(
    admin_api: APIClient, queues: Queues
) -> None:
    targets = [queues.send([f"user{n}@spam.example"]) for n in range(3)]
    other = queues.send(["bob@example.org"])

    response = bulk(admin_api, {"filter": {"domain": "spam.example"}, "action": "freeze"})

    assert response.status_code == 200
    assert response.json() == {
        "action": "freeze",
        "ndr": False,
        "matched": 3,
        "changed": 3,
        "recipients": 0,
        "dsns": 0,
        "dsn_errors": 0,
    }
    assert all(entry(m).state == QueueEntry.State.FROZEN for m in targets)
    assert entry(other).state == QueueEntry.State.READY
    audit = AuditEntry.objects.get()
    assert audit.username == "adam-admin" and audit.field == "bulk"
    assert audit.new_value == "freeze"
    assert audit.object_repr == "3 message(s) matching Recipient domain: spam.example"
    again = bulk(admin_api, {"filter": {"domain": "spam.example"}, "action": "freeze"})
    assert again.json()["changed"] == 0


def test_bulk_unfreeze_and_delete_follow_the_same_filters(
    admin_api: APIClient, queues: Queues
) -> None:
    spam = [queues.send(["x@spam.example"], sender=LOCAL_SENDER) for _ in range(2)]
    keep = queues.send(["bob@example.org"])
    QueueEntry.objects.update(state=QueueEntry.State.FROZEN)

    thawed = bulk(
        admin_api, {"filter": {"state": "frozen", "domain": "spam.example"}, "action": "unfreeze"}
    )
    deleted = bulk(
        admin_api,
        {"filter": {"domain": "spam.example"}, "action": "delete", "ndr": True},
    )

    assert thawed.json()["changed"] == 2
    assert entry(keep).state == QueueEntry.State.FROZEN
    body = deleted.json()
    assert (body["matched"], body["changed"], body["recipients"], body["dsns"]) == (2, 2, 2, 2)
    assert all(m.recipients.get().state == Recipient.State.DELETED for m in spam)
    assert Message.objects.filter(system=True).count() == 2


def test_bulk_delete_handles_more_messages_than_one_chunk(
    admin_api: APIClient, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("relay.admin.actions.CHUNK", 2)
    messages = [queues.send([f"u{n}@spam.example"]) for n in range(5)]

    response = bulk(admin_api, {"filter": {"sender": "outside"}, "action": "delete"})

    assert response.json()["changed"] == 5
    assert all(m.recipients.get().state == Recipient.State.DELETED for m in messages)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"filter": {}, "action": "freeze"}, "filter"),
        ({"filter": {"state": ""}, "action": "freeze"}, "filter"),
        ({"filter": {"colour": "red"}, "action": "freeze"}, "filter"),
        ({"filter": {"sender": ["a"]}, "action": "freeze"}, "filter"),
        ({"filter": {"sender": True}, "action": "freeze"}, "filter"),
        ({"filter": {"sender": "\ud800"}, "action": "freeze"}, "filter"),
        ({"filter": {"sender": "a\x00"}, "action": "freeze"}, "filter"),
        ({"filter": {"queue": 999999}, "action": "freeze"}, "filter"),
        ({"filter": {"state": "nope"}, "action": "freeze"}, "filter"),
        ({"filter": "sender=a", "action": "freeze"}, "filter"),
        ({"filter": {"sender": "a"}, "action": "explode"}, "action"),
        ({"filter": {"sender": "a"}}, "action"),
        ({"filter": {"sender": "a"}, "action": "delete", "ndr": "maybe"}, "ndr"),
        ({"filter": {"sender": "a"}, "action": "freeze", "everything": True}, "everything"),
    ],
)
def test_a_bulk_request_that_is_not_clear_is_refused_and_changes_nothing(
    admin_api: APIClient, queues: Queues, payload: dict[str, Any], field: str
) -> None:
    message = queues.send(["bob@example.org"])

    response = bulk(admin_api, payload)

    assert response.status_code == 400, response.content
    assert field in response.json()
    assert entry(message).state == QueueEntry.State.READY
    assert not AuditEntry.objects.exists()


def test_a_bulk_body_that_is_not_an_object_is_refused(admin_api: APIClient) -> None:
    assert bulk(admin_api, ["freeze"]).status_code == 400
    assert admin_api.get(f"{API}bulk/").status_code == 405


def test_bulk_is_for_administrators(viewer_api: APIClient, queues: Queues) -> None:
    message = queues.send(["bob@example.org"])
    response = bulk(viewer_api, {"filter": {"sender": "outside"}, "action": "delete"})
    assert response.status_code == 403
    assert message.recipients.get().state == Recipient.State.PENDING
