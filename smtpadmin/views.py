"""Console pages of the core: login / logout with throttling, the organization page."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from smtpadmin import throttle


def client_address(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", "unknown"))


class LoginView(auth_views.LoginView):
    template_name = "smtpadmin/login.html"
    redirect_authenticated_user = True

    def _keys(self) -> list[str]:
        return throttle.keys_for(
            self.request.POST.get("username", ""), client_address(self.request)
        )

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        remaining = throttle.locked_for(self._keys())
        if remaining is not None:
            minutes = max(1, int(remaining.total_seconds() // 60) + 1)
            form = self.get_form()
            form.errors.clear()
            unit = "minute" if minutes == 1 else "minutes"
            form.add_error(None, f"Too many failed logins. Try again in {minutes} {unit}.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        throttle.record_failure(self._keys())
        return super().form_invalid(form)

    def form_valid(self, form: Any) -> HttpResponse:
        throttle.clear(self._keys())
        return super().form_valid(form)


def logout_view(request: HttpRequest) -> HttpResponse:
    """Log out on POST only (a link or an image must not be able to log someone out)."""
    if request.method == "POST":
        logout(request)
        messages.info(request, "You have logged out.")
        return redirect("smtpadmin:login")
    return render(request, "smtpadmin/logout.html", status=405 if request.method != "GET" else 200)
