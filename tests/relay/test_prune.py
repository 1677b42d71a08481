"""Message tracking retention: beat's prune removes tracking events and finished messages
(their recipients, entries and bytes) older than the organization's retention, a bounded
batch per statement; younger rows, and old messages with an unfinished recipient or an owed
DSN, stay. The Queue Viewer and the Tracking Center say how long history is kept."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from relay import maintenance
from relay.models import Message, QueueEntry, Recipient, TrackingEvent
from relay.queue import prune
from smtpadmin.models import Organization
from tests.relay.queue_world import Queues, deliver, entry, fail, html_of, logged_in

pytestmark = pytest.mark.django_db

DAYS = 3


@pytest.fixture
def retention() -> int:
    organization = Organization.get()
    organization.tracking_retention_days = DAYS
    organization.save()
    return DAYS


def aged(message: Message, days: float) -> Message:
    """The message, its events and its recipients' outcomes moved ``days`` into the past."""
    then = timezone.now() - timedelta(days=days)
    Message.objects.filter(pk=message.pk).update(received_at=then)
    Recipient.objects.filter(message=message, completed_at__isnull=False).update(completed_at=then)
    QueueEntry.objects.filter(message=message, completed_at__isnull=False).update(completed_at=then)
    TrackingEvent.objects.filter(queue_id=message.queue_id).update(at=then)
    return message


def delivered(queues: Queues, address: str, days: float) -> Message:
    message = queues.send([address])
    deliver(entry(message))
    return aged(message, days)


def test_old_finished_messages_and_events_go_young_ones_and_unfinished_ones_stay(
    queues: Queues, retention: int
) -> None:
    old = delivered(queues, "old@example.org", DAYS + 1)
    young = delivered(queues, "young@example.org", DAYS - 1)
    # Old, but one of its two recipients is still waiting for a retry.
    waiting = queues.send(["done@example.org", "later@example.net"])
    deliver(entry(waiting, "example.org"))
    fail(entry(waiting, "example.net"))
    aged(waiting, DAYS + 5)
    # Old and finished long ago, but its failure DSN was never made: the sweeper's.
    owed = queues.send(["gone@example.org"])
    deliver(entry(owed), state=Recipient.State.FAILED)
    aged(owed, DAYS + 2)
    assert TrackingEvent.objects.filter(queue_id=old.queue_id).exists()

    done = prune.prune()

    assert done.complete and done.messages == 1
    assert not Message.objects.filter(pk=old.pk).exists()
    assert not Recipient.objects.filter(message_id=old.pk).exists()
    assert not QueueEntry.objects.filter(message_id=old.pk).exists()
    assert not TrackingEvent.objects.filter(queue_id=old.queue_id).exists()
    assert done.events > 0
    for kept in (young, waiting, owed):
        assert Message.objects.filter(pk=kept.pk).exists()
    assert TrackingEvent.objects.filter(queue_id=young.queue_id).exists()
    # Events follow their own age: the unfinished message's old history goes too.
    assert not TrackingEvent.objects.filter(queue_id=waiting.queue_id).exists()
    assert Recipient.objects.filter(message=waiting).count() == 2


def test_a_message_finished_recently_stays_however_old_it_is(
    queues: Queues, retention: int
) -> None:
    message = queues.send(["slow@example.org"])
    deliver(entry(message))
    Message.objects.filter(pk=message.pk).update(
        received_at=timezone.now() - timedelta(days=DAYS + 2)
    )

    prune.prune()

    assert Message.objects.filter(pk=message.pk).exists()


def test_pruning_works_in_bounded_batches_and_stops_when_its_time_is_up(
    queues: Queues, retention: int
) -> None:
    old = [delivered(queues, f"u{n}@example.org", DAYS + 1) for n in range(5)]
    events = TrackingEvent.objects.count()
    assert events >= 10

    with CaptureQueriesContext(connection) as queries:
        done = prune.prune(batch=2)

    assert done.complete and done.messages == 5 and done.events == events
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    # Never more than one batch of ids in one DELETE statement, and never one without ids.
    assert deletes
    for sql in deletes:
        (ids,) = re.findall(r" IN \(([^)]*)\)", sql)
        assert len(ids.split(",")) <= 2, sql
    assert not Message.objects.filter(pk__in=[m.pk for m in old]).exists()
    # The messages' bytes are deleted, never read.
    assert not [q for q in queries.captured_queries if '"relay_message"."content"' in q["sql"]]

    more = [delivered(queues, f"v{n}@example.org", DAYS + 1) for n in range(3)]
    stopped = prune.prune(batch=1, seconds=0)
    assert not stopped.complete
    assert stopped.events == 1 and stopped.messages == 0
    assert Message.objects.filter(pk__in=[m.pk for m in more]).count() == 3


def test_the_retention_is_the_organizations(queues: Queues, retention: int) -> None:
    message = delivered(queues, "u@example.org", DAYS + 1)
    organization = Organization.get()
    organization.tracking_retention_days = DAYS + 2
    organization.save()

    maintenance.prune_history()

    assert Message.objects.filter(pk=message.pk).exists()
    organization.tracking_retention_days = DAYS
    organization.save()
    maintenance.prune_history()
    assert not Message.objects.filter(pk=message.pk).exists()


def test_beat_prunes_every_hour() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["relay-prune"]
    assert entry["task"] == maintenance.prune_history.name
    assert entry["schedule"] == 3600.0


@pytest.mark.parametrize("url", ["/relay/queues/", "/relay/tracking/"])
def test_the_queue_viewer_and_the_tracking_center_say_how_long_history_is_kept(
    administrator: User, retention: int, url: str
) -> None:
    page = html_of(logged_in(administrator).get(url))

    assert f"History is kept for {DAYS} days" in page
