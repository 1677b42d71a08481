"""Servers: the Servers container, a server's sheet, its Protocols and SMTP containers, and
the New SMTP Virtual Server page (with the Exchange 2003 / IIS 6 profile choice)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django import forms
from django.db import models
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.generic import TemplateView

from servers.console.common import server_status, virtual_server_status
from servers.models import RoutingGroup, Server, VirtualServer
from servers.models.virtual_server import PROFILE_CHOICES
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.listing import Action, Column, DeleteConfirm, ObjectList
from smtpadmin.navigation import SelectsNode
from smtpadmin.sheets import PropertySheet, SheetForm, Tab


class ServerList(ObjectList):
    title = "Servers"
    nav_key = "servers"
    empty_text = "No servers yet. A server appears when its relay worker first starts."
    search_fields = ("name", "fqdn")
    columns = [
        Column("Name", lambda s: s.name, "name", link=True),
        Column("FQDN", lambda s: s.fqdn, "fqdn"),
        Column("Routing group", lambda s: s.routing_group.name, "routing_group__name"),
        Column("Status", lambda s: server_status(s)[1], "last_seen"),
        Column("Last seen", lambda s: s.last_seen or "never", "last_seen"),
        Column("Version", lambda s: s.version, "version"),
    ]

    def get_queryset(self) -> models.QuerySet[Server]:
        return Server.objects.select_related("routing_group")

    def object_url(self, obj: Server) -> str:
        return reverse("servers:server", args=[obj.pk])

    def actions(self) -> list[Action]:
        return [Action("New Server", reverse("servers:server-new"))]


class ServerSheet(SelectsNode, PropertySheet):
    model = Server
    tabs = [Tab("General", ("name", "fqdn", "routing_group", "drop_directory"))]

    @cached_property
    def server(self) -> Server | None:
        if "pk" not in self.kwargs:
            return None
        return get_object_or_404(
            Server.objects.select_related("routing_group"), pk=self.kwargs["pk"]
        )

    def get_object(self) -> Server | None:
        return self.server

    def new_object(self) -> Server:
        return Server(routing_group=RoutingGroup.objects.order_by("pk").first())

    def selected_node(self) -> str:
        return f"server-{self.server.pk}" if self.server else "servers"

    def get_success_url(self, instance: models.Model) -> str:
        return reverse("servers:server", args=[instance.pk])

    def facts(self) -> list[tuple[str, Any]]:
        if self.server is None:
            return []
        server = self.server
        return [
            ("Status", server_status(server)[1]),
            ("Last seen", server.last_seen or "never"),
            ("Version", server.version),
            ("Address", server.address),
        ]

    def actions(self) -> list[Action]:
        if self.server is None:
            return []
        return [Action("Delete", reverse("servers:server-delete", args=[self.server.pk]))]

    def sheet_context(self, form: Any) -> dict[str, Any]:
        context = super().sheet_context(form)
        context["title"] = f"{self.server.name} Properties" if self.server else "New Server"
        return context


class ServerDelete(SelectsNode, DeleteConfirm):
    """A server with virtual servers is blocked (they are protected) and they are listed."""

    model = Server

    def selected_node(self) -> str:
        return f"server-{self.kwargs['pk']}"

    def success_url(self, instance: models.Model) -> str:
        return reverse("servers:server-list")


class ServerChild(SelectsNode, RoleRequiredMixin):
    """A page below one server in the tree."""

    kwargs: dict[str, Any]

    @cached_property
    def server(self) -> Server:
        return get_object_or_404(Server, pk=self.kwargs["pk"])


class Protocols(ServerChild, TemplateView):
    """The Protocols container of a server: SMTP is the one protocol it has."""

    template_name = "smtpadmin/list.html"

    def selected_node(self) -> str:
        return f"server-{self.server.pk}-protocols"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        count = VirtualServer.objects.filter(server=self.server).count()
        return super().get_context_data(
            title=f"Protocols ({self.server.name})",
            headers=[{"label": "Name"}, {"label": "Virtual servers"}],
            rows=[
                {
                    "url": reverse("servers:smtp", args=[self.server.pk]),
                    "cells": [{"value": "SMTP", "link": True}, {"value": count}],
                }
            ],
            **kwargs,
        )


def binding(virtual_server: VirtualServer) -> str:
    return virtual_server.binding


class SmtpContainer(ServerChild, ObjectList):
    """The SMTP container of a server: its virtual servers, with Start / Stop / Pause."""

    empty_text = "This server has no SMTP virtual servers."
    search_fields = ("name",)
    columns = [
        Column("Name", lambda v: v.name, "name", link=True),
        Column("Binding", binding, "port"),
        Column("Desired state", lambda v: v.get_desired_state_display(), "desired_state"),
        Column("Actual state", lambda v: virtual_server_status(v)[1], "state"),
        Column("Reason", lambda v: v.state_reason, "state_reason"),
    ]

    def selected_node(self) -> str:
        return f"server-{self.server.pk}-smtp"

    def get_queryset(self) -> models.QuerySet[VirtualServer]:
        return VirtualServer.objects.filter(server=self.server).select_related("server")

    def object_url(self, obj: VirtualServer) -> str:
        return reverse("servers:virtual-server", args=[obj.pk])

    def actions(self) -> list[Action]:
        return [
            Action("New SMTP Virtual Server", reverse("servers:smtp-new", args=[self.server.pk]))
        ]

    def row_actions(self, obj: VirtualServer) -> list[Action]:
        from servers.console.virtual_servers import state_actions

        return state_actions(obj)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["title"] = f"SMTP ({self.server.name})"
        return context


class NewVirtualServerForm(SheetForm):
    profile = forms.ChoiceField(
        choices=PROFILE_CHOICES,
        initial="exchange2003",
        widget=forms.RadioSelect,
        help_text="The defaults the new virtual server starts from; change any of them later.",
    )


class NewVirtualServer(SelectsNode, PropertySheet):
    """New SMTP Virtual Server: a profile, then the name and the binding."""

    model = VirtualServer
    base_form = NewVirtualServerForm
    tabs = [Tab("General", ("profile", "name", "ip_address", "port"))]

    @cached_property
    def server(self) -> Server:
        return get_object_or_404(Server, pk=self.kwargs["pk"])

    def new_object(self) -> VirtualServer:
        profile = str(self.request.POST.get("profile", "exchange2003"))
        if profile not in dict(PROFILE_CHOICES):
            profile = "exchange2003"  # the form refuses the value and says so
        return VirtualServer.with_profile(profile, server=self.server)

    def selected_node(self) -> str:
        return f"server-{self.server.pk}-smtp"

    def get_success_url(self, instance: models.Model) -> str:
        return reverse("servers:virtual-server", args=[instance.pk])

    def sheet_context(self, form: Any) -> dict[str, Any]:
        context = super().sheet_context(form)
        context["title"] = f"New SMTP Virtual Server on {self.server.name}"
        return context
