"""/api/v1/connectors: SMTP connectors with their address spaces as a nested list."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from connectors.models import NO_ADDRESS_SPACE, AddressSpace, Connector, check_address_spaces
from servers.api import OutboundPasswordFields
from servers.models import VirtualServer
from smtpadmin.api import AuditedModelViewSet, ModelCleanSerializer, StrictFieldsMixin
from smtpadmin.registry import api


class AddressSpaceSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """An SMTP address space: a domain pattern (*, *.example.com, example.com) and a cost."""

    type = serializers.CharField(read_only=True)

    class Meta:
        model = AddressSpace
        fields = ["type", "domain", "cost"]


class ConnectorSerializer(OutboundPasswordFields, ModelCleanSerializer):
    """An SMTP connector: an outbound route with its address spaces and bridgeheads."""

    address_spaces = AddressSpaceSerializer(
        many=True,
        allow_empty=False,
        error_messages={"empty": NO_ADDRESS_SPACE},
    )
    bridgeheads = serializers.PrimaryKeyRelatedField(
        many=True, queryset=VirtualServer.objects.all(), allow_empty=False
    )
    is_marked_down = serializers.BooleanField(read_only=True)

    class Meta:
        model = Connector
        exclude: list[str] = []

    def validate_address_spaces(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        check = check_address_spaces(value)
        if check.error:
            raise serializers.ValidationError(check.error)
        if not check.ok:
            raise serializers.ValidationError(check.row_errors)
        return check.cleaned

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        spaces = attrs.pop("address_spaces", None)
        attrs = super().validate(attrs)
        if spaces is not None:
            attrs["address_spaces"] = spaces
        return attrs

    def save_related(self, instance: Any, attrs: dict[str, Any]) -> None:
        super().save_related(instance, {k: v for k, v in attrs.items() if k != "address_spaces"})
        if "address_spaces" in attrs:
            instance.set_address_spaces(attrs["address_spaces"])


class ConnectorViewSet(AuditedModelViewSet):
    queryset = Connector.objects.prefetch_related("address_spaces", "bridgeheads").all()
    serializer_class = ConnectorSerializer
    filterset_fields = ["name", "enabled", "use_dns", "scope", "routing_group"]
    search_fields = ["name", "address_spaces__domain"]
    ordering_fields = ["name", "id"]


def _register() -> None:
    from django.urls import path

    from connectors.api_routing import RoutingResolveView

    api.register("connectors", ConnectorViewSet)
    api.add_url(path("routing/resolve", RoutingResolveView.as_view(), name="routing-resolve"))


_register()
