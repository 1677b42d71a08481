"""Template context for every console page: the user's role (the tree is rendered by the
``console_tree`` tag, which knows the page's node)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from smtpadmin.roles import role_of


def console(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or request.path.startswith("/api/"):
        return {}
    return {"role": role_of(user)}
