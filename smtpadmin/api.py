"""Shared API pieces: the exception handler that keeps every failure a clean JSON answer."""

from __future__ import annotations

import copy
import logging
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, IntegrityError, models, transaction
from django.db.models import ProtectedError
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from smtpadmin import audit

logger = logging.getLogger(__name__)


def as_drf_validation_error(exc: DjangoValidationError) -> ValidationError:
    if hasattr(exc, "error_dict"):
        return ValidationError(
            {("non_field_errors" if k == "__all__" else k): v for k, v in exc.message_dict.items()}
        )
    return ValidationError({"non_field_errors": exc.messages})


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = as_drf_validation_error(exc)
    elif isinstance(exc, IntegrityError):
        # A constraint the validation did not see (a race between two writers, say).
        logger.warning("integrity error in API: %s", exc)
        return Response(
            {"non_field_errors": ["This conflicts with existing configuration; reload and retry."]},
            status=status.HTTP_409_CONFLICT,
        )
    elif isinstance(exc, DatabaseError):
        logger.exception("database error in API")
        return Response(
            {"detail": "The database could not store this value."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    return drf_exception_handler(exc, context)


class StrictFieldsMixin:
    """Refuse fields the resource does not have: a typo ("smarthost") must not be silently
    ignored while the client believes it changed something. Read-only fields are tolerated,
    so a client may send back what it read."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))  # type: ignore[attr-defined]
            if unknown:
                raise ValidationError({name: ["This field does not exist."] for name in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]


class ModelCleanSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """A ModelSerializer that validates through the model's ``full_clean()`` (the one place
    where the rules live) and saves the very instance it validated, so values normalised by
    ``clean()`` (domains, smart hosts, address lists) are what gets stored."""

    def _candidate(self, attrs: dict[str, Any]) -> Any:
        model: Any = self.Meta.model
        many = {f.name for f in model._meta.many_to_many}
        plain = {k: v for k, v in attrs.items() if k not in many}
        if self.instance is not None:
            candidate = copy.copy(self.instance)
            for key, value in plain.items():
                setattr(candidate, key, value)
        else:
            candidate = model(**self.initial_fields(plain))
        return candidate

    def initial_fields(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Field values for a new instance; a hook for defaults such as profiles."""
        return attrs

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        candidate = self._candidate(attrs)
        self.before_clean(candidate, attrs)
        try:
            candidate.full_clean()
        except DjangoValidationError as exc:
            raise as_drf_validation_error(exc) from None
        self.after_clean(candidate, attrs)
        self._validated_instance = candidate
        return attrs

    def before_clean(self, candidate: Any, attrs: dict[str, Any]) -> None:
        """Set what is not a plain field (a password to hash, say) before validation."""

    def after_clean(self, candidate: Any, attrs: dict[str, Any]) -> None:
        """Cross-object checks that need the cleaned candidate."""

    def save_related(self, instance: Any, attrs: dict[str, Any]) -> None:
        """Save many-to-many and nested rows after the instance itself."""
        many = {f.name for f in instance._meta.many_to_many}
        for key, value in attrs.items():
            if key in many:
                getattr(instance, key).set(value)

    def create(self, validated_data: dict[str, Any]) -> Any:
        instance = self._validated_instance
        instance.save()
        self.save_related(instance, validated_data)
        return instance

    def update(self, instance: Any, validated_data: dict[str, Any]) -> Any:
        candidate = self._validated_instance
        candidate.save()
        self.save_related(candidate, validated_data)
        return candidate


class AuditedModelViewSet(viewsets.ModelViewSet):
    """Create, update and delete in one transaction with an audit entry per changed field."""

    def perform_create(self, serializer: Any) -> None:
        with transaction.atomic():
            instance = serializer.save()
            audit.record_create(self.request.user, instance)

    def perform_update(self, serializer: Any) -> None:
        with transaction.atomic():
            before = audit.snapshot(serializer.instance)
            instance = serializer.save()
            audit.record_update(self.request.user, before, instance)

    def perform_destroy(self, instance: Any) -> None:
        problem = self.delete_problem(instance)
        if problem:
            raise Conflict(problem)
        try:
            with transaction.atomic():
                audit.record_delete(self.request.user, instance)
                instance.delete()
        except ProtectedError as exc:
            names = ", ".join(sorted({str(o) for o in exc.protected_objects})[:10])
            raise Conflict(f"'{instance}' is in use by: {names}.") from None

    def delete_problem(self, instance: Any) -> str:
        """Why this object may not be deleted ('' = it may)."""
        return ""


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This object is in use."
    default_code = "conflict"
