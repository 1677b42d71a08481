"""Trigram indexes for the "contains" searches of Find Messages, the messages API and its
``?search=``: a message's sender and a recipient's address, the two an administrator searches
most. Subject and Message-ID are left without: every index is written by intake for every
message (the four together doubled intake's insert time in the database; these two add half
of that).

Django asks PostgreSQL for ``UPPER(column::text) LIKE UPPER('%part%')``; a GIN index of
``pg_trgm`` on that very expression answers it from the index instead of reading every
message. PostgreSQL only: on SQLite this migration does nothing (its tables stay as they are).
Built CONCURRENTLY, so a relay with a full queue keeps accepting mail while they are made.
"""

from typing import Any

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

# (index, table, column): each matches the expression of an ``icontains`` lookup.
INDEXES = [
    ("relay_message_sender_trgm", "relay_message", "sender"),
    ("relay_recipient_address_trgm", "relay_recipient", "address"),
]


def create(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, table, column in INDEXES:
        schema_editor.execute(
            f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON "{table}" '
            f'USING gin ((UPPER("{column}"::text)) gin_trgm_ops)'
        )


def drop(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _table, _column in INDEXES:
        schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [("relay", "0007_queues_scale")]

    operations = [
        # CREATE EXTENSION IF NOT EXISTS pg_trgm; nothing on other databases.
        TrigramExtension(),
        migrations.RunPython(create, drop, elidable=False),
    ]
