"""Template context for every console page: the tree for this user and their role."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from smtpadmin.models import Organization
from smtpadmin.navigation import navigation
from smtpadmin.roles import Role, role_of


def console(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or request.path.startswith("/api/"):
        return {}
    role = role_of(user)
    if role is Role.NONE:
        return {"role": role}
    return {
        "role": role,
        "nav_tree": navigation.tree(
            user, Organization.get().name, reverse("smtpadmin:organization")
        ),
    }
