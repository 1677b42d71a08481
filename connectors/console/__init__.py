"""Console pages of the connectors app: routing groups with their Connectors containers, the
connector's property sheet, and the Routing Simulator. Mounted at /connectors/."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from django.urls import path, reverse

from connectors.console.common import connector_state
from connectors.console.connectors import (
    ConnectorDelete,
    ConnectorList,
    ConnectorSheet,
    NewConnector,
)
from connectors.console.routing_groups import (
    NewRoutingGroup,
    RoutingGroupDelete,
    RoutingGroupList,
    RoutingGroupSheet,
)
from connectors.console.simulator import RoutingSimulator
from connectors.console.wizard import InternetMailWizard, wizard_nodes
from connectors.models import Connector
from servers.models import RoutingGroup
from smtpadmin.navigation import Node, navigation


def routing_group_nodes(user: Any) -> list[Node]:
    """Routing Groups > each group > Connectors > each connector (badge: disabled / down)."""
    groups = RoutingGroup.objects.order_by("name").prefetch_related(
        Prefetch("connectors", queryset=Connector.objects.order_by("name"))
    )
    nodes = []
    for group in groups:
        connectors = []
        for connector in group.connectors.all():
            status, text = connector_state(connector)
            connectors.append(
                Node(
                    key=f"connector-{connector.pk}",
                    label=connector.name,
                    url=reverse("connectors:connector", args=[connector.pk]),
                    icon="connector",
                    status=status,
                    status_text=text,
                )
            )
        container = Node(
            key=f"routing-group-{group.pk}-connectors",
            label="Connectors",
            url=reverse("connectors:group-connectors", args=[group.pk]),
            icon="folder",
            children=connectors,
        )
        nodes.append(
            Node(
                key=f"routing-group-{group.pk}",
                label=group.name,
                url=reverse("connectors:routing-group", args=[group.pk]),
                icon="routing-group",
                children=[container],
            )
        )
    return nodes


def tool_nodes(user: Any) -> list[Node]:
    return [
        Node(
            key="routing-simulator",
            label="Routing Simulator",
            url=reverse("connectors:simulator"),
            icon="tools",
        )
    ]


navigation.register("routing_groups", routing_group_nodes, order=10)
navigation.link_section("routing_groups", lambda: reverse("connectors:routing-groups"))
navigation.register("tools", tool_nodes, order=10)
navigation.register("tools", wizard_nodes, order=20)

app_name = "connectors"
urlpatterns = [
    path("", ConnectorList.as_view(), name="connectors"),
    path("new/", NewConnector.as_view(), name="connector-new"),
    path("<int:pk>/", ConnectorSheet.as_view(), name="connector"),
    path("<int:pk>/delete/", ConnectorDelete.as_view(), name="connector-delete"),
    path("routing-groups/", RoutingGroupList.as_view(), name="routing-groups"),
    path("routing-groups/new/", NewRoutingGroup.as_view(), name="routing-group-new"),
    path("routing-groups/<int:pk>/", RoutingGroupSheet.as_view(), name="routing-group"),
    path(
        "routing-groups/<int:pk>/delete/",
        RoutingGroupDelete.as_view(),
        name="routing-group-delete",
    ),
    path(
        "routing-groups/<int:group>/connectors/",
        ConnectorList.as_view(),
        name="group-connectors",
    ),
    path(
        "routing-groups/<int:group>/connectors/new/",
        NewConnector.as_view(),
        name="group-connector-new",
    ),
    path("simulator/", RoutingSimulator.as_view(), name="simulator"),
    path("internet-mail-wizard/", InternetMailWizard.as_view(), name="internet-mail-wizard"),
]
