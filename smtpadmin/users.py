"""Users and their roles, for the API and the console alike: the role a user holds, the rule
that keeps one active Full Administrator, and the audit of user changes (a password is
recorded as "changed", never with its hash)."""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from smtpadmin import throttle
from smtpadmin.audit import record_action
from smtpadmin.models import AuditEntry, LoginThrottle
from smtpadmin.roles import GROUP_ROLES, Role

LAST_FULL_ADMINISTRATOR = "This is the last active Full Administrator; keep at least one."


def stored_role(user: User) -> Role:
    """The role a (possibly inactive) user holds by group membership."""
    if user.is_superuser:
        return Role.FULL
    names = user.groups.values_list("name", flat=True)
    return max((GROUP_ROLES[n] for n in names if n in GROUP_ROLES), default=Role.NONE)


def full_administrators_left(without: User) -> int:
    """Active Full Administrators other than ``without``."""
    return sum(
        1
        for u in User.objects.filter(is_active=True).exclude(pk=without.pk)
        if stored_role(u) is Role.FULL
    )


def last_full_administrator_problem(
    user: User, *, role: Role | None = None, is_active: bool | None = None, delete: bool = False
) -> str:
    """Why this change must not happen ('' = it may): it would leave no active Full
    Administrator. ``role`` / ``is_active`` are the new values (None = unchanged)."""
    if stored_role(user) is not Role.FULL:
        return ""
    losing = delete or (role is not None and role is not Role.FULL) or is_active is False
    if losing and not full_administrators_left(user):
        return LAST_FULL_ADMINISTRATOR
    return ""


def user_snapshot(user: User) -> dict[str, str]:
    values = {
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_active": "yes" if user.is_active else "no",
        "role": stored_role(user).label,
    }
    # A digest, so a password change is seen as "changed" without the hash reaching the log.
    values["password"] = hashlib.sha256(user.password.encode()).hexdigest()
    return values


def record_user_change(
    by: Any, before: dict[str, str], user: User, create: bool = False
) -> list[AuditEntry]:
    """One audit entry per changed field of ``user`` since ``before`` (a ``user_snapshot``)."""
    after = user_snapshot(user)
    action = AuditEntry.Action.CREATE if create else AuditEntry.Action.UPDATE
    rows = []
    for field, value in after.items():
        if before.get(field, "") == value:
            continue
        shown_old = "" if field == "password" or create else before.get(field, "")
        shown_new = "changed" if field == "password" else value
        rows.append(
            AuditEntry(
                user=by if by.is_authenticated else None,
                username=by.get_username(),
                action=action,
                object_type="User",
                object_id=str(user.pk),
                object_repr=user.username,
                field=field,
                old_value=shown_old,
                new_value=shown_new,
            )
        )
    return AuditEntry.objects.bulk_create(rows)


def login_locks(user: User) -> list[LoginThrottle]:
    """The client addresses whose failed logins count against this user's name."""
    return throttle.locks(throttle.Scope.CONSOLE, user.username)


def forget_failed_logins(user: User) -> int:
    """A new password ends the lockout: the guesses were made against the old one."""
    return throttle.unlock(throttle.Scope.CONSOLE, user.username)


def unlock_logins(user: User, by: Any) -> int:
    """Lift every login lock of this user's name, audited; returns how many client addresses
    were locked."""
    with transaction.atomic():
        failures = throttle.name_failures(throttle.Scope.CONSOLE, user.username)
        locked = forget_failed_logins(user)
        record_action(
            by, user, "login lock", f"{locked} locked, {failures} failed logins", "unlocked"
        )
    return locked
