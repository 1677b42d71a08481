"""Login throttling: after ``MAX_FAILURES`` failed logins within ``WINDOW`` for a user name or
a client address, further attempts are refused until ``LOCKOUT`` has passed."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from smtpadmin.models import LoginThrottle

MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)


def keys_for(username: str, client_address: str) -> list[str]:
    return [f"user:{username.strip().lower()[:250]}", f"addr:{client_address}"]


def locked_for(keys: list[str]) -> timedelta | None:
    """How long these keys stay locked (None = not locked)."""
    now = timezone.now()
    until = (
        LoginThrottle.objects.filter(key__in=keys, locked_until__gt=now)
        .order_by("-locked_until")
        .values_list("locked_until", flat=True)
        .first()
    )
    return until - now if until else None


def record_failure(keys: list[str]) -> None:
    now = timezone.now()
    with transaction.atomic():
        for key in keys:
            row, created = LoginThrottle.objects.select_for_update().get_or_create(
                key=key, defaults={"failures": 0, "first_failure_at": now}
            )
            if not created and now - row.first_failure_at > WINDOW:
                row.failures, row.first_failure_at, row.locked_until = 0, now, None
            row.failures += 1
            if row.failures >= MAX_FAILURES:
                row.locked_until = now + LOCKOUT
            row.save()


def clear(keys: list[str]) -> None:
    """A successful login forgets the earlier failures of this name and this address. Locks
    stay: a lock is never lifted by a login (locked keys never reach a successful one), and
    other names keep their own counts, so one known password does not help guess another."""
    unlocked = Q(locked_until__isnull=True) | Q(locked_until__lte=timezone.now())
    LoginThrottle.objects.filter(unlocked, key__in=keys).delete()
