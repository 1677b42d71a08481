"""The list filters of the API (``?enabled=true``): django-filter's, with yes/no filters that
refuse what is neither and number filters that refuse fractions, instead of ignoring the value
and answering the whole list."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.db import models
from django_filters.rest_framework import DjangoFilterBackend, FilterSet


class StrictBooleanField(forms.NullBooleanField):
    widget = forms.TextInput

    def to_python(self, value: Any) -> bool | None:  # type: ignore[override]
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise forms.ValidationError("Enter true or false.", code="invalid")

    def validate(self, value: Any) -> None:
        pass


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class IntegerFilter(django_filters.NumberFilter):
    """A whole number: ?port=25.5 is refused, not rounded into a filter."""

    field_class = forms.IntegerField


def _strict_defaults() -> dict[Any, dict[str, Any]]:
    defaults = dict(FilterSet.FILTER_DEFAULTS)
    for db_field, spec in defaults.items():
        if issubclass(db_field, models.IntegerField | models.AutoField) and (
            spec.get("filter_class") is django_filters.NumberFilter
        ):
            defaults[db_field] = {**spec, "filter_class": IntegerFilter}
    defaults[models.BooleanField] = {"filter_class": StrictBooleanFilter}
    return defaults


class StrictFilterSet(FilterSet):
    FILTER_DEFAULTS = _strict_defaults()


class FilterBackend(DjangoFilterBackend):
    """``filterset_fields`` of the views, as a ``StrictFilterSet``."""

    filterset_base = StrictFilterSet
