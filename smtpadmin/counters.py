"""Counters every process keeps (messages received, refused, delivered, ...), for the dashboard
and ``/metrics``.

Counting costs no database statement: ``add()`` increments a dictionary in memory. A process
that counts (the relay, the Celery workers) calls ``enable()`` once; a daemon thread then writes
what was counted every ``SMTPADMIN_COUNTER_FLUSH_SECONDS`` (and at exit) in one transaction: a
row per minute, name and labels (``MinuteCount``, the per-minute charts) and a running total per
name and labels (``TotalCount``, Prometheus counters). Several processes add to the same rows
(``INSERT ... ON CONFLICT DO UPDATE SET value = value + excluded.value``, rows in one order, so
two writers never deadlock). When the database is away the counts stay in memory and go with the
next write; a process killed with -9 loses at most the last interval's counts (figures, never
mail).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import DatabaseError, close_old_connections, connection, transaction

log = logging.getLogger("smtpadmin.counters")

Key = tuple[int, str, str]  # (minute, name, labels)
KEPT_IN_MEMORY = 20_000  # keys held while the database is away; the oldest minutes go first
BATCH = 200  # rows per INSERT


def labels_text(labels: Mapping[str, object] | None) -> str:
    """The stored form of a label set: sorted pairs as JSON, "" for none."""
    if not labels:
        return ""
    return json.dumps(sorted((str(k), str(v)) for k, v in labels.items()), ensure_ascii=False)


def labels_of(text: str) -> dict[str, str]:
    return {k: v for k, v in json.loads(text)} if text else {}


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: Counter[Key] = Counter()
        self.seconds: float = 0.0  # 0: nobody writes them on a schedule (flush() by hand)
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()
        self.stopping = threading.Event()
        self.at_exit = False

    def add(
        self,
        name: str,
        labels: Mapping[str, object] | None = None,
        n: int = 1,
        at: float | None = None,
    ) -> None:
        if n <= 0:
            return
        minute = int((time.time() if at is None else at) // 60)
        key = (minute, name, labels_text(labels))
        with self.lock:
            self._forked()
            self.pending[key] += n
            if len(self.pending) > KEPT_IN_MEMORY:
                del self.pending[min(self.pending)]
        if self.seconds and (self.thread is None or not self.thread.is_alive()):
            self._start()

    def enable(self, seconds: float) -> None:
        """This process counts: write its counts every ``seconds`` (and when it exits)."""
        self.seconds = seconds
        self._start()

    def flush(self) -> int:
        """Write what was counted; the number of rows written (0 when the database is away:
        the counts wait for the next time)."""
        with self.lock:
            self._forked()
            taken, self.pending = self.pending, Counter()
        if not taken:
            return 0
        try:
            write(taken)
        except DatabaseError as error:
            log.warning("counters not written (kept for the next time): %r", error)
            with self.lock:
                self.pending.update(taken)
            return 0
        return len(taken)

    # --- the writer thread ---------------------------------------------------------------------
    def _forked(self) -> None:
        """A child of a fork (a Celery pool process) starts with its parent's counts, which the
        parent writes itself: forget them, and the parent's thread, which did not come along."""
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.pending = Counter()
            self.thread = None
            self.stopping = threading.Event()

    def _start(self) -> None:
        with self.lock:
            self._forked()
            if self.thread is not None and self.thread.is_alive():
                return
            self.thread = threading.Thread(target=self._run, name="counters", daemon=True)
            self.thread.start()
            if not self.at_exit:
                self.at_exit = True
                atexit.register(self.flush)

    def _run(self) -> None:
        stopping = self.stopping
        while not stopping.wait(self.seconds):
            close_old_connections()
            self.flush()

    def stop(self) -> None:
        self.stopping.set()

    def observe(
        self,
        name: str,
        value: float,
        labels: Mapping[str, object] | None = None,
        buckets: tuple[float, ...] = (),
    ) -> None:
        """One observation of a histogram: its bucket (the first upper bound it fits, "+Inf"
        beyond the last), its count and its sum in milliseconds."""
        bound = next((b for b in buckets if value <= b), None)
        self.add(f"{name}:bucket", {**(labels or {}), "le": "+Inf" if bound is None else bound})
        self.add(f"{name}:count", labels)
        self.add(f"{name}:sum_ms", labels, n=max(round(value * 1000), 0))


COUNTERS = Counters()
add = COUNTERS.add
observe = COUNTERS.observe
enable = COUNTERS.enable
flush = COUNTERS.flush


def write(counts: Mapping[Key, int]) -> None:
    """Add ``counts`` to the minute rows and the totals, in one transaction."""
    from smtpadmin.models import MinuteCount, TotalCount

    totals: Counter[tuple[str, str]] = Counter()
    for (_, name, labels), n in counts.items():
        totals[(name, labels)] += n
    minutes = sorted((m, name, lab, n) for (m, name, lab), n in counts.items())
    with transaction.atomic(), connection.cursor() as cursor:
        _add_to(cursor, MinuteCount._meta.db_table, ("minute", "name", "labels"), minutes)
        running = sorted((name, lab, n) for (name, lab), n in totals.items())
        _add_to(cursor, TotalCount._meta.db_table, ("name", "labels"), running)


def _add_to(cursor: Any, table: str, key: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Rows of (key..., value): inserted, or their value added to the row of that key."""
    columns = ", ".join((*key, "value"))
    one = "(" + ", ".join(["%s"] * (len(key) + 1)) + ")"
    for chunk in _chunks(rows):
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608 (names from the models)
            + ", ".join([one] * len(chunk))
            + f" ON CONFLICT ({', '.join(key)}) DO UPDATE"
            f" SET value = {table}.value + EXCLUDED.value",
            [value for row in chunk for value in row],
        )


def _chunks(rows: list[tuple[Any, ...]]) -> Iterable[list[tuple[Any, ...]]]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


def prune(keep_minutes: int = 7 * 24 * 60, now: float | None = None, batch: int = 5000) -> int:
    """Delete minute rows older than ``keep_minutes``, a batch at a time; totals stay."""
    from smtpadmin.models import MinuteCount

    oldest = int((time.time() if now is None else now) // 60) - keep_minutes
    removed = 0
    while True:
        ids = list(
            MinuteCount.objects.filter(minute__lt=oldest).values_list("pk", flat=True)[:batch]
        )
        if not ids:
            return removed
        removed += MinuteCount.objects.filter(pk__in=ids).delete()[0]
