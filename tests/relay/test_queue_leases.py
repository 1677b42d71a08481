"""relay.queue.leases: the one lease protocol of remote and local delivery. A claim takes only
due entries nobody holds, of one queue; renew and release touch only the caller's own lease;
a lease that ran out is anyone's; two claimers at once never share a row."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import close_old_connections, connection
from django.utils import timezone

from relay.intake import accept
from relay.models import LinkQueue, QueueEntry
from relay.queue import leases
from tests.relay.test_intake import World, envelope, make_connector, make_world
from tests.threads import TestThread, finish_all

pytestmark = pytest.mark.django_db

# The clock the tests hold: after everything they queue (which is due at once).
NOW = timezone.now() + timedelta(hours=1)
PAST = NOW - timedelta(minutes=5)
FUTURE = NOW + timedelta(minutes=5)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def local_entry(world: World) -> QueueEntry:
    (pk,) = accept(envelope(world.vs, ["alice@smtpadmin.test"])).local_entry_ids
    return QueueEntry.objects.get(pk=pk)


def remote_entry(world: World) -> QueueEntry:
    if not LinkQueue.objects.filter(kind=LinkQueue.Kind.CONNECTOR).exists():
        make_connector(
            "Partner", [("example.org", 1)], [world.vs], use_dns=False, smart_hosts="[192.0.2.1]"
        )
    accepted = accept(envelope(world.vs, ["bob@example.org"]))
    return QueueEntry.objects.get(message_id=accepted.message_pk)


# An entry of the local queue as each row leaves it, and whether a claim on that queue takes it.
CLAIM_TABLE: list[tuple[str, dict[str, Any], bool]] = [
    ("ready and due", {"next_attempt_at": PAST}, True),
    ("waiting for a retry whose time has come", {"state": "retry", "next_attempt_at": PAST}, True),
    ("not due yet", {"state": "retry", "next_attempt_at": FUTURE}, False),
    ("held by another worker", {"lease_owner": "other/1#1", "lease_until": FUTURE}, False),
    ("its worker's lease ran out", {"lease_owner": "dead/1#1", "lease_until": PAST}, True),
    ("frozen", {"state": "frozen"}, False),
    ("done", {"state": "done"}, False),
]


@pytest.mark.parametrize(
    ("case", "fields", "taken"), CLAIM_TABLE, ids=[row[0] for row in CLAIM_TABLE]
)
def test_a_claim_takes_only_due_entries_nobody_holds_of_its_own_queue(
    world: World, case: str, fields: dict[str, Any], taken: bool
) -> None:
    entry = local_entry(world)
    QueueEntry.objects.filter(pk=entry.pk).update(**{"next_attempt_at": PAST, **fields})
    elsewhere = remote_entry(world)  # due, free, in another queue
    assert elsewhere.queue_id != entry.queue_id

    won = leases.claim_due(entry.queue_id, "me/1#1", NOW, seconds=60, limit=10)

    assert [e.pk for e in won] == ([entry.pk] if taken else [])
    entry.refresh_from_db()
    assert (entry.lease_owner == "me/1#1") is taken
    if taken:
        assert entry.lease_until == NOW + timedelta(seconds=60)
    elsewhere.refresh_from_db()
    assert elsewhere.lease_owner == ""


@pytest.mark.parametrize(
    ("case", "fields", "taken"), CLAIM_TABLE, ids=[row[0] for row in CLAIM_TABLE]
)
def test_a_claim_by_id_follows_the_same_table(
    world: World, case: str, fields: dict[str, Any], taken: bool
) -> None:
    entry = local_entry(world)
    QueueEntry.objects.filter(pk=entry.pk).update(**{"next_attempt_at": PAST, **fields})

    won = leases.claim([entry.pk], "me/1#1", NOW, seconds=60)

    assert [e.pk for e in won] == ([entry.pk] if taken else [])


def test_a_claim_takes_at_most_its_limit_oldest_first(world: World) -> None:
    entries = [local_entry(world) for _ in range(5)]
    for age, entry in enumerate(entries):  # the last queued waits longest
        QueueEntry.objects.filter(pk=entry.pk).update(next_attempt_at=PAST - timedelta(age))

    won = leases.claim_due(entries[0].queue_id, "me/1#1", NOW, seconds=60, limit=2)

    assert [e.pk for e in won] == [entries[-1].pk, entries[-2].pk]
    assert QueueEntry.objects.filter(lease_owner="me/1#1").count() == 2


def test_renew_extends_only_the_callers_own_lease(world: World) -> None:
    mine, theirs = local_entry(world), local_entry(world)
    leases.claim([mine.pk], "me/1#1", NOW, seconds=60)
    leases.claim([theirs.pk], "other/2#1", NOW, seconds=60)

    later = NOW + timedelta(seconds=30)
    assert leases.renew([mine.pk, theirs.pk], "me/1#1", seconds=60, now=later) == 1

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.lease_until == later + timedelta(seconds=60)
    assert theirs.lease_until == NOW + timedelta(seconds=60)
    assert theirs.lease_owner == "other/2#1"


def test_a_lease_taken_over_is_not_renewed_by_its_old_owner(world: World) -> None:
    entry = local_entry(world)
    leases.claim([entry.pk], "slow/1#1", NOW, seconds=60)
    after = NOW + timedelta(seconds=61)
    leases.claim([entry.pk], "next/2#1", after, seconds=60)

    assert leases.renew([entry.pk], "slow/1#1", seconds=600, now=after) == 0

    entry.refresh_from_db()
    assert (entry.lease_owner, entry.lease_until) == ("next/2#1", after + timedelta(seconds=60))


def test_release_gives_up_only_the_callers_own_lease_and_the_entry_is_due_again(
    world: World,
) -> None:
    mine, theirs = local_entry(world), local_entry(world)
    leases.claim([mine.pk], "me/1#1", NOW, seconds=60)
    leases.claim([theirs.pk], "other/2#1", NOW, seconds=60)

    assert leases.release([mine.pk, theirs.pk], "me/1#1") == 1

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.lease_owner, mine.lease_until) == ("", None)
    assert theirs.lease_owner == "other/2#1"
    assert [e.pk for e in leases.claim([mine.pk], "third/3#1", NOW, seconds=60)] == [mine.pk]


def test_an_expired_lease_is_claimable_by_another_owner_and_the_old_one_writes_nothing(
    world: World,
) -> None:
    entry = local_entry(world)
    leases.claim([entry.pk], "dead/1#1", NOW, seconds=60)
    assert leases.claim([entry.pk], "next/2#1", NOW + timedelta(seconds=59), seconds=60) == []

    won = leases.claim([entry.pk], "next/2#1", NOW + timedelta(seconds=61), seconds=60)

    assert [e.pk for e in won] == [entry.pk]
    assert entry.leased_to("dead/1#1").update(state="done") == 0
    entry.refresh_from_db()
    assert (entry.state, entry.lease_owner) == ("ready", "next/2#1")


def test_the_lease_length_is_the_callers_remote_and_local_have_their_own_settings(
    settings: Any,
) -> None:
    settings.SMTPADMIN_DELIVERY_LEASE_SECONDS = 900
    settings.SMTPADMIN_LOCAL_DELIVERY_LEASE_SECONDS = 15
    assert leases.delivery_lease_seconds() == 900
    assert leases.local_lease_seconds() == 15


def test_begin_attempt_tells_first_attempts_from_ones_after_a_dead_attempt(world: World) -> None:
    fresh, tried = local_entry(world), local_entry(world)
    QueueEntry.objects.filter(pk=tried.pk).update(last_attempt_at=PAST)
    won = leases.claim([fresh.pk, tried.pk], "me/1#1", NOW, seconds=60)

    assert leases.begin_attempt(won, "me/1#1", NOW) == {fresh.pk}

    assert set(QueueEntry.objects.values_list("last_attempt_at", flat=True)) == {NOW}
    # Claimed again (the first attempt died): neither is a first attempt any more.
    again = leases.claim([fresh.pk, tried.pk], "me/2#1", NOW + timedelta(seconds=61), seconds=60)
    assert leases.begin_attempt(again, "me/2#1", NOW) == frozenset()


@pytest.mark.django_db(transaction=True)
def test_two_claimers_at_the_same_time_never_get_the_same_row(world: World) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("concurrent writers need PostgreSQL (SQLite serialises them anyway)")
    count = 60
    entries = [local_entry(world) for _ in range(count)]
    queue_pk = entries[0].queue_id
    now = timezone.now()
    won: dict[str, list[int]] = {"a/1": [], "b/2": []}
    start = threading.Barrier(2)

    def claimer(worker: str) -> None:
        try:
            start.wait(5)
            while True:
                owner = leases.new_owner(worker)
                got = leases.claim_due(queue_pk, owner, now, seconds=60, limit=3)
                if not got:
                    return
                won[worker] += [e.pk for e in got]
        finally:
            close_old_connections()
            connection.close()

    threads = [TestThread(claimer, worker) for worker in won]
    for thread in threads:
        thread.start()
    finish_all(threads, 60)

    assert not set(won["a/1"]) & set(won["b/2"])
    assert sorted(won["a/1"] + won["b/2"]) == sorted(e.pk for e in entries)
    assert len(won["a/1"]) + len(won["b/2"]) == count
