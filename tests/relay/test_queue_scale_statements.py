"""What the queue views and the sweep ask the database does not grow with the messages queued:
the same statements for ten times the messages (statements, never timings; the bench
``bench/queue_scale.py`` measures the time)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from relay.delivery.engine import sweep
from relay.models import Message, QueueEntry
from tests.relay.engine_world import Outbound
from tests.relay.queue_world import Queues, logged_in, queue_named

pytestmark = pytest.mark.django_db


def statements(call: Callable[[], object]) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        call()
    return [q["sql"] for q in queries]


def waiting_for_a_retry(messages: list[Message]) -> None:
    later = timezone.now() + timedelta(hours=1)
    QueueEntry.objects.filter(message__in=messages).update(
        state=QueueEntry.State.RETRY, attempts=1, next_attempt_at=later
    )


def test_a_sweep_asks_the_same_for_ten_times_the_mail_that_is_not_due(
    outbound: Outbound,
) -> None:
    domains = ["example.org", "example.net"]
    outbound.send([f"due@{d}" for d in domains])
    waiting_for_a_retry([outbound.send([f"a{n}@{d}" for d in domains]) for n in range(2)])
    frozen = outbound.send([f"f@{d}" for d in domains])
    QueueEntry.objects.filter(message=frozen).update(state=QueueEntry.State.FROZEN)
    now = timezone.now()
    before = statements(lambda: sweep(now=now))

    waiting_for_a_retry([outbound.send([f"b{n}@{d}" for d in domains]) for n in range(20)])
    more = [outbound.send([f"g{n}@{d}" for d in domains]) for n in range(5)]
    QueueEntry.objects.filter(message__in=more).update(state=QueueEntry.State.FROZEN)

    after = statements(lambda: sweep(now=now))
    assert len(after) == len(before), "\n".join(after)
    assert sorted(sweep(now=now)) == sorted(
        {e.queue_id for e in QueueEntry.objects.filter(recipients__address__startswith="due@")}
    )


PAGES = {
    "queue viewer": lambda: "/relay/queues/",
    "queue viewer, all": lambda: "/relay/queues/?all=1",
    "a queue": lambda: f"/relay/queues/{queue_named('example.org').pk}/",
    "find by state": lambda: "/relay/find/?state=ready",
    "find by domain": lambda: "/relay/find/?domain=example.org",
    "API queues": lambda: "/api/v1/queues/",
    "API messages": lambda: "/api/v1/messages/",
    "API messages of a queue": lambda: f"/api/v1/messages/?queue={queue_named('example.org').pk}",
}


@pytest.mark.parametrize("page", list(PAGES))
def test_lists_and_counts_ask_the_same_for_ten_times_the_messages(
    view_only: User, queues: Queues, page: str
) -> None:
    client = logged_in(view_only)

    def load() -> None:
        answer = client.get(PAGES[page]())
        assert answer.status_code == 200, answer.content[:300]

    sent = [queues.send([f"u{n}@example.org", f"u{n}@example.net"]) for n in range(3)]
    waiting_for_a_retry(sent[:1])
    load()  # the first request reads the user's role once
    few = statements(load)

    more = [queues.send([f"v{n}@example.org", f"v{n}@example.net"]) for n in range(27)]
    waiting_for_a_retry(more[:9])

    assert len(statements(load)) == len(few)
