"""The "contains" filters of Find Messages and the messages API are answered from trigram
indexes on PostgreSQL (not by reading every message); on SQLite the migration that makes
them changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from relay.admin.search import MessageFilter
from relay.models import Message
from tests.relay.queue_world import Queues

pytestmark = pytest.mark.django_db

FILTERS = [
    ({"sender": "sender7@"}, "relay_message_sender_trgm"),
    ({"recipient": "bob@"}, "relay_recipient_address_trgm"),
]


def plan_of(queryset: Any) -> str:
    """PostgreSQL's plan when reading a whole table or index is not an option it likes (the
    test's tables are tiny): which index, if any, can answer the query."""
    with connection.cursor() as cursor:
        # Plain and index-only scans of other indexes (a whole index read in order) are off
        # too: GIN answers with a bitmap scan, the one way left that is not reading it all.
        for way in ("seqscan", "indexscan", "indexonlyscan"):
            cursor.execute(f"SET LOCAL enable_{way} = off")
        sql, params = queryset.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.skipif(connection.vendor != "postgresql", reason="trigram indexes: PostgreSQL")
@pytest.mark.parametrize(("data", "index"), FILTERS)
def test_a_contains_filter_is_answered_from_its_trigram_index(
    queues: Queues, data: dict[str, str], index: str
) -> None:
    queues.send(["bob@example.org"], sender="sender7@outside.test")
    found = MessageFilter(data, queryset=Message.objects.all())
    assert found.is_valid(), found.errors

    plan = plan_of(found.qs.order_by().values("pk"))

    assert index in plan, plan
    assert list(found.qs.values_list("sender", flat=True)) == ["sender7@outside.test"]


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite side of the migration")
def test_on_sqlite_the_migration_makes_no_index() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE name LIKE '%trgm%'")
        assert cursor.fetchall() == []
