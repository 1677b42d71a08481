"""The three Exchange administrative roles, as Django groups, and the checks that enforce them.

* Full Administrator: everything, including users and roles.
* Administrator: all configuration, no changes to users or roles.
* View Only Administrator: read everything, change nothing.

A user in no role group (and not a superuser) may do nothing at all.
"""

from __future__ import annotations

import enum
from typing import Any

from django.contrib.auth.models import Group
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request


class Role(enum.IntEnum):
    NONE = 0
    VIEW_ONLY = 1
    ADMINISTRATOR = 2
    FULL = 3

    @property
    def label(self) -> str:
        return ROLE_LABELS[self]

    @property
    def slug(self) -> str:
        return ROLE_SLUGS[self]


ROLE_LABELS = {
    Role.NONE: "No role",
    Role.VIEW_ONLY: "View Only Administrator",
    Role.ADMINISTRATOR: "Administrator",
    Role.FULL: "Full Administrator",
}
ROLE_SLUGS = {
    Role.NONE: "none",
    Role.VIEW_ONLY: "view_only",
    Role.ADMINISTRATOR: "administrator",
    Role.FULL: "full_administrator",
}
GROUP_ROLES = {ROLE_LABELS[r]: r for r in (Role.VIEW_ONLY, Role.ADMINISTRATOR, Role.FULL)}


def role_from_slug(slug: str) -> Role:
    for role, text in ROLE_SLUGS.items():
        if text == slug:
            return role
    raise ValueError(f"unknown role {slug!r}")


def ensure_groups() -> None:
    for name in GROUP_ROLES:
        Group.objects.get_or_create(name=name)


def role_of(user: Any) -> Role:
    if user is None or not user.is_authenticated or not user.is_active:
        return Role.NONE
    if user.is_superuser:
        return Role.FULL
    cached = getattr(user, "_smtpadmin_role", None)
    if cached is not None:
        return Role(cached)
    names = user.groups.values_list("name", flat=True)
    role = max((GROUP_ROLES[n] for n in names if n in GROUP_ROLES), default=Role.NONE)
    user._smtpadmin_role = int(role)
    return role


def set_role(user: Any, role: Role) -> None:
    """Give a user exactly one role (removing the others)."""
    ensure_groups()
    user.groups.remove(*Group.objects.filter(name__in=GROUP_ROLES))
    if role is not Role.NONE:
        user.groups.add(Group.objects.get(name=role.label))
    if hasattr(user, "_smtpadmin_role"):
        del user._smtpadmin_role


def can_view(user: Any) -> bool:
    return role_of(user) >= Role.VIEW_ONLY


def can_change(user: Any) -> bool:
    return role_of(user) >= Role.ADMINISTRATOR


def can_manage_users(user: Any) -> bool:
    return role_of(user) >= Role.FULL


class RolePermission(BasePermission):
    """Reading needs any role; writing needs ``view.write_role`` (Administrator by default).

    A view may set ``read_role`` too (Full Administrator for the user list, say).
    """

    message = "Your role does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        role = role_of(request.user)
        if request.method in SAFE_METHODS:
            return role >= getattr(view, "read_role", Role.VIEW_ONLY)
        return role >= getattr(view, "write_role", Role.ADMINISTRATOR)
