"""Rows written without model instances: one multi-row INSERT per table for the queue's hot
path. Building and saving a model instance per row costs more CPU than the message it
describes; a row here is a dict of column values by attribute name, and every column the
model has and the dict lacks gets the model's default, so the rows are the ORM's."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
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


def server_cursor() -> Any:
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


def execute_prepared(cursor: Any, sql: str, parameters: Sequence[Any]) -> None:
    """Execute on a ``server_cursor`` as a prepared statement (PostgreSQL): the server parses
    and plans the text once per connection, not on every call (the ORM's connections prepare
    nothing). For the hot path's few statements of fixed text. Logged as ``execute``."""
    debug = getattr(cursor, "debug_sql", None)
    logged = debug(sql, parameters) if debug is not None else contextlib.nullcontext()
    with logged, connection.wrap_database_errors:
        cursor.cursor.execute(sql, parameters, prepare=True)


@dataclass(frozen=True)
class Arrays:
    columns: tuple[str, ...]  # quoted column names
    casts: tuple[str, ...]  # "%s::<type>[]" per column
    values: list[list[Any]]  # one list of values per column


@dataclass(frozen=True)
class _Plan:
    fields: tuple[models.Field[Any, Any], ...]
    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    columns: tuple[str, ...]
    casts: tuple[str, ...]


_plans: dict[tuple[type[models.Model], frozenset[str]], _Plan] = {}


def _plan(model: type[models.Model], exclude: frozenset[str]) -> _Plan:
    """A model's columns for ``unnest``, worked out once per process."""
    plan = _plans.get((model, exclude))
    if plan is None:
        fields = tuple(
            f for f in model._meta.concrete_fields if not f.primary_key and f.attname not in exclude
        )
        quote = connection.ops.quote_name
        plan = _plans[(model, exclude)] = _Plan(
            fields=fields,
            names=tuple(f.attname for f in fields),
            defaults=tuple(f.get_default() for f in fields),
            columns=tuple(quote(str(f.column)) for f in fields),
            # As the ORM's bulk_create: the type without its length (no truncation).
            casts=tuple(f"%s::{str(f.db_type(connection)).split('(')[0]}[]" for f in fields),
        )
    return plan


class RowWriter:
    """Inserts rows of models through the default connection, in as few statements as the
    database's parameter limit allows (one on PostgreSQL), or lays them out by column for a
    caller's ``unnest`` (``arrays``). Date-times the same for every row (the batch's "now")
    are converted once."""

    def __init__(self, now: datetime | None = None) -> None:
        self.converted: dict[datetime, Any] = {}
        if now is not None and connection.vendor == "postgresql":
            self.converted[now] = now  # psycopg takes an aware date-time as it is

    def insert(
        self, model: type[models.Model], rows: Sequence[Row], *, returning: bool = False
    ) -> list[int]:
        """Insert ``rows``; with ``returning`` their primary keys, in the order of ``rows``
        (as the ORM's bulk_create relies on: PostgreSQL and SQLite 3.35+ return them so)."""
        if not rows:
            return []
        meta = model._meta
        fields = [f for f in meta.concrete_fields if not f.primary_key]
        pk = meta.pk
        assert pk is not None
        defaults = [f.get_default() for f in fields]
        prepare = [self._converter(f) for f in fields]
        quote = connection.ops.quote_name
        head = (
            f"INSERT INTO {quote(meta.db_table)} "  # noqa: S608 - names are the model's
            f"({', '.join(quote(str(f.column)) for f in fields)}) VALUES "
        )
        tail = f" RETURNING {quote(str(pk.column))}" if returning else ""
        row_marks = "(" + ", ".join(["%s"] * len(fields)) + ")"
        limit = connection.features.max_query_params or _BOUND_PARAMETERS_LIMIT
        per_statement = max(1, limit // len(fields))
        names = [f.attname for f in fields]
        pks: list[int] = []
        with server_cursor() as cursor:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                parameters: list[Any] = []
                for row in chunk:
                    for name, default, convert in zip(names, defaults, prepare, strict=True):
                        value = row.get(name, default)
                        parameters.append(value if convert is None else convert(value))
                cursor.execute(head + ", ".join([row_marks] * len(chunk)) + tail, parameters)
                if returning:
                    pks.extend(pk for (pk,) in cursor.fetchall())
        return pks

    def arrays(
        self, model: type[models.Model], rows: Sequence[Row], exclude: Collection[str] = ()
    ) -> Arrays:
        """The rows' values by column (PostgreSQL), for ``unnest``: every concrete column but
        the primary key and those in ``exclude`` (attribute names)."""
        plan = _plan(model, frozenset(exclude))
        values = [
            [
                value if convert is None else convert(value)
                for value in (row.get(name, default) for row in rows)
            ]
            for name, default, convert in zip(
                plan.names, plan.defaults, [self._converter(f) for f in plan.fields], strict=True
            )
        ]
        return Arrays(plan.columns, plan.casts, values)

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
