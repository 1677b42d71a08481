"""What one delivered message costs the database: the statements a connection's worth of
delivery runs, per message, stay few and do not grow with the length of the queue."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.relay.engine_world import Outbound, deliver, queue_of
from tests.sinks import SinkFactory

pytestmark = pytest.mark.django_db

# Statements per delivered message (single recipient, tracking on), amortized over one
# connection of "messages per connection" messages: on PostgreSQL one statement records a
# delivered message (1.6 in all, measured), elsewhere three in a transaction (3.55).
PER_MESSAGE = 4.0


def statements_per_message(outbound: Outbound, sink: SinkFactory, waiting: int) -> float:
    """Statements per message of one connection of 20 messages, with ``waiting`` in the
    queue."""
    mx = sink()
    outbound.connector("Partner", [("example.org", 1)], smart_hosts=mx.smart_host)
    outbound.configure(messages_per_connection=20)
    messages = [outbound.send([f"user{n}@example.org"]) for n in range(waiting)]
    with CaptureQueriesContext(connection) as captured:
        assert deliver(queue_of(messages[0]), timezone.now()) == "sent"
    assert len(mx.messages) == 20
    # Savepoints are the test's transaction around each message's; in production they are
    # its BEGIN and COMMIT.
    statements = [q for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
    return len(statements) / len(mx.messages)


def test_a_delivered_message_costs_a_few_statements(outbound: Outbound, sink: SinkFactory) -> None:
    assert statements_per_message(outbound, sink, 20) <= PER_MESSAGE


def test_the_cost_does_not_grow_with_the_queue(outbound: Outbound, sink: SinkFactory) -> None:
    assert statements_per_message(outbound, sink, 400) <= PER_MESSAGE
