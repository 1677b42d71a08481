"""/api/v1/connectors: SMTP connectors with their address spaces as a nested list."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from connectors.models import AddressSpace, Connector
from servers.models import VirtualServer
from smtpadmin.api import AuditedModelViewSet, ModelCleanSerializer
from smtpadmin.registry import api


class AddressSpaceSerializer(serializers.ModelSerializer):
    type = serializers.CharField(read_only=True)

    class Meta:
        model = AddressSpace
        fields = ["type", "domain", "cost"]


class ConnectorSerializer(ModelCleanSerializer):
    address_spaces = AddressSpaceSerializer(many=True)
    bridgeheads = serializers.PrimaryKeyRelatedField(
        many=True, queryset=VirtualServer.objects.all(), allow_empty=False
    )
    outbound_password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=500, trim_whitespace=False
    )
    has_outbound_password = serializers.SerializerMethodField()
    is_marked_down = serializers.BooleanField(read_only=True)

    class Meta:
        model = Connector
        exclude: list[str] = []
        read_only_fields = ["created_at", "modified_at", "down_until", "down_reason"]

    def get_has_outbound_password(self, obj: Connector) -> bool:
        return bool(obj.outbound_password)

    def validate_address_spaces(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not value:
            raise serializers.ValidationError("A connector needs at least one address space.")
        cleaned: list[dict[str, Any]] = []
        errors: list[Any] = []
        seen: set[str] = set()
        for entry in value:
            space = AddressSpace(domain=entry["domain"], cost=entry.get("cost", 1))
            try:
                space.clean_fields(exclude=["connector"])
                space.clean()
            except DjangoValidationError as exc:
                errors.append(exc.message_dict)
                continue
            if space.domain in seen:
                errors.append({"domain": [f"'{space.domain}' is listed twice."]})
                continue
            seen.add(space.domain)
            errors.append({})
            cleaned.append({"domain": space.domain, "cost": space.cost})
        if any(errors):
            raise serializers.ValidationError(errors)
        return cleaned

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        spaces = attrs.pop("address_spaces", None)
        attrs = super().validate(attrs)
        if spaces is not None:
            attrs["address_spaces"] = spaces
        return attrs

    def save_related(self, instance: Any, attrs: dict[str, Any]) -> None:
        super().save_related(instance, {k: v for k, v in attrs.items() if k != "address_spaces"})
        if "address_spaces" in attrs:
            instance.address_spaces.all().delete()
            AddressSpace.objects.bulk_create(
                AddressSpace(connector=instance, **space) for space in attrs["address_spaces"]
            )


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
