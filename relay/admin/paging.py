"""Message lists a page at a time whatever the queue holds: keyset pages (the page after the
last row shown, by an index, never an OFFSET that reads every row before it) and counts that
stop counting at a cap (a mail administrator needs "10,000+", not the exact figure, and the
exact one costs a read of every matching row).

A cursor is the sort key of the row the page ends at, (time or number, pk), in an opaque
URL-safe token. Rows inserted while someone pages never shift the pages: the next page starts after
the last row seen, not after so many rows.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from django.db import models
from django.db.models import Q

# Counts stop here: the page says "10,000+" beyond.
COUNT_CAP = 10_000

Row = TypeVar("Row", bound=models.Model)


@dataclass(frozen=True)
class Count:
    """How many rows matched, exactly up to the cap; ``capped`` when there are more."""

    value: int
    capped: bool

    def __str__(self) -> str:
        return f"{self.value:,}+" if self.capped else f"{self.value:,}"


def capped_count(queryset: models.QuerySet[Any], cap: int = COUNT_CAP) -> Count:
    """The rows of ``queryset``, counted up to ``cap`` (one statement that stops there)."""
    found = queryset.order_by()[: cap + 1].count()
    return Count(min(found, cap), found > cap)


Key = datetime | int


def encode_cursor(value: Key, pk: int) -> str:
    shown: Any = value.isoformat() if isinstance(value, datetime) else value
    raw = json.dumps([shown, pk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[Key, int] | None:
    """The (sort value, pk) of a cursor, None when the token is not one of ours (a tampered
    or truncated link starts again at the first page, never a 500)."""
    if not token or len(token) > 200:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value, pk = json.loads(raw)
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                return None
    except (ValueError, TypeError):
        return None
    if not isinstance(pk, int) or isinstance(pk, bool) or isinstance(value, bool):
        return None
    if not isinstance(value, datetime | int) or abs(pk) > 1 << 62:
        return None
    if isinstance(value, int) and abs(value) > 1 << 62:
        return None
    return value, pk


@dataclass(frozen=True)
class KeysetPage(Generic[Row]):
    rows: list[Row]
    next_cursor: str  # "" on the last page
    previous_cursor: str  # "" on the first page


def keyset_page(
    queryset: models.QuerySet[Row],
    field: str,
    *,
    size: int,
    after: str = "",
    before: str = "",
) -> KeysetPage[Row]:
    """One page of ``queryset`` in ascending (``field``, pk) order: the first, the one after
    the cursor ``after``, or the one before the cursor ``before``."""

    def read(row: Row) -> tuple[Key, int]:
        return getattr(row, field), row.pk

    # A cursor of another list (a time where a number belongs) starts at the first page.
    kind = (
        datetime if isinstance(queryset.model._meta.get_field(field), models.DateTimeField) else int
    )

    def position_of(token: str) -> tuple[Key, int] | None:
        found = decode_cursor(token) if token else None
        return found if found is not None and isinstance(found[0], kind) else None

    backwards = False
    position = position_of(after)
    if position is None and before:
        position = position_of(before)
        backwards = position is not None
    ordered = queryset.order_by(field, "pk")
    if position is not None:
        moment, pk = position
        if backwards:
            ordered = queryset.filter(
                Q(**{f"{field}__lt": moment}) | Q(**{field: moment, "pk__lt": pk})
            ).order_by(f"-{field}", "-pk")
        else:
            ordered = ordered.filter(
                Q(**{f"{field}__gt": moment}) | Q(**{field: moment, "pk__gt": pk})
            )
    rows = list(ordered[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
    if not rows:
        return KeysetPage([], "", "")
    first, last = read(rows[0]), read(rows[-1])
    has_next = more if not backwards else True
    has_previous = (position is not None) if not backwards else more
    return KeysetPage(
        rows,
        encode_cursor(*last) if has_next else "",
        encode_cursor(*first) if has_previous else "",
    )
