"""Core API: the organization's global settings, users and roles, the audit log, tokens."""

from __future__ import annotations

from typing import Any

import django_filters
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.urls import path
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.throttling import AnonRateThrottle

from smtpadmin import audit
from smtpadmin.api import (
    AuditedModelViewSet,
    Conflict,
    ModelCleanSerializer,
    StrictFieldsMixin,
)
from smtpadmin.models import AuditEntry, Organization
from smtpadmin.registry import api
from smtpadmin.roles import GROUP_ROLES, ROLE_SLUGS, Role, role_from_slug, set_role


class OrganizationSerializer(ModelCleanSerializer):
    class Meta:
        model = Organization
        exclude = ["id"]
        read_only_fields = ["modified_at"]


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
        return ROLE_SLUGS[_stored_role(value)]

    def to_internal_value(self, data: Any) -> Any:
        return {"role": super().to_internal_value(data)}


class UserSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    role = RoleField(
        choices=[ROLE_SLUGS[r] for r in Role],
        source="*",
        help_text="full_administrator, administrator, view_only or none",
    )
    password = serializers.CharField(
        write_only=True,
        required=False,
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
        if role is not None:
            set_role(instance, role_from_slug(role))
        return instance


def _stored_role(user: User) -> Role:
    """The role a (possibly inactive) user holds by group membership."""
    if user.is_superuser:
        return Role.FULL
    names = user.groups.values_list("name", flat=True)
    return max((GROUP_ROLES[n] for n in names if n in GROUP_ROLES), default=Role.NONE)


def _user_snapshot(user: User) -> dict[str, str]:
    values = {
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_active": "yes" if user.is_active else "no",
        "role": _stored_role(user).label,
    }
    # A digest, so a password change is seen as "changed" without the hash reaching the log.
    import hashlib

    values["password"] = hashlib.sha256(user.password.encode()).hexdigest()
    return values


class UserViewSet(AuditedModelViewSet):
    """Users and their roles. Reading needs any role; changes need Full Administrator."""

    queryset = User.objects.prefetch_related("groups").order_by("username")
    serializer_class = UserSerializer
    write_role = Role.FULL
    filterset_fields = ["username", "is_active"]
    search_fields = ["username", "email", "first_name", "last_name"]
    ordering_fields = ["username", "id", "last_login"]

    def _full_admins_left(self, without: User) -> int:
        return sum(
            1
            for u in User.objects.filter(is_active=True).exclude(pk=without.pk)
            if _stored_role(u) is Role.FULL
        )

    def perform_create(self, serializer: Any) -> None:
        with transaction.atomic():
            user = serializer.save()
            _record_user(self.request.user, {}, user, create=True)

    def perform_update(self, serializer: Any) -> None:
        user = serializer.instance
        data = serializer.validated_data
        demoted = "role" in data and data["role"] != ROLE_SLUGS[Role.FULL]
        deactivated = data.get("is_active") is False
        losing_full = (demoted or deactivated) and _stored_role(user) is Role.FULL
        if losing_full and not self._full_admins_left(user):
            raise Conflict("This is the last active Full Administrator; keep at least one.")
        with transaction.atomic():
            before = _user_snapshot(user)
            user = serializer.save()
            _record_user(self.request.user, before, user)

    def perform_destroy(self, instance: User) -> None:
        if _stored_role(instance) is Role.FULL and not self._full_admins_left(instance):
            raise Conflict("This is the last active Full Administrator; keep at least one.")
        with transaction.atomic():
            audit.record_delete(self.request.user, instance)
            instance.delete()


def _record_user(by: Any, before: dict[str, str], user: User, create: bool = False) -> None:
    after = _user_snapshot(user)
    action = AuditEntry.Action.CREATE if create else AuditEntry.Action.UPDATE
    rows = []
    for field, value in after.items():
        if before.get(field, "") == value:
            continue
        shown_old = "" if field == "password" or create else before.get(field, "")
        shown_new = "changed" if field == "password" else value
        rows.append(
            AuditEntry(
                user=by if by.is_authenticated else None,
                username=by.get_username(),
                action=action,
                object_type="User",
                object_id=str(user.pk),
                object_repr=user.username,
                field=field,
                old_value=shown_old,
                new_value=shown_new,
            )
        )
    AuditEntry.objects.bulk_create(rows)


class AuditEntrySerializer(serializers.ModelSerializer):
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
    filterset_class = AuditEntryFilter
    search_fields = ["object_repr", "username", "field"]
    ordering_fields = ["at", "id"]


class LoginRateThrottle(AnonRateThrottle):
    scope = "login"
    rate = "20/minute"


class TokenView(ObtainAuthToken):
    """Exchange a user name and password for the user's API token."""

    throttle_classes = [LoginRateThrottle]

    @extend_schema(
        request=inline_serializer(
            "TokenRequest",
            {"username": serializers.CharField(), "password": serializers.CharField()},
        ),
        responses=inline_serializer("TokenResponse", {"token": serializers.CharField()}),
    )
    def post(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return super().post(request, *args, **kwargs)


api.register("users", UserViewSet)
api.register("audit-log", AuditEntryViewSet, basename="audit-log")
api.add_url(path("organization/", OrganizationView.as_view(), name="organization"))
api.add_url(path("auth/token/", TokenView.as_view(), name="auth-token"))
