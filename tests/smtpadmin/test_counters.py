"""smtpadmin.counters: counted in memory, written by minute and as running totals, kept when
the database refuses the write, pruned by minute while the totals stay."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connection

from smtpadmin.counters import Counters, labels_text, prune
from smtpadmin.models import MinuteCount, TotalCount
from tests.relay.harness import wait_for

pytestmark = pytest.mark.django_db

MINUTE = 29_000_000  # a fixed minute (Unix time // 60)


def minutes() -> dict[tuple[int, str, str], int]:
    return {(r.minute, r.name, r.labels): r.value for r in MinuteCount.objects.all()}


def totals() -> dict[tuple[str, str], int]:
    return {(r.name, r.labels): r.value for r in TotalCount.objects.all()}


def test_counts_are_written_per_minute_and_added_to_the_totals() -> None:
    counters = Counters()
    vs1 = labels_text({"virtual_server": "Default"})
    counters.add("received", {"virtual_server": "Default"}, at=MINUTE * 60)
    counters.add("received", {"virtual_server": "Default"}, n=2, at=MINUTE * 60 + 59)
    counters.add("received", {"virtual_server": "Default"}, at=(MINUTE + 1) * 60)
    counters.add("received", {"virtual_server": "Other"}, at=MINUTE * 60)
    assert counters.flush() == 3
    assert minutes()[(MINUTE, "received", vs1)] == 3
    assert minutes()[(MINUTE + 1, "received", vs1)] == 1
    assert totals()[("received", vs1)] == 4
    # Another process (or a later write) adds to the same rows.
    counters.add("received", {"virtual_server": "Default"}, n=5, at=MINUTE * 60)
    counters.flush()
    assert minutes()[(MINUTE, "received", vs1)] == 8
    assert totals()[("received", vs1)] == 9
    assert counters.flush() == 0  # nothing new: no statement


def test_a_histogram_observation_counts_its_bucket_count_and_sum() -> None:
    counters = Counters()
    counters.observe("latency", 0.3, {"connector": "x"}, buckets=(0.1, 0.5))
    counters.observe("latency", 7.0, {"connector": "x"}, buckets=(0.1, 0.5))
    counters.flush()
    found = totals()
    assert found[("latency:bucket", labels_text({"connector": "x", "le": 0.5}))] == 1
    assert found[("latency:bucket", labels_text({"connector": "x", "le": "+Inf"}))] == 1
    assert found[("latency:count", labels_text({"connector": "x"}))] == 2
    assert found[("latency:sum_ms", labels_text({"connector": "x"}))] == 7300


def test_counts_survive_a_refused_write(caplog: Any) -> None:
    counters = Counters()
    counters.add("received", at=MINUTE * 60)
    table = MinuteCount._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO counters_away")
    try:
        assert counters.flush() == 0
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE counters_away RENAME TO {table}")
    assert "kept for the next time" in caplog.text
    counters.add("received", at=MINUTE * 60)
    assert counters.flush() == 1
    assert minutes() == {(MINUTE, "received", ""): 2}
    assert totals() == {("received", ""): 2}


def test_pruning_removes_old_minutes_and_keeps_totals() -> None:
    counters = Counters()
    counters.add("received", at=MINUTE * 60)
    counters.add("received", at=(MINUTE + 100) * 60)
    counters.flush()
    assert prune(keep_minutes=50, now=(MINUTE + 120) * 60, batch=1) == 1
    assert list(minutes()) == [(MINUTE + 100, "received", "")]
    assert totals() == {("received", ""): 2}


@pytest.mark.django_db(transaction=True)
def test_an_enabled_process_writes_by_itself() -> None:
    counters = Counters()
    counters.enable(0.05)
    try:
        counters.add("received", at=time.time())
        wait_for(lambda: TotalCount.objects.filter(name="received").exists(), 10)
    finally:
        counters.stop()


def test_beat_prunes_the_minutes_every_hour() -> None:
    from django.conf import settings

    from smtpadmin.tasks import prune_counters

    entry = settings.CELERY_BEAT_SCHEDULE["counters-prune"]
    assert entry["task"] == "smtpadmin.tasks.prune_counters" and entry["schedule"] == 3600.0
    counters = Counters()
    counters.add("received", at=time.time() - 8 * 24 * 3600)
    counters.add("received", at=time.time())
    counters.flush()
    assert prune_counters() == 1
    assert MinuteCount.objects.count() == 1
    assert totals() == {("received", ""): 2}
