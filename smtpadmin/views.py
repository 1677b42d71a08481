"""Console pages of the core: login / logout with throttling, the console tree's branches."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.generic import TemplateView

from smtpadmin import throttle
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.clients import client_address
from smtpadmin.navigation import navigation

CONSOLE = throttle.Scope.CONSOLE


def lock_message(remaining: timedelta) -> str:
    minutes = max(1, int(remaining.total_seconds() // 60) + 1)
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed logins. Try again in {minutes} {unit}."


class LockedOutForm(AuthenticationForm):
    """The login form for a locked pair: it says so, and never checks the password."""

    def __init__(self, *args: Any, message: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.message = message

    def clean(self) -> dict[str, Any]:
        raise ValidationError(self.message, code="locked")


class LoginView(auth_views.LoginView):
    """The form login: a locked (name, address) pair is refused before any password check."""

    template_name = "smtpadmin/login.html"
    redirect_authenticated_user = True

    def _pair(self) -> tuple[str, str]:
        return str(self.request.POST.get("username", "")), client_address(self.request)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username, client = self._pair()
        pause = throttle.name_delay(CONSOLE, username)
        if pause:
            time.sleep(pause)
        if not throttle.reserve(CONSOLE, username, client):
            remaining = throttle.locked_for(CONSOLE, username, client) or throttle.LOCKOUT
            form = LockedOutForm(self.request, data=request.POST, message=lock_message(remaining))
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        throttle.failed(CONSOLE, *self._pair())
        return super().form_invalid(form)

    def form_valid(self, form: Any) -> HttpResponse:
        throttle.succeeded(CONSOLE, *self._pair())
        return super().form_valid(form)


def logout_view(request: HttpRequest) -> HttpResponse:
    """Log out on POST only (a link or an image must not be able to log someone out)."""
    if request.method == "POST":
        logout(request)
        messages.info(request, "You have logged out.")
        return redirect("smtpadmin:login")
    return render(request, "smtpadmin/logout.html", status=405 if request.method != "GET" else 200)


class TreeChildren(RoleRequiredMixin, TemplateView):
    """The children of a tree branch, as list items for the branch's group (the htmx request
    of its twisty); 404 for a key no branch has."""

    template_name = "smtpadmin/tree_children.html"
    http_method_names = ["get", "head", "options"]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        try:
            nodes = navigation.children(self.request.user, self.kwargs["key"])
        except KeyError:
            raise Http404("No such branch in the console tree.") from None
        return super().get_context_data(nodes=nodes, **kwargs)
