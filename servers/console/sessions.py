"""Current Sessions of a virtual server: the live sessions its relay worker reports, with
Terminate per session and Terminate All. The list refreshes itself with htmx every few
seconds; without JavaScript it is an ordinary page with a Refresh link."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import get_template
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views import View

from servers.console.common import safe_next, yes_no
from servers.models import SmtpSession, VirtualServer
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.listing import Action, Column, ObjectList
from smtpadmin.navigation import SelectsNode

REFRESH_SECONDS = 3


class CurrentSessions(SelectsNode, ObjectList):
    template_name = "servers/current_sessions.html"
    partial_template_name = "servers/current_sessions_table.html"
    empty_text = "No client is connected to this virtual server."
    columns = [
        Column("Connected client", lambda s: s.client, "client_address"),
        Column("From (HELO)", lambda s: s.helo, "helo"),
        Column("Authenticated user", lambda s: s.auth_user, "auth_user"),
        Column("Since", lambda s: s.connected_at, "connected_at"),
        Column("Messages", lambda s: s.messages, "messages"),
        Column("TLS", lambda s: yes_no(s.tls), "tls"),
    ]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if self.is_refresh(request) and not request.user.is_authenticated:
            # A refresh after the login expired: send the whole page to the login form
            # instead of letting htmx swap the login page into the table.
            response = redirect_to_login(request.get_full_path())
            return HttpResponse(status=204, headers={"HX-Redirect": response["Location"]})
        return super().dispatch(request, *args, **kwargs)

    @staticmethod
    def is_refresh(request: HttpRequest) -> bool:
        return request.headers.get("HX-Request") == "true"

    @cached_property
    def virtual_server(self) -> VirtualServer:
        return get_object_or_404(
            VirtualServer.objects.select_related("server"), pk=self.kwargs["pk"]
        )

    def selected_node(self) -> str:
        return f"vs-{self.virtual_server.pk}-sessions"

    def get_queryset(self) -> models.QuerySet[SmtpSession]:
        return SmtpSession.objects.filter(virtual_server=self.virtual_server)

    def sorted_queryset(self) -> tuple[models.QuerySet[SmtpSession], str, str]:
        queryset, sort, direction = super().sorted_queryset()
        # Kept so that the rows can be matched with their sessions after the list is built
        # (the queryset's cache is filled then: no second query).
        self.sessions = queryset
        return queryset, sort, direction

    def actions(self) -> list[Action]:
        url = reverse("servers:sessions-terminate-all", args=[self.virtual_server.pk])
        return [Action("Terminate All", url, "post")]

    def row_actions(self, obj: SmtpSession) -> list[Action]:
        if obj.terminating:
            return []
        url = reverse("servers:session-terminate", args=[self.virtual_server.pk, obj.pk])
        return [Action("Terminate", url, "post")]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        for row, session in zip(context["rows"], self.sessions, strict=True):
            row["terminating"] = session.terminating
        if not context["rows"]:
            context["actions"] = []  # nothing to terminate
        context.update(
            title=f"Current Sessions ({self.virtual_server})",
            description="Sessions appear here when the relay worker reports them.",
            refresh_seconds=REFRESH_SECONDS,
        )
        return context

    def render_to_response(self, context: dict[str, Any], **response_kwargs: Any) -> HttpResponse:
        request = self.request
        if self.is_refresh(request):
            # The table alone, without the console tree the context processors would build on
            # every refresh.
            html = get_template(self.partial_template_name).render(
                {**context, "request": request, "csrf_token": get_token(request)}
            )
            response: HttpResponse = HttpResponse(html)
        else:
            response = super().render_to_response(context, **response_kwargs)
        # One URL, two answers: a browser must not show the cached table as the page on Back.
        patch_vary_headers(response, ["HX-Request"])
        return response


class SessionAction(RoleRequiredMixin, View):
    """POST only; the role check refuses view-only administrators (403)."""

    http_method_names = ["post"]

    def virtual_server(self, pk: int) -> VirtualServer:
        return get_object_or_404(VirtualServer.objects.select_related("server"), pk=pk)

    def back(self, request: HttpRequest, virtual_server: VirtualServer) -> HttpResponse:
        return redirect(safe_next(request, reverse("servers:sessions", args=[virtual_server.pk])))


class TerminateSession(SessionAction):
    def post(self, request: HttpRequest, pk: int, session_pk: int) -> HttpResponse:
        virtual_server = self.virtual_server(pk)
        session = SmtpSession.objects.filter(pk=session_pk, virtual_server=virtual_server).first()
        if session is None:
            messages.info(request, "That session has already ended.")
        elif session.request_termination(by=request.user):
            messages.success(request, f"Terminating the session of {session.client}.")
        else:
            messages.info(request, f"The session of {session.client} is already being ended.")
        return self.back(request, virtual_server)


class TerminateAllSessions(SessionAction):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        virtual_server = self.virtual_server(pk)
        count = SmtpSession.request_termination_all(virtual_server, by=request.user)
        if count:
            plural = "" if count == 1 else "s"
            messages.success(request, f"Terminating {count} session{plural} of {virtual_server}.")
        else:
            messages.info(request, f"{virtual_server} has no sessions to terminate.")
        return self.back(request, virtual_server)
