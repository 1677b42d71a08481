"""Core Celery tasks."""

from __future__ import annotations

from celery import shared_task


@shared_task
def ping() -> str:
    """Proves the wiring: a worker that receives this from the broker answers "pong"."""
    return "pong"
