"""Console pages of the connectors app: routing groups with their Connectors containers, the
connector's property sheet, and the Routing Simulator. Mounted at /connectors/."""

from __future__ import annotations

import re
from typing import Any

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
from smtpadmin.navigation import BRANCH_LIMIT, Node, bounded, few_by, navigation

CONNECTOR = re.compile(r"connector-(\d+)")


def _connector_node(connector: Connector) -> Node:
    status, text = connector_state(connector)
    return Node(
        key=f"connector-{connector.pk}",
        label=connector.name,
        url=reverse("connectors:connector", args=[connector.pk]),
        icon="connector",
        status=status,
        status_text=text,
    )


def routing_group_nodes(user: Any) -> list[Node]:
    """Routing Groups > each group > Connectors, a branch: its connectors load when opened."""
    nodes = []
    for group in RoutingGroup.objects.order_by("name"):
        container = Node(
            key=f"routing-group-{group.pk}-connectors",
            label="Connectors",
            url=reverse("connectors:group-connectors", args=[group.pk]),
            icon="folder",
            branch=True,
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


def group_connectors(user: Any, match: re.Match[str], path: frozenset[str]) -> list[Node]:
    """The first connectors of a routing group by name (badge: disabled / down), the current
    page's connector, and "More…" (the group's Connectors page) when there are more."""
    group = int(match.group(1))
    connectors = Connector.objects.filter(routing_group_id=group).order_by("name", "pk")
    wanted = [int(key.removeprefix("connector-")) for key in path if CONNECTOR.fullmatch(key)]
    return bounded(
        match.group(0),
        [_connector_node(c) for c in connectors[: BRANCH_LIMIT + 1]],
        path,
        lambda: [_connector_node(c) for c in connectors.filter(pk__in=wanted)],
        reverse("connectors:group-connectors", args=[group]),
    )


def connector_parent(match: re.Match[str]) -> str:
    group = Connector.objects.filter(pk=int(match.group(1))).values_list("routing_group_id")
    return f"routing-group-{group[0][0]}-connectors" if group else ""


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
navigation.register_branch(
    r"routing-group-(\d+)-connectors",
    group_connectors,
    few=lambda: few_by(
        Connector.objects.order_by("name", "pk"),
        lambda c: f"routing-group-{c.routing_group_id}-connectors",
        _connector_node,
    ),
)
navigation.register_parent(CONNECTOR.pattern, connector_parent)
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
