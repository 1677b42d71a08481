"""Core API: the organization's global settings, users and roles, the audit log, tokens."""

from __future__ import annotations

import time
from typing import Any

import django_filters
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.urls import path
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status, viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle

from smtpadmin import audit, throttle
from smtpadmin.api import (
    AuditedModelViewSet,
    Conflict,
    ModelCleanSerializer,
    StrictFieldsMixin,
)
from smtpadmin.clients import client_address
from smtpadmin.models import AuditEntry, Organization
from smtpadmin.registry import api
from smtpadmin.roles import ROLE_SLUGS, Role, role_from_slug, set_role
from smtpadmin.users import (
    forget_failed_logins,
    last_full_administrator_problem,
    record_user_change,
    stored_role,
    unlock_logins,
    user_snapshot,
)


class OrganizationSerializer(ModelCleanSerializer):
    """The organization's global message delivery limits, filtering and tracking."""

    class Meta:
        model = Organization
        exclude = ["id"]


class OrganizationView(generics.RetrieveUpdateAPIView):
    """The one organization: global message delivery limits and filtering."""

    serializer_class = OrganizationSerializer

    def get_object(self) -> Organization:
        return Organization.get()

    def perform_update(self, serializer: Any) -> None:
        with transaction.atomic():
            before = audit.snapshot(serializer.instance)
            instance = serializer.save()
            audit.record_update(self.request.user, before, instance)


class RoleField(serializers.ChoiceField):
    """The user's role as a slug; read from and written to group membership."""

    def to_representation(self, value: Any) -> str:
        return ROLE_SLUGS[stored_role(value)]

    def to_internal_value(self, data: Any) -> Any:
        return {"role": super().to_internal_value(data)}


class UserSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """A console and API user with one role; the password is write-only."""

    role = RoleField(
        choices=[ROLE_SLUGS[r] for r in Role],
        source="*",
        help_text="full_administrator, administrator, view_only or none",
    )
    password = serializers.CharField(
        write_only=True,
        required=False,
        min_length=8,
        error_messages={
            "min_length": "This password is too short. It must contain at least 8 characters."
        },
        max_length=1024,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only: required when creating; send it again only to change it.",
    )

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "role",
            "password",
            "last_login",
            "date_joined",
        ]
        read_only_fields = ["last_login", "date_joined"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None and not attrs.get("password"):
            raise serializers.ValidationError({"password": ["A new user needs a password."]})
        if attrs.get("password"):
            candidate = self.instance or User(
                **{k: v for k, v in attrs.items() if k not in ("password", "role")}
            )
            try:
                validate_password(attrs["password"], candidate)
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"password": exc.messages}) from None
        return attrs

    def create(self, validated_data: dict[str, Any]) -> User:
        role = role_from_slug(validated_data.pop("role"))
        password = validated_data.pop("password")
        user = User.objects.create_user(password=password, **validated_data)
        set_role(user, role)
        return user

    def update(self, instance: User, validated_data: dict[str, Any]) -> User:
        role = validated_data.pop("role", None)
        password = validated_data.pop("password", None)
        for key, value in validated_data.items():
            setattr(instance, key, value)
        if password:
            instance.set_password(password)
        instance.save()
        if password:
            forget_failed_logins(instance)
        if role is not None:
            set_role(instance, role_from_slug(role))
        return instance


UnlockAnswer = inline_serializer(
    "LoginUnlock",
    {"unlocked_addresses": serializers.IntegerField(help_text="Client addresses that were locked")},
)


