"""Rows written without model instances: one multi-row INSERT per table for the queue's hot
path. Building and saving a model instance per row costs more CPU than the message it
describes; a row here is a dict of column values by attribute name, and every column the
model has and the dict lacks gets the model's default, so the rows are the ORM's."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from django.db import connection, models

Row = dict[str, Any]

# Values of these fields go to the driver as they are (what the ORM would hand it too).
_AS_IS = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "BigIntegerField",
        "BinaryField",
        "BooleanField",
        "CharField",
        "ForeignKey",
        "IntegerField",
        "PositiveBigIntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SmallIntegerField",
        "TextField",
    }
)


# PostgreSQL's limit of parameters bound to one statement.
_BOUND_PARAMETERS_LIMIT = 65535


def _cursor() -> Any:
    """A cursor of the default connection that, on PostgreSQL, binds the parameters on the
    server: a message's content goes as binary bytes rather than as a hex literal twice its
    size that both ends must write and parse. Queries are logged as by ``cursor()``."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    with connection.wrap_database_errors:
        factory: Any = ServerBindingCursor  # psycopg's Cursor, as Django defines it
        raw = factory(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)
    return connection.make_cursor(raw)


def pipelined() -> contextlib.AbstractContextManager[Any]:
    """On PostgreSQL, statements executed inside go to the server without waiting for each
    other's answers (libpq's pipeline mode): the server answers them together when a result
    is read or the block ends. Errors come out as the ORM's (an IntegrityError is one)."""
    if connection.vendor != "postgresql":
        return contextlib.nullcontext()
    connection.ensure_connection()
    return _pipeline()


@contextlib.contextmanager
def _pipeline() -> Iterator[None]:
    with connection.wrap_database_errors, connection.connection.pipeline():
        yield


def allocate_ids(wanted: Sequence[tuple[type[models.Model], int]]) -> list[list[int]]:
    """Primary keys for rows about to be inserted, drawn from each model's sequence in one
    statement on PostgreSQL (none elsewhere: [] per model), so that rows which refer to each
    other go out together instead of waiting for each other's RETURNING."""
    if connection.vendor != "postgresql":
        return [[] for _ in wanted]
    quote = connection.ops.quote_name
    parts = []
    parameters: list[Any] = []
    for model, count in wanted:
        pk = model._meta.pk
        assert pk is not None
        parts.append(
            "ARRAY(SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s))"
        )
        parameters += [quote(model._meta.db_table), pk.column, count]
    with _cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), parameters)
        row = cursor.fetchone()
    return [list(ids) for ids in row]


class RowWriter:
    """Inserts rows of models through the default connection. On PostgreSQL one statement of
    the same text whatever the number of rows (a column of values per parameter, spread by
    ``unnest``), so the driver converts it once and the server prepares it once; elsewhere as
    few multi-row statements as the parameter limit allows. Date-times the same for every
    row (the batch's "now") are converted once."""

    def __init__(self, now: datetime | None = None) -> None:
        self.converted: dict[datetime, Any] = {}
        self.postgresql = connection.vendor == "postgresql"
        if now is not None and self.postgresql:
            self.converted[now] = now  # psycopg takes an aware date-time as it is

    def insert(
        self, model: type[models.Model], rows: Sequence[Row], *, returning: bool = False
    ) -> list[int]:
        """Insert ``rows``; with ``returning`` their primary keys, in the order of ``rows``
        (as the ORM's bulk_create relies on: PostgreSQL and SQLite 3.35+ return them so).
        Rows that carry their primary key (``allocate_ids``) are inserted with it."""
        if not rows:
            return []
        meta = model._meta
        pk = meta.pk
        assert pk is not None
        with_pk = pk.attname in rows[0]
        fields = [f for f in meta.concrete_fields if with_pk or not f.primary_key]
        defaults = [f.get_default() for f in fields]
        prepare = [self._converter(f) for f in fields]
        quote = connection.ops.quote_name
        head = (
            f"INSERT INTO {quote(meta.db_table)} "
            f"({', '.join(quote(str(f.column)) for f in fields)}) "
        )
        tail = f" RETURNING {quote(str(pk.column))}" if returning else ""
        names = [f.attname for f in fields]
        columns = zip(names, defaults, prepare, strict=True)
        if self.postgresql:
            values = [
                [
                    value if convert is None else convert(value)
                    for value in (row.get(name, default) for row in rows)
                ]
                for name, default, convert in columns
            ]
            types = ", ".join(f"%s::{str(f.db_type(connection)).split('(')[0]}[]" for f in fields)
            with _cursor() as cursor:
                # Names and types are the model's; every value is a parameter.
                cursor.execute(f"{head}SELECT * FROM unnest({types}){tail}", values)  # noqa: S608
                return [pk for (pk,) in cursor.fetchall()] if returning else []
        row_marks = "(" + ", ".join(["%s"] * len(fields)) + ")"
        limit = connection.features.max_query_params or _BOUND_PARAMETERS_LIMIT
        per_statement = max(1, limit // len(fields))
        pks: list[int] = []
        with _cursor() as cursor:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                parameters: list[Any] = []
                for row in chunk:
                    for name, default, convert in zip(names, defaults, prepare, strict=True):
                        value = row.get(name, default)
                        parameters.append(value if convert is None else convert(value))
                cursor.execute(
                    head + "VALUES " + ", ".join([row_marks] * len(chunk)) + tail, parameters
                )
                if returning:
                    pks.extend(pk for (pk,) in cursor.fetchall())
        return pks

    def _converter(self, field: models.Field[Any, Any]) -> Callable[[Any], Any] | None:
        if field.get_internal_type() in _AS_IS:
            return None
        if field.get_internal_type() == "DateTimeField":
            return self._datetime(field)

        def convert(value: Any) -> Any:
            return field.get_db_prep_save(value, connection)

        return convert

    def _datetime(self, field: models.Field[Any, Any]) -> Callable[[Any], Any]:
        converted = self.converted

        def convert(value: Any) -> Any:
            if value is None:
                return None
            found = converted.get(value)
            if found is None:
                found = converted[value] = field.get_db_prep_save(value, connection)
            return found

        return convert
