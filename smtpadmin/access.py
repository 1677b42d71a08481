"""Role checks for console pages: one mixin every console view uses."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from smtpadmin.roles import Role, role_of


class RoleRequiredMixin:
    """Reading needs ``read_role`` (any role by default); POST needs ``write_role``.

    Sets ``self.role`` and ``self.can_write`` for the view and its template.
    """

    read_role: ClassVar[Role] = Role.VIEW_ONLY
    write_role: ClassVar[Role] = Role.ADMINISTRATOR
    request: HttpRequest

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        self.role = role_of(request.user)
        if self.role < max(self.read_role, Role.VIEW_ONLY):
            raise PermissionDenied("Your role does not allow you to see this page.")
        self.can_write = self.role >= self.write_role
        if request.method not in ("GET", "HEAD", "OPTIONS") and not self.can_write:
            raise PermissionDenied("Your role can view this but not change it.")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
