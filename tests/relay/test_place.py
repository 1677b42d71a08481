"""relay.queue.place and relay.queue.dispatch: one placement for every caller, written in a
few multi-row statements from the caller's snapshot, several messages per transaction, one
bad message not failing its neighbours, cached link queue ids, coalesced wake-ups."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors.topology import build_topology
from relay import tasks
from relay.delivery import reroute
from relay.intake import accept, draft_request, submit_system_message
from relay.models import LinkQueue, Message, QueueEntry, Recipient, TrackingEvent
from relay.queue import dispatch, place
from relay.queue.place import Draft, Placed, Receiver, Request, place_durably
from relay.queue.timings import DeliveryTimes
from relay.queue.tracking import TrackingSettings
from servers.models import VirtualServer
from tests.relay.test_intake import World, envelope, make_connector, make_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def placed_world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def snapshot_receiver(world: World) -> Receiver:
    """As the relay's snapshot describes the virtual server: no row read per message."""
    vs = world.vs
    return Receiver(
        virtual_server_id=vs.pk,
        virtual_server_name=vs.name,
        server_id=vs.server_id,
        server_name=world.server.name,
        fqdn=vs.effective_fqdn,
        times=(DeliveryTimes(vs.pk, 60, 30, 120, 45),),
        tracking=TrackingSettings(enabled=True),
    )


def requests(world: World, recipients: list[list[str]]) -> list[Request]:
    topology = build_topology(world.vs, include_mailboxes=False)
    receiver = snapshot_receiver(world)
    return [draft_request(envelope(world.vs, rcpts), topology, receiver) for rcpts in recipients]


