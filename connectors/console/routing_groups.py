"""Routing groups: the container list, the property sheet, New and Delete."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Func, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from django.urls import reverse

from connectors.models import Connector
from servers.models import RoutingGroup, Server
from smtpadmin.listing import Action, Column, DeleteConfirm, ObjectList, first_of
from smtpadmin.navigation import SelectsNode
from smtpadmin.roles import Role
from smtpadmin.sheets import PropertySheet, Tab


def _count(model: type[models.Model], field: str) -> Any:
    rows = model._default_manager.filter(**{field: OuterRef("pk")}).order_by().values(field)
    return Coalesce(Subquery(rows.annotate(n=Func("pk", function="COUNT")).values("n")), 0)


class RoutingGroupList(ObjectList):
    title = "Routing Groups"
    nav_key = "routing_groups"
    empty_text = "There are no routing groups."
    search_fields = ("name",)
    columns = [
        Column("Name", lambda g: g.name, "name", link=True),
        Column("Servers", lambda g: g.server_count, "server_count"),
        Column("Connectors", lambda g: g.connector_count, "connector_count"),
        Column("Created", lambda g: g.created_at, "created_at"),
    ]

    def get_queryset(self) -> models.QuerySet[Any]:
        # A count each, not one join of servers x connectors (a million rows for 100 servers
        # and 10,000 connectors).
        return RoutingGroup.objects.annotate(
            server_count=_count(Server, "routing_group"),
            connector_count=_count(Connector, "routing_group"),
        ).order_by("name")

    def object_url(self, obj: Any) -> str:
        return reverse("connectors:routing-group", args=[obj.pk])

    def actions(self) -> list[Action]:
        return [Action("New Routing Group", reverse("connectors:routing-group-new"))]


SHOWN = 50  # connector names on a group's sheet; its Connectors container lists them all


class RoutingGroupSheet(SelectsNode, PropertySheet):
    model = RoutingGroup
    tabs = [Tab("General", ("name",), readonly=("members", "connector_names", "created_at"))]

    def get_object(self) -> RoutingGroup:
        return get_object_or_404(RoutingGroup, pk=self.kwargs["pk"])

    def readonly_value(self, instance: Any, name: str) -> tuple[str, Any]:
        if name == "members":
            servers = ", ".join(s.name for s in instance.servers.order_by("name"))
            return "Member servers", servers
        if name == "connector_names":
            names = list(
                instance.connectors.order_by("name").values_list("name", flat=True)[:SHOWN]
            )
            text = ", ".join(names)
            if len(names) == SHOWN:
                more = instance.connectors.count() - SHOWN
                text += f" and {more} more" if more > 0 else ""
            return "Connectors", text
        return super().readonly_value(instance, name)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        if "form" in context:
            context["title"] = f"{context['form'].instance} Properties"
        return context

    def actions(self) -> list[Action]:
        group = self.get_object()
        return [Action("Delete", reverse("connectors:routing-group-delete", args=[group.pk]))]

    def selected_node(self) -> str:
        return f"routing-group-{self.kwargs['pk']}"


class NewRoutingGroup(PropertySheet):
    model = RoutingGroup
    title = "New Routing Group"
    nav_key = "routing_groups"
    read_role = Role.ADMINISTRATOR
    tabs = [Tab("General", ("name",))]

    def get_success_url(self, instance: Any) -> str:
        return reverse("connectors:routing-group", args=[instance.pk])


class RoutingGroupDelete(SelectsNode, DeleteConfirm):
    """A group with servers or connectors cannot go (they hold it with PROTECT)."""

    model = RoutingGroup

    def dependents(self, instance: Any) -> tuple[list[str], list[str]]:
        # Its servers and connectors block it: the first of each by name and how many more,
        # not every one of 10,000 connectors.
        servers = instance.servers.order_by("name", "pk").values_list("name", flat=True)
        connectors = instance.connectors.order_by("name", "pk").values_list("name", flat=True)
        blocked = first_of(servers, lambda name: f"Server: {name}")
        blocked += first_of(connectors, lambda name: f"Connector: {name}")
        return ([], blocked) if blocked else super().dependents(instance)

    def success_url(self, instance: Any) -> str:
        return reverse("connectors:routing-groups")

    def selected_node(self) -> str:
        return f"routing-group-{self.kwargs['pk']}"
