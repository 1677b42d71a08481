"""Pieces the relay's console pages share: readable states and sizes, the badge a state
wears, and the answer to an administrator's action."""

from __future__ import annotations

from datetime import datetime

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone

from relay.admin.search import MessageState
from relay.admin.viewer import QueueState
from relay.queue.models import QueueEntry
from servers.console.common import safe_next

# The console's badge colours (console.css): green running, amber paused, red stopped.
STATE_BADGES: dict[str, str] = {
    QueueState.ACTIVE: "running",
    QueueState.READY: "running",
    QueueState.RETRY: "paused",
    QueueState.SCHEDULED: "paused",
    QueueState.REMOTE: "paused",
    QueueState.FROZEN: "stopped",
    QueueState.DISABLED: "disabled",
    MessageState.DELIVERED: "running",
    MessageState.FAILED: "stopped",
    MessageState.DELETED: "stopped",
    MessageState.COMPLETED: "paused",
}


def kilobytes(size: int | None) -> str:
    """Queue Viewer shows sizes in KB (1024 bytes), rounded up: a 1-byte message is 1 KB."""
    if not size:
        return "0"
    return f"{-(-size // 1024):,}"


def when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def entry_state(entry: QueueEntry, now: datetime) -> str:
    """A message's state in one queue: Active while a worker holds its lease."""
    if entry.state != QueueEntry.State.DONE and entry.lease_until and entry.lease_until > now:
        return MessageState.ACTIVE.label
    return QueueEntry.State(entry.state).label


def done(request: HttpRequest, text: str, fallback: str, *, info: bool = False) -> HttpResponse:
    """Say what happened and go back to the page the button was on (if it is ours)."""
    (messages.info if info else messages.success)(request, text)
    return redirect(safe_next(request, fallback))


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
