"""Core Celery tasks."""

from __future__ import annotations

from celery import shared_task


@shared_task
def ping() -> str:
    """Proves the wiring: a worker that receives this from the broker answers "pong"."""
    return "pong"


@shared_task
def prune_counters() -> int:
    """The counters' minute rows older than a week, a batch at a time; totals stay."""
    from smtpadmin.counters import prune

    return prune()
