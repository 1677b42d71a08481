"""/api/v1/tracking-events/: the Message Tracking Center over the API. Search by Message-ID,
queue id, sender, recipient, server, event, time range and subject; a message's history across
servers; read-only for everyone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from relay.admin import actions
from relay.models import Message, TrackingEvent
from tests.relay.queue_world import Queues
from tests.relay.test_intake import set_tracking

pytestmark = pytest.mark.django_db

API = "/api/v1/tracking-events/"


@pytest.fixture
def api(view_only: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(view_only)
    return client


def kinds(client: APIClient, **query: Any) -> list[tuple[str, str, str]]:
    response = client.get(API, {**query, "ordering": "id"})
    assert response.status_code == 200, response.content
    return [(e["kind"], e["queue_id"], e["recipient"]) for e in response.json()["results"]]


def relayed_elsewhere(message: Message, server: str, minutes: int = 1) -> str:
    """The same message received by another of our servers (a new queue id, same
    Message-ID), as that server's intake records it."""
    at = message.received_at + timedelta(minutes=minutes)
    TrackingEvent.objects.create(
        kind=TrackingEvent.Kind.RECEIVED,
        at=at,
        queue_id="0B2ZZZZZZZZZZZ",
        message_id=message.message_id,
        sender=message.sender,
        server_name=server,
    )
    TrackingEvent.objects.create(
        kind=TrackingEvent.Kind.DELIVERED,
        at=at + timedelta(seconds=1),
        queue_id="0B2ZZZZZZZZZZZ",
        message_id=message.message_id,
        sender=message.sender,
        recipient="bob@example.org",
        server_name=server,
        next_hop="local delivery",
    )
    return "0B2ZZZZZZZZZZZ"


def test_intakes_events_are_listed_newest_first_with_their_fields(
    api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"])

    events = api.get(API).json()["results"]

    assert [e["kind"] for e in events] == ["routed", "received"]
    received = events[1]
    assert received["queue_id"] == message.queue_id
    assert received["message_id"] == message.message_id
    assert received["sender"] == "sender@outside.test"
    assert received["server_name"] == "node1"
    assert received["client_address"] == "192.0.2.10"
    assert received["size"] == message.size
    assert events[0]["queue_name"] == "example.org"
    assert events[0]["connector_name"] == "Internet"


def test_the_search_finds_by_every_field_the_tracking_center_offers(
    api: APIClient, queues: Queues
) -> None:
    set_tracking(subjects=True)
    first = queues.send(["bob@example.org"], subject="Invoice 17")
    second = queues.send(["carol@example.net"], sender="Billing@Corp.test")
    q1, q2 = first.queue_id, second.queue_id

    assert kinds(api, message_id=first.message_id) == [
        ("received", q1, ""),
        ("routed", q1, "bob@example.org"),
    ]
    assert {q for _k, q, _r in kinds(api, message_id=first.message_id.strip("<>"))} == {q1}
    assert {q for _k, q, _r in kinds(api, queue_id=q2.lower())} == {q2}
    assert {q for _k, q, _r in kinds(api, sender="billing@corp.TEST")} == {q2}
    assert kinds(api, recipient="Carol@example.net") == [("routed", q2, "carol@example.net")]
    assert {q for _k, q, _r in kinds(api, subject="invoice")} == {q1}
    assert len(kinds(api, server="NODE1")) == 4
    assert kinds(api, server="node2") == []
    assert [k for k, _q, _r in kinds(api, kind="received")] == ["received", "received"]


def test_the_time_range_bounds_the_events(api: APIClient, queues: Queues) -> None:
    message = queues.send(["bob@example.org"])
    TrackingEvent.objects.filter(queue_id=message.queue_id).update(
        at=timezone.now() - timedelta(days=2)
    )
    later = queues.send(["carol@example.org"])
    yesterday = (timezone.now() - timedelta(days=1)).isoformat()

    assert {q for _k, q, _r in kinds(api, since=yesterday)} == {later.queue_id}
    assert {q for _k, q, _r in kinds(api, until=yesterday)} == {message.queue_id}


def test_a_deletion_names_the_administrator(
    api: APIClient, administrator: User, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"])
    actions.delete_message(message, administrator, ndr=False)

    (event,) = api.get(API, {"kind": "deleted"}).json()["results"]

    assert event["by"] == "adam-admin"
    assert event["recipient"] == "bob@example.org"
    assert event["response"].startswith("4.3.2")


def test_the_history_of_a_message_spans_every_server_that_handled_it(
    api: APIClient, queues: Queues
) -> None:
    message = queues.send(["bob@example.org"])
    other = relayed_elsewhere(message, "node2")
    queues.send(["carol@example.org"])  # another message: not in the history

    response = api.get(f"{API}history/", {"queue_id": message.queue_id})

    assert response.status_code == 200
    events = [(e["kind"], e["queue_id"], e["server_name"]) for e in response.json()]
    assert events == [
        ("received", message.queue_id, "node1"),
        ("routed", message.queue_id, "node1"),
        ("received", other, "node2"),
        ("delivered", other, "node2"),
    ]
    by_id = api.get(f"{API}history/", {"message_id": message.message_id}).json()
    assert [e["id"] for e in by_id] == [e["id"] for e in response.json()]


@pytest.mark.parametrize(
    "query",
    [{}, {"queue_id": ""}, {"queue_id": "a\x00"}],
)
def test_a_history_needs_a_queue_id_or_message_id(
    api: APIClient, queues: Queues, query: dict[str, str]
) -> None:
    response = api.get(f"{API}history/", query)
    assert response.status_code == 400
    assert "queue_id" in response.json()


@pytest.mark.parametrize(
    "query",
    [
        {"since": "yesterday"},
        {"until": "2024-13-45T99:99"},
        {"kind": "exploded"},
        {"sender": "a\x00b"},
        {"message_id": "x" * 10_000},
        {"ordering": "?"},
        {"page": "9" * 40},
    ],
)
def test_odd_searches_are_a_clean_4xx(
    api: APIClient, queues: Queues, query: dict[str, str]
) -> None:
    queues.send(["bob@example.org"])
    response = api.get(API, query)
    assert response.status_code in (200, 400, 404), response.content
    assert response["Content-Type"].startswith("application/json")


def test_tracking_events_are_read_only_even_for_a_full_administrator(
    full_admin: User, queues: Queues
) -> None:
    queues.send(["bob@example.org"])
    client = APIClient()
    client.force_authenticate(full_admin)
    event = TrackingEvent.objects.first()
    assert event is not None
    assert client.post(API, {"kind": "received"}, format="json").status_code == 405
    assert client.delete(f"{API}{event.pk}/").status_code == 405
    assert client.get(f"{API}{event.pk}/").json()["id"] == event.pk