class Spy:
    """Counts the batches placement writes and how many messages each held."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[int] = []
        real = place._write

        def write(batch: list[Request], *args: Any, **kwargs: Any) -> Any:
            self.batches.append(len(batch))
            return real(batch, *args, **kwargs)

        monkeypatch.setattr(place, "_write", write)


# --- every caller places through place() -----------------------------------------------------


def test_smtp_intake_places_its_message(
    placed_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    accepted = accept(envelope(placed_world.vs, ["alice@smtpadmin.test", "x@one.test"]))

    assert spy.batches == [1]
    message = Message.objects.get(pk=accepted.message_pk)
    assert sorted(message.entries.values_list("queue__key", flat=True)) == [
        "dns:one.test",
        f"local:{placed_world.server.pk}",
    ]
    assert message.recipients.count() == 2
    kinds = list(
        TrackingEvent.objects.filter(queue_id=accepted.queue_id).values_list("kind", flat=True)
    )
    assert sorted(kinds) == ["received", "routed", "routed"]


def test_a_dsn_is_placed_inside_the_callers_transaction(
    placed_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    content = b"From: postmaster@smtpadmin.test\r\nSubject: Undeliverable\r\n\r\nSorry.\r\n"
    accepted = submit_system_message(placed_world.vs.pk, ["bob@smtpadmin.test"], content)

    assert spy.batches == [1]
    message = Message.objects.get(pk=accepted.message_pk)
    assert message.system and message.sender == ""
    assert message.raw.startswith(b"Received: by mx.smtpadmin.test (smtpadmin) id ")
    (entry,) = message.entries.all()
    assert entry.queue.kind == LinkQueue.Kind.LOCAL
    assert accepted.local_entry_ids == (entry.pk,)


def test_reroute_routes_with_the_cores_helpers() -> None:
    assert reroute.queue_spec is place.queue_spec
    assert reroute.spread_key is place.spread_key


# --- the writer's side: batches, statements, failures ---------------------------------------


def test_several_messages_go_in_one_batch_with_their_own_rows(placed_world: World) -> None:
    results = place_durably(
        requests(placed_world, [["alice@smtpadmin.test"], ["x@one.test"], ["y@two.test"]])
    )

    assert all(isinstance(result, Placed) for result in results)
    assert Message.objects.count() == 3
    assert QueueEntry.objects.count() == 3
    assert Recipient.objects.count() == 3
    entry = QueueEntry.objects.get(queue__key="dns:one.test")
    # The receiver's delivery times from the snapshot (60 minutes outbound expiration).
    assert entry.expires_at - entry.created_at == timedelta(minutes=60)
    local = QueueEntry.objects.get(queue__kind="local")
    assert local.expires_at - local.created_at == timedelta(minutes=120)


def test_one_bad_message_does_not_fail_its_neighbours(
    placed_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = requests(placed_world, [["alice@smtpadmin.test"], ["x@one.test"]])

    def broken(queue_id: str, now: datetime) -> Draft:
        raise ValueError("unparseable")

    bad = Request(receiver=good[0].receiver, drafter=broken)
    spy = Spy(monkeypatch)

    results = place_durably([good[0], bad, good[1]])

    assert isinstance(results[0], Placed) and isinstance(results[2], Placed)
    assert isinstance(results[1], ValueError)
    assert Message.objects.count() == 2
    # The batch failed as a whole, then each message went on its own.
    assert spy.batches == [3, 1, 1, 1]


@pytest.mark.django_db(transaction=True)
def test_the_statements_per_batch_do_not_grow_with_its_messages_nor_read_configuration(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    place_durably(requests(world, [["alice@smtpadmin.test"], ["x@one.test"]]))  # warm the cache
    single = requests(world, [["x@one.test"]])
    batch = requests(world, [["x@one.test"], ["bob@smtpadmin.test"]] * 5)

    with CaptureQueriesContext(connection) as one:
        place_durably(single)
    with CaptureQueriesContext(connection) as ten:
        place_durably(batch)

    statements = [query["sql"] for query in ten.captured_queries]
    print(f"statements: {len(one)} for 1 message, {len(ten)} for 10 in one batch")
    if connection.vendor == "postgresql":
        # Every row and the wake-up flags in one statement that commits by itself, of the
        # same text whatever the batch's size: one round trip, prepared once per process.
        assert len(one) == len(ten) == 1
        assert [q["sql"] for q in one.captured_queries] == statements
    else:
        # One INSERT per table (message, entry, recipient, tracking event), BEGIN and COMMIT.
        assert len(one) == len(ten) <= 6
    configuration = ("servers_virtualserver", "smtpadmin_organization", "relay_linkqueue")
    assert not [
        sql
        for sql in statements
        if sql.startswith("SELECT") and any(table in sql for table in configuration)
    ]
    assert Message.objects.count() == 2 + 1 + 10


@pytest.mark.django_db(transaction=True)
def test_a_cached_queue_deleted_since_does_not_lose_the_message(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    first = accept(envelope(world.vs, ["x@one.test"]))
    old = LinkQueue.objects.get(key="dns:one.test")
    Message.objects.filter(pk=first.message_pk).delete()
    old.delete()  # the cache still names it

    second = accept(envelope(world.vs, ["y@one.test"]))
    batch = place_durably(requests(world, [["z@one.test"], ["alice@smtpadmin.test"]]))

    new = LinkQueue.objects.get(key="dns:one.test")
    assert new.pk != old.pk
    assert QueueEntry.objects.get(message_id=second.message_pk).queue_id == new.pk
    assert all(isinstance(result, Placed) for result in batch)
    assert QueueEntry.objects.filter(queue=new).count() == 2


# --- coalesced wake-ups ------------------------------------------------------------------------


def test_messages_to_a_queue_with_a_task_pending_publish_nothing_more(
    placed_world: World,
    published: list[list[int]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        accept(envelope(placed_world.vs, ["x@one.test"]))
    queue = LinkQueue.objects.get(key="dns:one.test")
    for n in range(4):
        with django_capture_on_commit_callbacks(execute=True):
            accept(envelope(placed_world.vs, [f"y{n}@one.test", "alice@smtpadmin.test"]))

    assert published == [[queue.pk]]

    dispatch.started(queue.pk)  # the task begins: mail from now on needs a new one
    with django_capture_on_commit_callbacks(execute=True):
        accept(envelope(placed_world.vs, ["z@one.test"]))
    assert published == [[queue.pk], [queue.pk]]


def test_a_batch_wakes_each_queue_once(
    placed_world: World,
    published: list[list[int]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        place.place_within(
            requests(placed_world, [["x@one.test", "y@two.test", "alice@smtpadmin.test"]])[0]
        )
    one, two = (LinkQueue.objects.get(key=key).pk for key in ("dns:one.test", "dns:two.test"))
    assert published == [sorted([one, two])]


def test_a_failed_publish_leaves_the_queue_to_the_next_wake_up(
    placed_world: World,
    published: list[list[int]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    dispatch.register_publisher(lambda pks: list(pks))  # the broker is down
    with django_capture_on_commit_callbacks(execute=True):
        accept(envelope(placed_world.vs, ["x@one.test"]))
    queue = LinkQueue.objects.get(key="dns:one.test")
    assert queue.wake_requested_at is None

    def publish(pks: Any) -> list[int]:
        published.append(list(pks))
        return []

    dispatch.register_publisher(publish)  # back up
    tasks.sweep.apply().get()
    assert published == [[queue.pk]]


def test_the_sweeper_covers_a_task_the_broker_lost(
    placed_world: World,
    published: list[list[int]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        accept(envelope(placed_world.vs, ["x@one.test"]))
    queue = LinkQueue.objects.get(key="dns:one.test")
    assert published == [[queue.pk]]

    # Pending or lost, who knows: the sweep asks again for every queue with due work.
    assert tasks.sweep.apply().get() == 1
    assert published == [[queue.pk], [queue.pk]]


def test_a_wake_up_asked_for_a_minute_ago_and_never_started_holds_nothing_back(
    placed_world: World,
    published: list[list[int]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        accept(envelope(placed_world.vs, ["x@one.test"]))
    queue = LinkQueue.objects.get(key="dns:one.test")
    LinkQueue.objects.filter(pk=queue.pk).update(
        wake_requested_at=timezone.now() - dispatch.STALE_AFTER - timedelta(seconds=1)
    )

    with django_capture_on_commit_callbacks(execute=True):
        accept(envelope(placed_world.vs, ["y@one.test"]))

    assert published == [[queue.pk], [queue.pk]]


def test_nothing_is_flagged_while_publishing_is_off(placed_world: World) -> None:
    accept(envelope(placed_world.vs, ["x@one.test"]))
    assert LinkQueue.objects.get(key="dns:one.test").wake_requested_at is None


def test_receiver_times_follow_a_bridgehead_read_when_the_snapshot_lacks_it(
    placed_world: World,
) -> None:
    other = VirtualServer.objects.create(
        server=placed_world.server,
        name="Outbound",
        ip_address="127.0.0.2",
        port=2526,
        outbound_expiration_minutes=7,
    )
    make_connector("Partners", [("partner.test", 1)], [other])
    (result,) = place_durably(requests(placed_world, [["x@partner.test"]]))

    assert isinstance(result, Placed)
    entry = QueueEntry.objects.get(message_id=result.message_pk)
    assert entry.virtual_server_id == other.pk
    assert entry.expires_at - entry.created_at == timedelta(minutes=7)


def test_a_publisher_that_fails_after_the_commit_does_not_fail_the_message(
    placed_world: World,
    published: list[list[int]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    def broken(pks: Any) -> list[int]:
        raise ConnectionError("broker gone")

    dispatch.register_publisher(broken)
    with django_capture_on_commit_callbacks(execute=True):
        accepted = accept(envelope(placed_world.vs, ["x@one.test"]))

    assert Message.objects.filter(pk=accepted.message_pk).exists()
