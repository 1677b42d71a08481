"""messages/bulk takes each filter only in the JSON type its schema gives (text for text
filters, a number for numbers and queues, a value rather than null), and the .eml download
answers its errors as JSON, labelled as JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from relay.models import QueueEntry
from smtpadmin.models import AuditEntry
from tests.relay.queue_world import Queues, admin_api, entry, queues, viewer_api

__all__ = ["admin_api", "queues", "viewer_api"]  # fixtures

pytestmark = pytest.mark.django_db

API = "/api/v1/messages/"


def bulk(client: APIClient, payload: Any) -> Any:
    return client.post(f"{API}bulk/", json.dumps(payload), content_type="application/json")


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"sender": "outside", "domain": None}, "Give a value, or leave the filter out."),
        ({"sender": "outside", "domain": ""}, "Give a value, or leave the filter out."),
        ({"sender": 5}, "Give a string."),
        ({"older_than_minutes": "5"}, "Give a number."),
        ({"queue": "1"}, "Give a number."),
        ({"min_size_kb": 1.5}, "Give a number."),
    ],
)
def test_a_bulk_filter_of_the_wrong_type_is_refused_and_changes_nothing(
    admin_api: APIClient, queues: Queues, filters: dict[str, Any], message: str
) -> None:
    waiting = queues.send(["bob@example.org"])

    response = bulk(admin_api, {"filter": filters, "action": "freeze"})

    assert response.status_code == 400, response.content
    assert message in json.dumps(response.json()["filter"])
    assert entry(waiting).state == QueueEntry.State.READY
    assert not AuditEntry.objects.exists()


def test_a_bulk_filter_by_number_takes_a_number(admin_api: APIClient, queues: Queues) -> None:
    waiting = queues.send(["bob@example.org"])

    response = bulk(admin_api, {"filter": {"queue": entry(waiting).queue_id}, "action": "freeze"})

    assert response.status_code == 200, response.content
    assert entry(waiting).state == QueueEntry.State.FROZEN


def test_an_unknown_bulk_action_names_the_choices(admin_api: APIClient) -> None:
    response = bulk(admin_api, {"filter": {"sender": "a"}, "action": "explode"})

    assert response.json() == {"action": ["Choose freeze, unfreeze or delete."]}


def test_the_eml_download_answers_a_missing_message_with_json(viewer_api: APIClient) -> None:
    for asked in ({"format": "eml"}, {}):
        response = viewer_api.get(f"{API}999999/content/", asked)

        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json() == {"detail": "No Message matches the given query."}


def test_the_eml_download_is_still_the_message(viewer_api: APIClient, queues: Queues) -> None:
    message = queues.send(["bob@example.org"])

    response = viewer_api.get(f"{API}{message.pk}/content/", {"format": "eml"})

    assert response.status_code == 200
    assert response["Content-Type"] == "message/rfc822"
    assert response.content == message.raw
