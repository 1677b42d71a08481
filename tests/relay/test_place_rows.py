"""relay.queue.rows and placement's rows: plain rows in multi-row INSERTs write what the ORM
wrote (every column, defaults included), on PostgreSQL and SQLite alike, and placing a batch
builds no model instance."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, models
from django.db.models.signals import pre_init
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from relay.intake import Envelope, accept
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from relay.queue.place import place_durably
from relay.queue.rows import Row, RowWriter
from tests.relay.test_intake import World, envelope, make_world
from tests.relay.test_place import requests

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def columns(model: type[models.Model], pk: int) -> dict[str, Any]:
    """Every column of a row but its primary key, as the database hands it back."""
    values = model._default_manager.filter(pk=pk).values(
        *[f.attname for f in model._meta.concrete_fields if not f.primary_key]
    )
    row = dict(values.get())
    return {k: bytes(v) if isinstance(v, memoryview) else v for k, v in row.items()}


def orm_pk(model: type[models.Model], row: Row) -> int:
    (saved,) = model._default_manager.bulk_create([model(**row)])
    assert saved.pk is not None
    return int(saved.pk)


def sample_rows(world: World) -> list[tuple[type[models.Model], Row]]:
    """A row of each table placement writes, with only some columns given (the rest are the
    model's defaults) and the same date-time twice, as a batch's "now" is."""
    now = timezone.now()
    message = Message.objects.create(
        queue_id="0ROWSMESSAGE00", size=3, content=b"abc", virtual_server=world.vs
    )
    queue = LinkQueue.objects.create(key="dns:rows.test", kind="dns", name="rows.test")
    entry = QueueEntry.objects.create(message=message, queue=queue, expires_at=now)
    return [
        (
            Message,
            {
                "queue_id": "0ROWSMESSAGE01",
                "virtual_server_id": world.vs.pk,
                "sender": "a@b.test",
                "content": b"Subject: x\r\n\r\nbody\r\n",
                "size": 20,
                "subject": "x",
                "system": True,
                "smtputf8": True,
                "received_at": now,
            },
        ),
        (
            QueueEntry,
            {
                "message_id": message.pk,
                "queue_id": LinkQueue.objects.create(key="dns:two.test", kind="dns", name="t").pk,
                "state": QueueEntry.State.READY,
                "next_attempt_at": now,
                "expires_at": now + timedelta(days=2),
                "delay_notify_at": now + timedelta(hours=4),
                "created_at": now,
            },
        ),
        (
            Recipient,
            {
                "message_id": message.pk,
                "entry_id": entry.pk,
                "address": "Someone@Rows.test",
                "domain": "rows.test",
                "route": "dns",
                "completed_at": now,
            },
        ),
        (
            TrackingEvent,
            {
                "kind": TrackingEvent.Kind.ROUTED,
                "at": now,
                "queue_id": "0ROWSMESSAGE01",
                "recipient": "someone@rows.test",
                "virtual_server_id": world.vs.pk,
                "size": 20,
            },
        ),
    ]


def test_a_row_written_is_the_row_the_orm_writes_for_every_table(world: World) -> None:
    for model, row in sample_rows(world):
        (ours,) = RowWriter(row.get("received_at") or row.get("at")).insert(
            model, [row], returning=True
        )
        written = columns(model, ours)
        model._default_manager.filter(
            pk=ours
        ).delete()  # the ORM's copy may not share its unique keys
        assert written == columns(model, orm_pk(model, row)), model.__name__


def test_primary_keys_come_back_in_the_order_of_the_rows_beyond_one_statement() -> None:
    # More rows than SQLite binds parameters for in one statement: several INSERTs there,
    # one on PostgreSQL; either way each key names its own row.
    now = timezone.now()
    rows = [{"kind": "received", "at": now, "queue_id": f"Q{n:05d}"} for n in range(300)]

    with CaptureQueriesContext(connection) as captured:
        pks = RowWriter(now).insert(TrackingEvent, rows, returning=True)

    assert len(set(pks)) == 300
    found = dict(TrackingEvent.objects.filter(pk__in=pks).values_list("pk", "queue_id"))
    assert [found[pk] for pk in pks] == [row["queue_id"] for row in rows]
    limit = connection.features.max_query_params
    fields = len(TrackingEvent._meta.concrete_fields) - 1
    assert len(captured) == (-(-300 // (limit // fields)) if limit else 1)


def test_nothing_is_written_for_no_rows() -> None:
    with CaptureQueriesContext(connection) as captured:
        assert RowWriter().insert(Recipient, [], returning=True) == []
    assert len(captured) == 0


@pytest.mark.django_db(transaction=True)
def test_placing_a_batch_builds_no_model_instance(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    place_durably(requests(world, [["alice@smtpadmin.test", "x@one.test"]]))  # queues cached
    batch = requests(world, [["alice@smtpadmin.test", "x@one.test"], ["bob@smtpadmin.test"]])
    built: list[str] = []

    def count(sender: type[models.Model], **kwargs: Any) -> None:
        built.append(sender.__name__)

    pre_init.connect(count)
    try:
        results = place_durably(batch)
    finally:
        pre_init.disconnect(count)

    assert len(results) == 2
    assert built == []
    assert Recipient.objects.count() == 2 + 2 + 1


def test_a_placed_message_has_the_columns_the_orm_gave_it(world: World) -> None:
    accepted = accept(_envelope(world, ["alice@smtpadmin.test", "x@one.test"]))

    message = columns(Message, accepted.message_pk)
    assert message["queue_id"] == accepted.queue_id
    assert message["virtual_server_id"] == world.vs.pk
    assert message["size"] == len(message["content"])
    assert message["content"].startswith(b"Received: from mail.outside.test")
    assert (message["priority"], message["system"], message["smtputf8"]) == ("normal", False, False)
    assert (message["helo"], message["protocol"]) == ("mail.outside.test", "ESMTP")
    entries = [
        columns(QueueEntry, pk)
        for pk in QueueEntry.objects.filter(message_id=accepted.message_pk).values_list(
            "pk", flat=True
        )
    ]
    assert len(entries) == 2
    for entry in entries:
        assert entry["state"] == "ready"
        assert entry["attempts"] == 0
        assert entry["lease_owner"] == ""
        assert entry["lease_until"] is None
        assert entry["last_attempt_at"] is None
        assert entry["completed_at"] is None
        assert entry["next_attempt_at"] == entry["created_at"] == message["received_at"]
        assert entry["expires_at"] > entry["created_at"]
    recipients = {r.address: r for r in Recipient.objects.filter(message_id=accepted.message_pk)}
    assert recipients["alice@smtpadmin.test"].state == "pending"
    assert recipients["alice@smtpadmin.test"].entry_id is not None
    assert recipients["alice@smtpadmin.test"].dsn_sent_at is None
    assert recipients["x@one.test"].completed_at is None
    kinds = sorted(
        TrackingEvent.objects.filter(queue_id=accepted.queue_id).values_list("kind", flat=True)
    )
    assert kinds == ["received", "routed", "routed"]
    received = TrackingEvent.objects.get(queue_id=accepted.queue_id, kind="received")
    assert (received.size, received.sender, received.by) == (
        message["size"],
        "sender@outside.test",
        "",
    )
    assert received.at == message["received_at"]


def _envelope(world: World, recipients: list[str]) -> Envelope:
    return envelope(world.vs, recipients)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="binding on the server")
def test_postgresql_gets_the_content_as_a_parameter_not_in_the_statement(world: World) -> None:
    content = b"Subject: bound\r\n\r\n" + b"\x00\xff binary body\r\n" * 50
    row = {"queue_id": "0BOUNDMESSAGE0", "content": content, "size": len(content)}

    with CaptureQueriesContext(connection) as captured:
        (pk,) = RowWriter().insert(Message, [row], returning=True)

    (statement,) = [query["sql"] for query in captured.captured_queries]
    assert "binary body" not in statement
    assert content.hex() not in statement
    assert bytes(Message.objects.get(pk=pk).content) == content
