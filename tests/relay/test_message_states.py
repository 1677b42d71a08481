"""A message's state three ways, which must agree: worked out by the database for one message
(``with_state``), from a list page's prefetched rows (``derived_state``), and as the filter
Find Messages and the API use (``state_condition``)."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from relay.admin.search import MessageFilter, MessageState, with_state
from relay.models import Message, QueueEntry, Recipient
from tests.relay.queue_world import Queues, deliver, entry, fail, lease

pytestmark = pytest.mark.django_db


def one_of_each(queues: Queues) -> dict[str, Message]:
    made = {
        "ready": queues.send(["a@example.org"]),
        "retry": queues.send(["b@example.org"]),
        "active": queues.send(["c@example.org"]),
        "frozen": queues.send(["d@example.org", "d@example.net"]),
        "delivered": queues.send(["e@example.org"]),
        "failed": queues.send(["f@example.org"]),
        "deleted": queues.send(["g@example.org"]),
        "completed": queues.send(["h@example.org", "h@example.net"]),
    }
    fail(entry(made["retry"]))
    lease(entry(made["active"]))
    QueueEntry.objects.filter(message=made["frozen"], queue__name="example.net").update(
        state=QueueEntry.State.FROZEN
    )
    deliver(entry(made["delivered"]))
    deliver(entry(made["failed"]), Recipient.State.FAILED)
    deliver(entry(made["deleted"]), Recipient.State.DELETED)
    deliver(entry(made["completed"], "example.org"))
    deliver(entry(made["completed"], "example.net"), Recipient.State.FAILED)
    return made


def test_the_list_the_detail_and_the_filter_agree_on_every_state(
    viewer_api: APIClient, queues: Queues
) -> None:
    made = one_of_each(queues)
    by_pk = {m.pk: name for name, m in made.items()}

    annotated: Any = with_state(Message.objects.filter(pk__in=by_pk))
    sql = {m.pk: m.state for m in annotated}
    listed = {
        row["id"]: row["state"] for row in viewer_api.get("/api/v1/messages/").json()["results"]
    }
    assert sql == listed == by_pk

    now = timezone.now()
    for state in MessageState:
        found = MessageFilter(data={"state": state.value}, queryset=Message.objects.all(), now=now)
        assert found.is_valid()
        expected = {pk for pk, name in by_pk.items() if name == state.value}
        if state == MessageState.QUEUED:
            expected = {made[n].pk for n in ("ready", "retry", "active", "frozen")}
        assert set(found.qs.values_list("pk", flat=True)) == expected, state
