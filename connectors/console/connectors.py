"""SMTP connectors: the Connectors container of a routing group, the connector's property
sheet (seven tabs, one form, one POST), New and Delete."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.shortcuts import get_object_or_404
from django.urls import reverse

from connectors.console.common import connector_state, yes_no
from connectors.forms import AddressSpaceTable, ConnectorForm
from connectors.models import Connector
from servers.models import RoutingGroup, VirtualServer
from smtpadmin.listing import Action, Column, DeleteConfirm, ObjectList, first_of
from smtpadmin.navigation import SelectsNode
from smtpadmin.roles import Role
from smtpadmin.sheets import Group, PropertySheet, SheetPart, Tab


def _spaces(connector: Connector) -> str:
    return ", ".join(f"{s.domain} ({s.cost})" for s in connector.address_spaces.all())


def _route(connector: Connector) -> str:
    if connector.use_dns or not connector.smart_hosts:
        return "DNS"
    return f"Smart hosts: {connector.smart_hosts}"


def _bridgeheads(connector: Connector) -> str:
    return ", ".join(f"{vs.name} ({vs.server.name})" for vs in connector.bridgeheads.all())


class ConnectorList(SelectsNode, ObjectList):
    """All connectors, or those of one routing group (the group's Connectors container)."""

    title = "Connectors"
    nav_key = "routing_groups"
    empty_text = "There are no connectors."
    search_fields = ("name",)
    columns = [
        Column("Name", lambda c: c.name, "name", link=True),
        Column("Address spaces (cost)", _spaces),
        Column("Route", _route, "use_dns"),
        Column("Bridgeheads", _bridgeheads),
        Column("Enabled", lambda c: yes_no(c.enabled), "enabled"),
        Column("State", lambda c: connector_state(c)[1] or "up", "down_until"),
    ]

    def group(self) -> RoutingGroup | None:
        if "group" not in self.kwargs:
            return None
        return get_object_or_404(RoutingGroup, pk=self.kwargs["group"])

    def get_queryset(self) -> models.QuerySet[Any]:
        queryset = Connector.objects.prefetch_related(
            "address_spaces",
            models.Prefetch("bridgeheads", queryset=VirtualServer.objects.select_related("server")),
        ).order_by("name")
        group = self.group()
        return queryset.filter(routing_group=group) if group else queryset

    def object_url(self, obj: Any) -> str:
        return reverse("connectors:connector", args=[obj.pk])

    def actions(self) -> list[Action]:
        group = self.group()
        if group is None:
            return [Action("New SMTP Connector", reverse("connectors:connector-new"))]
        url = reverse("connectors:group-connector-new", args=[group.pk])
        return [Action("New SMTP Connector", url)]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        group = self.group()
        if group is not None:
            context["title"] = f"Connectors of {group.name}"
        return context

    def selected_node(self) -> str:
        return f"routing-group-{self.kwargs['group']}-connectors" if "group" in self.kwargs else ""


CONNECTOR_TABS = [
    Tab(
        "General",
        ("name", "enabled", "routing_group", "use_dns", "smart_hosts", "bridgeheads"),
    ),
    Tab(
        "Address Space",
        ("scope", "allow_relay"),
        "Allow messages to be relayed to these domains: every bridgehead of this connector "
        "(every virtual server, when it lists none) accepts mail for these address spaces from "
        "any client, as a backup MX does. Address space * is never relayed to (an open relay).",
        parts=("address_spaces",),
    ),
    Tab(
        "Delivery Restrictions",
        ("restrictions_enforced", "accept_by_default", "sender_exceptions"),
        "Who may send over this connector; applied only when enforced.",
    ),
    Tab(
        "Content Restrictions",
        groups=(
            Group(
                "Allowed priorities",
                ("allow_priority_high", "allow_priority_normal", "allow_priority_low"),
            ),
            Group("Allowed types", ("allow_system_messages", "allow_non_system_messages")),
            Group("Allowed sizes", ("max_message_size_kb",), "Blank = any size."),
        ),
    ),
    Tab(
        "Delivery Options",
        ("schedule_mode", "schedule_daily_time", "schedule_grid"),
        groups=(
            Group(
                "Oversize messages",
                (
                    "oversize_schedule_enabled",
                    "oversize_threshold_kb",
                    "oversize_schedule_mode",
                    "oversize_schedule_daily_time",
                    "oversize_schedule_grid",
                ),
            ),
            Group("Remote triggered delivery", ("queue_for_remote_delivery",)),
        ),
    ),
    Tab(
        "Advanced",
        ("send_helo",),
        groups=(
            Group(
                "Outbound security",
                (
                    "outbound_auth",
                    "outbound_username",
                    "outbound_password",
                    "clear_outbound_password",
                    "tls_mode",
                    "tls_verify",
                ),
            ),
            Group("ETRN/TURN", ("etrn_request", "etrn_domains")),
        ),
    ),
    Tab("Details", ("admin_note",), readonly=("created_at", "modified_at", "delivery_state")),
]


class ConnectorSheet(SelectsNode, PropertySheet):
    model = Connector
    base_form = ConnectorForm
    tabs = CONNECTOR_TABS

    def get_object(self) -> Connector | None:
        return get_object_or_404(Connector, pk=self.kwargs["pk"])

    def get_parts(self, instance: Any, data: Any) -> dict[str, SheetPart]:
        return {"address_spaces": AddressSpaceTable(instance, data)}

    def get_success_url(self, instance: Any) -> str:
        return reverse("connectors:connector", args=[instance.pk])

    def readonly_value(self, instance: Any, name: str) -> tuple[str, Any]:
        if name == "delivery_state":
            text = connector_state(instance)[1] if instance.pk else ""
            return "Delivery state", text or "up"
        label, value = super().readonly_value(instance, name)
        return label.replace("Created at", "Created").replace("Modified at", "Modified"), value

    def actions(self) -> list[Action]:
        pk = self.kwargs.get("pk")
        return [Action("Delete", reverse("connectors:connector-delete", args=[pk]))] if pk else []

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        form = context.get("form")
        if form is not None and form.instance.pk:
            context["title"] = f"{form.instance.name} Properties"
        return context

    def selected_node(self) -> str:
        return f"connector-{self.kwargs['pk']}" if "pk" in self.kwargs else ""


class NewConnector(ConnectorSheet):
    """A new SMTP connector: address space ``*`` at cost 1, in the chosen routing group."""

    title = "New SMTP Connector"
    read_role = Role.ADMINISTRATOR

    def get_object(self) -> Connector | None:
        return None

    def new_object(self) -> Connector:
        connector = Connector()
        if "group" in self.kwargs:
            connector.routing_group = get_object_or_404(RoutingGroup, pk=self.kwargs["group"])
        else:
            first = RoutingGroup.objects.order_by("pk").first()
            if first is not None:
                connector.routing_group = first
        return connector

    def get_initial(self) -> dict[str, Any]:
        # With one virtual server there is no choice to make: it is the bridgehead.
        only = list(VirtualServer.objects.values_list("pk", flat=True)[:2])
        return {"bridgeheads": only} if len(only) == 1 else {}

    def selected_node(self) -> str:
        return f"routing-group-{self.kwargs['group']}-connectors" if "group" in self.kwargs else ""


class ConnectorDelete(SelectsNode, DeleteConfirm):
    model = Connector

    def success_url(self, instance: Any) -> str:
        return reverse("connectors:group-connectors", args=[instance.routing_group_id])

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        # Address spaces are deleted in bulk (no signals), so the collector does not list them.
        spaces = [f"Address space: {space}" for space in context["object"].address_spaces.all()]
        context["also"] = sorted(set(context["also"]) | set(spaces))
        return context

    def links(self, instance: Any) -> list[str]:
        bridgeheads = instance.bridgeheads.select_related("server").order_by("name", "pk")
        return first_of(bridgeheads, lambda vs: f"Bridgehead: {vs}")

    def selected_node(self) -> str:
        return f"connector-{self.kwargs['pk']}"
