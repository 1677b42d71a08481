"""/api/v1/messages/ a page at a time: a cursor, so messages arriving while a client pages
(they come first, newest first) neither repeat a message nor skip one; ``count`` capped."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from relay.models import Message
from tests.relay.queue_world import Queues

pytestmark = pytest.mark.django_db

API = "/api/v1/messages/"


def pages(client: APIClient, queues: Queues, query: dict[str, str], arrivals: int) -> list[str]:
    """The queue ids of every page, following ``next``; ``arrivals`` messages arrive after
    each of the first pages."""
    seen: list[str] = []
    answer = client.get(API, query)
    while True:
        assert answer.status_code == 200, answer.content
        body = answer.json()
        seen += [row["queue_id"] for row in body["results"]]
        if not body["next"]:
            return seen
        for n in range(arrivals):
            queues.send([f"late{len(seen)}-{n}@example.org"])
        arrivals = max(arrivals - 1, 0)
        answer = client.get(body["next"])


def test_pages_newest_first_never_repeat_or_skip_while_mail_arrives(
    viewer_api: APIClient, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("relay.api.MessagePagination.page_size", 3)
    before = [queues.send([f"u{n}@example.org"]) for n in range(8)]

    seen = pages(viewer_api, queues, {}, arrivals=2)

    assert len(seen) == len(set(seen))
    assert seen == [m.queue_id for m in reversed(before)]


def test_a_filtered_list_pages_too_and_counts(
    viewer_api: APIClient, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("relay.api.MessagePagination.page_size", 2)
    spam = [queues.send([f"u{n}@spam.example"]) for n in range(5)]
    queues.send(["bob@example.org"])

    first = viewer_api.get(API, {"domain": "spam.example"}).json()
    assert (first["count"], first["count_capped"]) == (5, False)
    assert pages(viewer_api, queues, {"domain": "spam.example"}, arrivals=0) == [
        m.queue_id for m in reversed(spam)
    ]


def test_the_count_stops_at_the_cap(
    viewer_api: APIClient, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("relay.api.MessagePagination.count_cap", 3)
    for n in range(5):
        queues.send([f"u{n}@example.org"])
    body = viewer_api.get(API).json()
    assert (body["count"], body["count_capped"]) == (3, True)
    assert Message.objects.count() == 5


def test_a_tampered_cursor_is_a_clean_400_naming_it(viewer_api: APIClient, queues: Queues) -> None:
    queues.send(["bob@example.org"])
    answer = viewer_api.get(API, {"cursor": "not-a-cursor"})
    assert answer.status_code == 400 and set(answer.json()) == {"cursor"}
    assert answer["Content-Type"].startswith("application/json")


def test_listing_and_counting_take_the_same_statements_for_ten_times_the_messages(
    viewer_api: APIClient, queues: Queues
) -> None:
    def statements(query: dict[str, str]) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert viewer_api.get(API, query).status_code == 200
        return len(queries)

    queries = [{}, {"state": "ready"}, {"domain": "example.org"}, {"sender": "outside"}]
    for n in range(3):
        queues.send([f"u{n}@example.org"])
    statements({})  # the first request reads the user's role once
    few = [statements(q) for q in queries]
    for n in range(27):
        queues.send([f"v{n}@example.org", f"w{n}@example.net"])
    assert [statements(q) for q in queries] == few
