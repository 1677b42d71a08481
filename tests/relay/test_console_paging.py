"""Queue pages and Find Messages a page at a time: each page starts after the last row of the
one before, so rows arriving meanwhile never repeat or skip one, and a count that stops at a
cap."""

from __future__ import annotations

import html as htmlmod
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from relay.admin.paging import Count, capped_count, decode_cursor, encode_cursor
from relay.models import Message
from tests.relay.queue_world import Queues, html_of, logged_in, queue_named

pytestmark = pytest.mark.django_db

VIEWER = "/relay/queues/"
FIND = "/relay/find/"


def shown(html: str, candidates: list[Message]) -> list[str]:
    """The queue ids of ``candidates`` on the page, in the order shown."""
    ids = {m.queue_id for m in candidates}
    return [q for q in re.findall(r">([0-9A-Z]{14})</a>", html) if q in ids]


def link(html: str, label: str) -> str | None:
    found = re.search(rf'<a class="button" href="([^"]+)">{label}</a>', html)
    return htmlmod.unescape(found.group(1)) if found else None


def walk(client: Client, url: str, candidates: list[Message]) -> list[str]:
    """The queue ids of ``candidates`` on every page from the first, by the Next links."""
    seen: list[str] = []
    page: str | None = url
    while page is not None:
        html = html_of(client.get(page))
        seen += shown(html, candidates)
        page = link(html, "Next ›")
        if page is not None and not page.startswith("/"):
            page = url.split("?")[0] + page
    return seen


def test_a_long_queue_pages_in_arrival_order_without_repeats_or_gaps_while_mail_arrives(
    view_only: User, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("relay.console.queues.PAGE_SIZE", 2)
    sent = [queues.send([f"u{n}@example.org"]) for n in range(5)]
    pk = queue_named("example.org").pk
    client = logged_in(view_only)
    url = f"{VIEWER}{pk}/"

    first = html_of(client.get(url))
    assert shown(first, sent) == [m.queue_id for m in sent[:2]]
    assert link(first, "‹ Previous") is None
    late = [queues.send([f"late{n}@example.org"]) for n in range(3)]
    second_url = link(first, "Next ›")
    assert second_url is not None
    second = html_of(client.get(url + second_url))
    assert shown(second, sent + late) == [m.queue_id for m in sent[2:4]]
    back = link(second, "‹ Previous")
    assert back is not None
    assert shown(html_of(client.get(url + back)), sent) == [m.queue_id for m in sent[:2]]

    everything = walk(client, url, sent + late)
    assert everything == [m.queue_id for m in sent + late]
    assert "5 messages, oldest first." in first


def test_find_messages_pages_oldest_first_and_a_bad_cursor_starts_again(
    view_only: User, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("relay.console.find.PAGE_SIZE", 2)
    sent = [queues.send([f"u{n}@spam.example"]) for n in range(5)]
    client = logged_in(view_only)
    url = f"{FIND}?domain=spam.example"

    assert walk(client, url, sent) == [m.queue_id for m in sent]
    html = html_of(client.get(url + "&after=not-a-cursor"))
    assert shown(html, sent) == [m.queue_id for m in sent[:2]]
    assert "5 messages found" in html


def test_counts_stop_at_the_cap(queues: Queues) -> None:
    for n in range(4):
        queues.send([f"u{n}@example.org"])
    assert capped_count(Message.objects.all(), cap=3) == Count(3, True)
    assert str(capped_count(Message.objects.all(), cap=3)) == "3+"
    assert capped_count(Message.objects.all(), cap=4) == Count(4, False)


@pytest.mark.parametrize(
    "token", ["", "x", "W10", "WyJhIiwxXQ", "WzEsdHJ1ZV0", "WyIyMDI2LTAxLTAxVDAwOjAwIiwxXQ"]
)
def test_a_cursor_that_is_not_ours_reads_as_none(token: str) -> None:
    assert decode_cursor(token) is None


def test_a_cursor_round_trips() -> None:
    from django.utils import timezone

    moment = timezone.now()
    assert decode_cursor(encode_cursor(moment, 7)) == (moment, 7)
    assert decode_cursor(encode_cursor(12, 7)) == (12, 7)


def test_a_cursor_of_another_list_starts_at_the_first_page(
    view_only: User, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.utils import timezone

    monkeypatch.setattr("relay.console.queues.PAGE_SIZE", 2)
    monkeypatch.setattr("relay.console.find.PAGE_SIZE", 2)
    sent = [queues.send([f"u{n}@example.org"]) for n in range(3)]
    client = logged_in(view_only)
    a_time, a_number = encode_cursor(timezone.now(), 1), encode_cursor(1, 1)

    queue = client.get(f"{VIEWER}{queue_named('example.org').pk}/", {"after": a_time})
    found = client.get(FIND, {"domain": "example.org", "before": a_number})

    assert queue.status_code == found.status_code == 200
    assert (
        shown(html_of(queue), sent) == shown(html_of(found), sent) == [m.queue_id for m in sent[:2]]
    )
