"""What the queue commands (``mailq``, ``queuestats``, ``flushqueue``, ``delmsg``) share: the
acting administrator (``--as``, named in the audit log like a console user), queues named by
id or name, and sizes and ages written the way Postfix's tools write them."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db.models import Q

from relay.queue.models import LinkQueue
from smtpadmin.roles import Role, role_of


def acting_user(username: str | None) -> object:
    """The administrator a change is made as: it must exist, be active and may change
    queues (Administrator or Full Administrator), as in the console."""
    if not username:
        raise CommandError("Say who acts, for the audit log: --as USERNAME (an Administrator).")
    user = get_user_model().objects.filter(username=username).first()
    if user is None or not user.is_active:
        raise CommandError(f"No active user {username!r}.")
    if role_of(user) < Role.ADMINISTRATOR:
        raise CommandError(f"{username!r} is not an Administrator: queues cannot be changed.")
    return user


def find_queue(name_or_id: str) -> LinkQueue:
    """A link queue by its id or its exact name (as the Queue Viewer shows it)."""
    condition = Q(name=name_or_id)
    if name_or_id.isdigit():
        condition |= Q(pk=int(name_or_id))
    found = list(LinkQueue.objects.filter(condition).order_by("pk")[:10])
    if not found:
        raise CommandError(f"No queue {name_or_id!r} (give its id or its name; see queuestats).")
    if len(found) > 1:
        ids = ", ".join(str(q.pk) for q in found)
        raise CommandError(f"Several queues are named {name_or_id!r}: give the id ({ids}).")
    return found[0]


def kilobytes(size: int) -> int:
    return (size + 1023) // 1024


def age(since: datetime | None, now: datetime) -> str:
    """5s, 12m, 3h, 2d: short and sortable by eye."""
    if since is None:
        return "-"
    seconds = max(int((now - since) / timedelta(seconds=1)), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
