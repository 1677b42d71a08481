"""Login throttling for the console, the API token endpoint and SMTP AUTH, shared by every web
and relay process through the database.

* A (user name, client address) pair is locked for ``LOCKOUT`` (15 minutes) once
  ``MAX_FAILURES`` (5) attempts within ``WINDOW`` (15 minutes) have failed. Only that pair: the
  same name from another address, and other names from that address, are not locked, so
  nobody can lock somebody else out (behind a proxy, see ``smtpadmin.clients``).
* Each user name also has a count over all addresses. From ``NAME_BACKOFF_AFTER`` (10) failures
  within ``WINDOW`` on, every attempt for that name waits ``NAME_BACKOFF_STEP`` (1 s) per
  failure beyond 9, at most ``NAME_BACKOFF_MAX`` (3 s), before its password is checked. It
  never refuses: the right password from an address that is not locked gets in after at most
  3 seconds, however many addresses are guessing.
* An attempt is reserved (counted as a failure) by one conditional UPDATE before the password
  is checked, and refused when the pair's count is full, so parallel attempts can never check
  more than ``MAX_FAILURES`` passwords per pair and window. A success clears the pair.
* A password change, and a Full Administrator's unlock, forget every count of that name.

IPv6 clients are counted by their /64: one host usually has a whole /64 to pick from.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Exists, F, Q, QuerySet, Subquery
from django.utils import timezone

from smtpadmin.models import LoginThrottle

Scope = LoginThrottle.Scope

MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
NAME_BACKOFF_AFTER = 10
NAME_BACKOFF_STEP = 1.0
NAME_BACKOFF_MAX = 3.0
NAME_FIELD_LENGTH = 250

ALL_ADDRESSES = ""  # the ``client`` of a name's own count


@dataclass(frozen=True)
class Failure:
    """What a failed attempt left behind."""

    pair_failures: int  # of this name from this address, within the window
    name_failures: int  # of this name from every address, within the window
    locked_until: datetime | None  # of this pair


def user_key(username: str) -> str:
    """Names compare without case, and without characters no stored name has (PostgreSQL
    refuses NUL; lone surrogates cannot be encoded)."""
    printable = "".join(
        c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?" for c in username
    )
    return printable.strip().lower()[:NAME_FIELD_LENGTH]


def client_key(client_address: str) -> str:
    try:
        address = ipaddress.ip_address(client_address.split("%", 1)[0])
    except ValueError:
        return user_key(client_address) or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _row(scope: str, username: str, client: str) -> QuerySet[LoginThrottle]:
    return LoginThrottle.objects.filter(scope=scope, username=username, client=client)


def _fresh_row(scope: str, username: str, client: str, now: datetime) -> QuerySet[LoginThrottle]:
    """The row of this key, created if missing, its count restarted when its window or its
    lock has run out."""
    # Two first attempts at once: the second insert is skipped, not an error.
    LoginThrottle.objects.bulk_create(
        [LoginThrottle(scope=scope, username=username, client=client, first_failure_at=now)],
        ignore_conflicts=True,
    )
    row = _row(scope, username, client)
    # Conditional on the old values: of two racing attempts, only one restarts the count.
    row.filter(Q(first_failure_at__lte=now - WINDOW) | Q(locked_until__lte=now)).update(
        failures=0, first_failure_at=now, locked_until=None
    )
    return row


def reserve(scope: str, username: str, client_address: str) -> bool:
    """Count this attempt before its password is checked; False = the pair is locked (or its
    last allowed attempts are being checked right now) and the password must not be checked."""
    now = timezone.now()
    row = _fresh_row(scope, user_key(username), client_key(client_address), now)
    # One statement: parallel attempts cannot all read "4 failures" and all go ahead.
    reserved = row.filter(failures__lt=MAX_FAILURES, locked_until__isnull=True).update(
        failures=F("failures") + 1
    )
    return reserved == 1


def failed(scope: str, username: str, client_address: str) -> Failure:
    """The reserved attempt failed: lock the pair when its count is full, count the name."""
    now = timezone.now()
    name, client = user_key(username), client_key(client_address)
    pair = _row(scope, name, client)
    pair.filter(failures__gte=MAX_FAILURES, locked_until__isnull=True).update(
        locked_until=now + LOCKOUT
    )
    _fresh_row(scope, name, ALL_ADDRESSES, now).update(failures=F("failures") + 1)
    pair_row = pair.values_list("failures", "locked_until").first()
    return Failure(
        pair_failures=pair_row[0] if pair_row else 0,
        name_failures=name_failures(scope, username),
        locked_until=pair_row[1] if pair_row else None,
    )


def succeeded(scope: str, username: str, client_address: str) -> None:
    """The right password from this address: its earlier failures are forgotten. The name's
    count stays, so that a login of the real user does not reset an attack on the name."""
    _row(scope, user_key(username), client_key(client_address)).delete()


def name_failures(scope: str, username: str) -> int:
    since = timezone.now() - WINDOW
    row = _row(scope, user_key(username), ALL_ADDRESSES).filter(first_failure_at__gt=since)
    return row.values_list("failures", flat=True).first() or 0


def name_delay(scope: str, username: str) -> float:
    """Seconds to wait before checking a password for this name (the slow per-name back-off)."""
    return backoff(name_failures(scope, username))


def backoff(failures: int) -> float:
    """The per-name back-off for a name with this many failures within the window. Pure."""
    beyond = failures - NAME_BACKOFF_AFTER + 1
    return min(beyond * NAME_BACKOFF_STEP, NAME_BACKOFF_MAX) if beyond > 0 else 0.0


def standing(scope: str, username: str, client_address: str, now: datetime) -> dict[str, Any]:
    """Expressions that read, as part of another query, what a login attempt must know of
    this name and address: whether the pair has a row at all, i.e. a count or a lock
    (``throttle_pair``), the name's failures within the window (``throttle_name_failures``,
    None = none) and its latest lock (``throttle_latest_lock``). A login from a clean pair
    then costs one statement."""
    rows = LoginThrottle.objects.filter(scope=scope, username=user_key(username))
    name_rows = rows.filter(client=ALL_ADDRESSES, first_failure_at__gt=now - WINDOW)
    return {
        "throttle_pair": Exists(rows.filter(client=client_key(client_address))),
        "throttle_name_failures": Subquery(name_rows.values("failures")[:1]),
        "throttle_latest_lock": Subquery(
            rows.filter(locked_until__gt=now).order_by("-locked_until").values("locked_until")[:1]
        ),
    }


def locked_for(scope: str, username: str, client_address: str) -> timedelta | None:
    """How long this pair stays locked (None = it is not)."""
    now = timezone.now()
    row = (
        _row(scope, user_key(username), client_key(client_address))
        .filter(first_failure_at__gt=now - WINDOW, failures__gte=MAX_FAILURES)
        .values_list("locked_until", "first_failure_at")
        .first()
    )
    if row is None:
        return None
    # Full but not yet locked: its last attempts are still being checked.
    until = row[0] or row[1] + WINDOW
    return until - now if until > now else None


def locks(scope: str, username: str) -> list[LoginThrottle]:
    """The addresses that failed for this name within the window, locked ones first."""
    now = timezone.now()
    return list(
        LoginThrottle.objects.filter(scope=scope, username=user_key(username))
        .exclude(client=ALL_ADDRESSES)
        .filter(Q(first_failure_at__gt=now - WINDOW) | Q(locked_until__gt=now), failures__gt=0)
        .order_by(F("locked_until").desc(nulls_last=True), "client")
    )


def latest_lock(scope: str, username: str) -> datetime | None:
    now = timezone.now()
    return (
        LoginThrottle.objects.filter(scope=scope, username=user_key(username), locked_until__gt=now)
        .order_by("-locked_until")
        .values_list("locked_until", flat=True)
        .first()
    )


def unlock(scope: str, username: str) -> int:
    """Forget every count and lock of this name (a password change, an administrator's
    unlock); returns how many addresses were locked."""
    rows = LoginThrottle.objects.filter(scope=scope, username=user_key(username))
    locked = rows.filter(locked_until__gt=timezone.now()).exclude(client=ALL_ADDRESSES).count()
    rows.delete()
    return locked


def describe(rows: list[LoginThrottle]) -> str:
    """Addresses and their counts in words, for a property sheet ('' = none)."""
    now = timezone.now()
    parts = []
    for row in rows:
        text = f"{row.client}: {row.failures} failed"
        if row.locked_until and row.locked_until > now:
            text += f", locked until {timezone.localtime(row.locked_until):%Y-%m-%d %H:%M:%S}"
        parts.append(text)
    return "; ".join(parts)