class UserViewSet(AuditedModelViewSet):
    """Users and their roles. Reading needs any role; changes need Full Administrator."""

    queryset = User.objects.prefetch_related("groups").order_by("username")
    serializer_class = UserSerializer
    write_role = Role.FULL
    filterset_fields = ["username", "is_active"]
    search_fields = ["username", "email", "first_name", "last_name"]
    ordering_fields = ["username", "id", "last_login"]

    def perform_create(self, serializer: Any) -> None:
        with transaction.atomic():
            user = serializer.save()
            record_user_change(self.request.user, {}, user, create=True)

    def perform_update(self, serializer: Any) -> None:
        user = serializer.instance
        data = serializer.validated_data
        problem = last_full_administrator_problem(
            user,
            role=role_from_slug(data["role"]) if "role" in data else None,
            is_active=data.get("is_active"),
        )
        if problem:
            raise Conflict(problem)
        with transaction.atomic():
            before = user_snapshot(user)
            user = serializer.save()
            record_user_change(self.request.user, before, user)

    @extend_schema(
        request=None,
        responses={
            200: UnlockAnswer,
            403: OpenApiResponse(description="Only Full Administrators may unlock."),
            404: OpenApiResponse(description="No such user."),
        },
    )
    @action(detail=True, methods=["post"])
    def unlock(self, request: Request, pk: str | None = None) -> Response:
        """Lift the user's login locks and forget the failed logins of the name (audited)."""
        locked = unlock_logins(self.get_object(), by=request.user)
        return Response({"unlocked_addresses": locked})

    def perform_destroy(self, instance: User) -> None:
        problem = last_full_administrator_problem(instance, delete=True)
        if problem:
            raise Conflict(problem)
        with transaction.atomic():
            audit.record_delete(self.request.user, instance)
            instance.delete()


class AuditEntrySerializer(serializers.ModelSerializer):
    """One changed field of one object: who, when, what, old -> new."""

    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "at",
            "username",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "field",
            "old_value",
            "new_value",
        ]


class AuditEntryFilter(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="lte")
    object_type = django_filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = AuditEntry
        fields = ["username", "action", "object_type", "object_id", "field"]


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """Every configuration change: who, when, object, field, old -> new."""

    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    # Nobody writes the log through the API: anyone who may read it is told so with a 405
    # (the permission check comes before the method check, so the bar must be the read bar).
    write_role = Role.VIEW_ONLY
    filterset_class = AuditEntryFilter
    search_fields = ["object_repr", "username", "field"]
    ordering_fields = ["at", "id"]


class LoginRateThrottle(AnonRateThrottle):
    scope = "login"
    rate = "20/minute"

    def get_ident(self, request: Any) -> str:
        # DRF's own reading believes any X-Forwarded-For; only a trusted proxy's counts.
        return client_address(request)


class TokenView(ObtainAuthToken):
    """Exchange a user name and password for the user's API token."""

    throttle_classes = [LoginRateThrottle]

    @extend_schema(
        request=inline_serializer(
            "TokenCredentials",
            {"username": serializers.CharField(), "password": serializers.CharField()},
        ),
        responses={
            200: inline_serializer("Token", {"token": serializers.CharField()}),
            400: OpenApiResponse(description="Wrong user name or password."),
            429: OpenApiResponse(
                description="Too many failed logins of this user name from this address."
            ),
        },
    )
    def post(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        # The same lockout as the console's login form: guessing through the API is no faster.
        username = request.data.get("username") if isinstance(request.data, dict) else ""
        username, client = str(username or ""), client_address(request)
        pause = throttle.name_delay(throttle.Scope.CONSOLE, username)
        if pause:
            time.sleep(pause)
        if not throttle.reserve(throttle.Scope.CONSOLE, username, client):
            return Response(
                {"detail": "Too many failed logins; try again later."},
                status=status.HTTP_429_TOO_MANY_REQUESTS,
            )
        try:
            response = super().post(request, *args, **kwargs)
        except ValidationError:
            throttle.failed(throttle.Scope.CONSOLE, username, client)
            raise
        throttle.succeeded(throttle.Scope.CONSOLE, username, client)
        return response


api.register("users", UserViewSet)
api.register("audit-log", AuditEntryViewSet, basename="audit-log")
api.add_url(path("organization/", OrganizationView.as_view(), name="organization"))
api.add_url(path("auth/token/", TokenView.as_view(), name="auth-token"))
