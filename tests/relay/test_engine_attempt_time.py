"""When an attempt begins: the claim that takes an entry for a connection writes its
``last_attempt_at`` in the same statement (what the Queue Viewer shows, and a DSN's
Last-Attempt-Date), whichever way the claim is made."""

from __future__ import annotations

import pytest
from django.db.models import Q
from django.utils import timezone

from relay.delivery.claims import claim_more, claim_opening
from relay.models import QueueEntry
from tests.relay.engine_world import Outbound, queue_of

pytestmark = pytest.mark.django_db

# A schedule's size limit makes the claim filter through the message (the ORM's claim);
# without one it is the written-out statement.
SIZES = [pytest.param(Q(), id="any size"), pytest.param(Q(message__size__lte=10**9), id="sized")]


@pytest.mark.parametrize("sizes", SIZES)
def test_a_connections_claims_write_when_the_attempt_began(outbound: Outbound, sizes: Q) -> None:
    outbound.connector("Partner", [("example.org", 1)], smart_hosts="[127.0.0.1]:9")
    first, second = (outbound.send([f"user{n}@example.org"]) for n in (1, 2))
    queue = queue_of(first)
    at = timezone.now()

    opening = claim_opening(queue, "worker#1", at, sizes, chunk=1)
    assert opening is not None
    assert [e.message_id for e in opening.entries] == [first.pk]
    later = timezone.now()
    more = claim_more(queue, "worker#1", later, sizes, opening.vs_id, 5)
    assert [e.message_id for e in more] == [second.pk]

    times = dict(
        QueueEntry.objects.filter(queue=queue).values_list("message_id", "last_attempt_at")
    )
    assert times == {first.pk: at, second.pk: later}


def test_a_claim_that_finds_nothing_due_writes_nothing(outbound: Outbound) -> None:
    outbound.connector("Partner", [("example.org", 1)], smart_hosts="[127.0.0.1]:9")
    message = outbound.send(["user@example.org"])
    queue = queue_of(message)
    at = timezone.now()
    opening = claim_opening(queue, "worker#1", at, Q())
    assert opening is not None

    assert claim_more(queue, "worker#2", timezone.now(), Q(), opening.vs_id, 5) == []
    assert QueueEntry.objects.get(message=message).lease_owner == "worker#1"
    assert QueueEntry.objects.get(message=message).last_attempt_at == at
