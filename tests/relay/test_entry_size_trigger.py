"""The database copies a message's size into each of its queue entries (Queue Viewer reads a
queue's total size from its entries' index): on insert, whoever inserts; never changed by a
later save of a stale entry object; and filled once for the entries that were there before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from relay.models import QueueEntry
from tests.relay.queue_world import Queues

BEFORE = [("relay", "0006_link_queue_wake")]
AFTER = [("relay", "0007_queues_scale")]


def stored_size(entry_pk: int) -> int:
    return int(QueueEntry.objects.filter(pk=entry_pk).values_list("message_size", flat=True)[0])


@pytest.mark.django_db
def test_every_entry_gets_its_messages_size_and_keeps_it(queues: Queues) -> None:
    message = queues.send(["bob@example.org", "bob@example.net"])
    entries = list(QueueEntry.objects.filter(message=message))
    assert len(entries) == 2
    assert all(stored_size(e.pk) == message.size for e in entries)

    stale = entries[0]
    stale.message_size = 0  # an object that never read the column, saved whole
    stale.save()
    QueueEntry.objects.filter(pk=entries[1].pk).update(message_size=1)
    assert [stored_size(e.pk) for e in entries] == [message.size, message.size]


@pytest.mark.django_db
def test_an_entry_inserted_without_a_size_gets_its_messages(queues: Queues) -> None:
    message = queues.send(["bob@example.org"])
    placed = QueueEntry.objects.get(message=message)
    assert stored_size(placed.pk) == message.size
    QueueEntry.objects.filter(pk=placed.pk).delete()
    # As re-routing and older code insert: an ORM row that does not know the size.
    other = QueueEntry.objects.create(
        message=message,
        queue=placed.queue,
        virtual_server=placed.virtual_server,
        expires_at=placed.expires_at,
    )
    assert stored_size(other.pk) == message.size


@pytest.mark.django_db(transaction=True)
def test_entries_queued_before_the_migration_get_their_size(transactional_db: Any) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    Message = old.get_model("relay", "Message")
    LinkQueue = old.get_model("relay", "LinkQueue")
    Entry = old.get_model("relay", "QueueEntry")
    message = Message.objects.create(queue_id="OLD0000000001", content=b"x" * 1234, size=1234)
    queue = LinkQueue.objects.create(key="dns:old.example", kind="dns", name="old.example")
    entry = Entry.objects.create(
        message=message, queue=queue, expires_at=timezone.now() + timedelta(days=1)
    )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    try:
        executor.migrate(AFTER)
        assert stored_size(entry.pk) == 1234
    finally:
        # Every later migration back, so the tests after this one find the schema whole.
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
