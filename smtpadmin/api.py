"""Shared API pieces: the exception handler that keeps every failure a clean JSON answer."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, IntegrityError, models, transaction
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.response import Response
from rest_framework.validators import UniqueValidator
from rest_framework.views import exception_handler as drf_exception_handler

from smtpadmin import audit

logger = logging.getLogger(__name__)


def as_drf_validation_error(exc: DjangoValidationError) -> ValidationError:
    if hasattr(exc, "error_dict"):
        return ValidationError(
            {("non_field_errors" if k == "__all__" else k): v for k, v in exc.message_dict.items()}
        )
    return ValidationError({"non_field_errors": exc.messages})


_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(value: Any) -> Any:
    """Error data with lone surrogates escaped: echoed input must not make the answer
    unencodable (UTF-8 cannot carry them, and the renderer would fail with a 500)."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_surrogates(v) for v in value]
    return value


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RecursionError):
        # json.loads gives up on deeply nested input with RecursionError, not ValueError,
        # so DRF's parser lets it through.
        exc = ParseError("JSON parse error - the document is nested too deeply.")
    if isinstance(exc, RequestDataTooBig):
        # Django would answer with its HTML error page; scripts expect JSON.
        return Response(
            {"detail": "The request body is too large."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
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
    response = drf_exception_handler(exc, context)
    if response is not None:
        if isinstance(response.data, list):
            # A bare message list (from a filter backend, say): answer an object like every
            # other validation error.
            response.data = {"non_field_errors": response.data}
        response.data = _without_surrogates(response.data)
    return response


def unstorable_text(value: Any) -> str:
    """Why a submitted value (text, or text anywhere inside a JSON list or object) cannot be
    stored: PostgreSQL refuses NUL characters in text and JSON, and UTF-8 cannot encode lone
    surrogates. '' = it can be stored."""
    if isinstance(value, str):
        if "\x00" in value:
            return "Null characters are not allowed."
        if _SURROGATE.search(value):
            return "Surrogate characters are not allowed."
        return ""
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list | tuple):
        for item in value:
            problem = unstorable_text(item)
            if problem:
                return problem
    return ""


#: The JSON type each kind of field takes, as the schema describes it; DRF itself would also
#: take "25" for 25, 1 for true and {} for a list, which hides mistakes in scripts.
_JSON_TYPES: list[tuple[type, tuple[type, ...], str]] = [
    (serializers.BooleanField, (bool,), "Must be true or false."),
    (serializers.IntegerField, (int,), "A valid integer is required."),
    (serializers.FloatField, (int, float), "A valid number is required."),
    (serializers.CharField, (str,), "Not a valid string."),
    (serializers.MultipleChoiceField, (list,), "Expected a list."),
    (serializers.ChoiceField, (str,), "Not a valid string."),
    (serializers.ListField, (list,), "Expected a list."),
    (serializers.ManyRelatedField, (list,), "Expected a list."),
    (serializers.ListSerializer, (list,), "Expected a list."),
    (serializers.PrimaryKeyRelatedField, (int,), "A valid integer is required."),
    (serializers.DictField, (dict,), "Expected an object."),
    (serializers.Serializer, (dict,), "Expected an object."),
]


def json_type_problem(field: Any, value: Any) -> str:
    """Why a JSON value is not of the type of the field ('' when it is, or may be null)."""
    if value is None:
        return ""
    for kind, types, problem in _JSON_TYPES:
        if isinstance(field, kind):
            if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
                return problem
            break
    else:
        return ""
    child = getattr(field, "child", None) or getattr(field, "child_relation", None)
    if isinstance(value, list) and child is not None:
        for number, item in enumerate(value, 1):
            if problem := json_type_problem(child, item):
                return f"Item {number}: {problem}"
    return ""


class StrictFieldsMixin:
    """Refuse fields the resource does not have: a typo ("smarthost") must not be silently
    ignored while the client believes it changed something. Read-only fields are tolerated,
    so a client may send back what it read. Values must have the JSON type of their field."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            fields = self.fields  # type: ignore[attr-defined]
            unknown = sorted(set(data) - set(fields))
            if unknown:
                raise ValidationError({name: ["This field does not exist."] for name in unknown})
            mistyped = {
                name: [problem]
                for name, value in data.items()
                if not fields[name].read_only
                and (problem := json_type_problem(fields[name], value))
            }
            if mistyped:
                raise ValidationError(mistyped)
            # Also inside JSON lists (relay lists, sender lists): a value that could not be
            # stored, or that would make every later answer unencodable, is refused here.
            problems = {
                name: [problem]
                for name, value in data.items()
                if not fields[name].read_only and (problem := unstorable_text(value))
            }
            if problems:
                raise ValidationError(problems)
        return super().to_internal_value(data)  # type: ignore[misc]


class ModelCleanSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """A ModelSerializer that validates through the model's ``full_clean()`` (the one place
    where the rules live) and saves the very instance it validated, so values normalised by
    ``clean()`` (domains, smart hosts, address lists) are what gets stored.

    DRF's own uniqueness validators are left out: they would compare the raw value (before
    ``clean()`` normalises it) and report a unique set as a non-field error, while
    ``full_clean()`` checks the stored form and names the field.
    """

    #: Fields whose constraints the view enforces itself (moving a "default" flag, say).
    constraints_enforced_by_view: tuple[str, ...] = ()

    def get_validators(self) -> list[Any]:
        return list(getattr(getattr(self, "Meta", None), "validators", []))

    def get_extra_kwargs(self) -> dict[str, Any]:
        # What the relay and delivery keep up to date (the model's ``runtime_fields``) is
        # shown but never written through the API. Timestamps are read-only by themselves.
        extra: dict[str, Any] = super().get_extra_kwargs()
        for name in getattr(self.Meta.model, "runtime_fields", ()):
            extra.setdefault(name, {})["read_only"] = True
        return extra

    def build_standard_field(self, field_name: str, model_field: Any) -> Any:
        if isinstance(model_field, models.JSONField) and model_field.default is list:
            # Every JSON field of the configuration is a list of texts (hosts, domains,
            # addresses); the model's clean() checks each entry.
            return serializers.ListField, {
                "child": serializers.CharField(allow_blank=True, trim_whitespace=False),
                "required": False,
                "help_text": model_field.help_text or None,
            }
        field_class, kwargs = super().build_standard_field(field_name, model_field)
        if "validators" in kwargs:
            kwargs["validators"] = [
                v for v in kwargs["validators"] if not isinstance(v, UniqueValidator)
            ]
        return field_class, kwargs

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
        try:
            candidate.full_clean(exclude=self.constraints_enforced_by_view or None)
        except DjangoValidationError as exc:
            raise as_drf_validation_error(exc) from None
        self._validated_instance = candidate
        return attrs

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
        candidate.save(update_fields=audit.configuration_fields(candidate))
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
        try:
            audit.delete(self.request.user, instance)
        except audit.DeleteRefused as exc:
            raise Conflict(str(exc)) from None


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This object is in use."
    default_code = "conflict"


# The schema extensions for these classes register themselves on import.
from smtpadmin import api_schema  # noqa: E402, F401
