"""The routing simulator of the API: where would mail from S to R go, and why.

``GET /api/v1/routing/resolve?sender=&recipient=&size=&priority=&system=&virtual_server=``
(and ``spread_key=`` to see the other equal-cost connectors and bridgeheads).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connectors.routing import ROUTE_KINDS, Route, resolve
from connectors.snapshot import PRIORITIES, MessageFacts
from connectors.topology import shared_topologies
from servers.models import VirtualServer
from smtpadmin.roles import Role


class RoutingQuerySerializer(serializers.Serializer):
    recipient = serializers.CharField(max_length=1000, help_text="The envelope recipient.")
    sender = serializers.CharField(
        max_length=1000,
        allow_blank=True,
        default="",
        help_text="The envelope sender; blank or '<>' is the null sender (a system message).",
    )
    size = serializers.IntegerField(min_value=0, default=0, help_text="Message size in bytes.")
    priority = serializers.ChoiceField(choices=PRIORITIES, default="normal")
    system = serializers.BooleanField(
        default=False, help_text="A system message (DSN/NDR) even with a sender."
    )
    virtual_server = serializers.PrimaryKeyRelatedField(
        queryset=VirtualServer.objects.select_related("server"),
        allow_null=True,
        default=None,
        help_text="The virtual server the mail arrives on; default: the first one.",
    )
    spread_key = serializers.IntegerField(
        min_value=0,
        default=0,
        help_text="Chooses among equal-cost connectors and among bridgeheads.",
    )


class RouteStepSerializer(serializers.Serializer):
    step = serializers.CharField()
    decision = serializers.CharField()


class RouteAcceptedDomainSerializer(serializers.Serializer):
    domain = serializers.CharField()
    type = serializers.CharField()


class RouteConnectorSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class RouteAddressSpaceSerializer(serializers.Serializer):
    domain = serializers.CharField()
    cost = serializers.IntegerField()


class RouteBridgeheadSerializer(serializers.Serializer):
    virtual_server = serializers.IntegerField()
    server = serializers.IntegerField()
    name = serializers.CharField()


class RouteSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ROUTE_KINDS)
    recipient = serializers.CharField()
    domain = serializers.CharField()
    sender = serializers.CharField()
    virtual_server = serializers.IntegerField(
        allow_null=True, help_text="The source virtual server the route was computed for."
    )
    accepted_domain = RouteAcceptedDomainSerializer(allow_null=True)
    connector = RouteConnectorSerializer(allow_null=True)
    address_space = RouteAddressSpaceSerializer(allow_null=True)
    bridgehead = RouteBridgeheadSerializer(allow_null=True)
    next_hops = serializers.ListField(child=serializers.CharField())
    queued = serializers.BooleanField()
    queued_reason = serializers.CharField()
    status = serializers.CharField(help_text="SMTP reply / NDR status for reject and unreachable.")
    reason = serializers.CharField()
    steps = RouteStepSerializer(many=True)


def route_data(route: Route, sender: str, virtual_server_id: int | None) -> dict[str, Any]:
    return {
        "kind": route.kind,
        "recipient": route.recipient,
        "domain": route.domain,
        "sender": sender,
        "virtual_server": virtual_server_id,
        "accepted_domain": (
            {"domain": route.accepted_domain.pattern, "type": route.accepted_domain.type}
            if route.accepted_domain
            else None
        ),
        "connector": (
            {"id": route.connector.id, "name": route.connector.name} if route.connector else None
        ),
        "address_space": (
            {"domain": route.address_space.pattern, "cost": route.address_space.cost}
            if route.address_space
            else None
        ),
        "bridgehead": (
            {
                "virtual_server": route.bridgehead.virtual_server_id,
                "server": route.bridgehead.server_id,
                "name": route.bridgehead.name,
            }
            if route.bridgehead
            else None
        ),
        "next_hops": list(route.next_hops),
        "queued": route.queued,
        "queued_reason": route.queued_reason,
        "status": route.status,
        "reason": route.reason,
        "steps": [{"step": step.name, "decision": step.decision} for step in route.steps],
    }


class RoutingResolveView(APIView):
    """Routing simulator: the route one recipient takes, with the reason for each decision."""

    read_role = Role.VIEW_ONLY

    @extend_schema(
        operation_id="routing_resolve",
        tags=["routing"],
        summary="Where would mail from sender to recipient go, and why",
        parameters=[RoutingQuerySerializer],
        responses={
            200: RouteSerializer,
            400: OpenApiResponse(description="Invalid query parameters, with field messages."),
        },
    )
    def get(self, request: Request) -> Response:
        query = RoutingQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        topology = shared_topologies.topology(params["virtual_server"])
        message = MessageFacts(
            size=params["size"],
            priority=params["priority"],
            system=params["system"],
            spread_key=params["spread_key"],
        )
        route = resolve(params["recipient"], params["sender"], message, topology)
        data = route_data(route, params["sender"], topology.source_virtual_server_id)
        return Response(RouteSerializer(data).data)
