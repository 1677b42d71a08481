"""Pickers that search instead of listing every object once there are many.

A form field that chooses among connectors, servers or virtual servers lists them all while
they are few (exactly as a plain select or checkbox list). With more than ``PICKER_LIMIT``,
its widget renders only the chosen ones and a search box; typing asks the picker's search
endpoint (htmx, role-checked) for matching options. The form still validates the submitted
ids against the field's whole queryset on the server, so a search result is only a
convenience, never a permission.

Apps register their pickers (``register``) from ``AppConfig.ready()``, like the tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from django import forms
from django.db import models
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.urls import reverse
from django.views.generic import TemplateView

from smtpadmin.access import RoleRequiredMixin

PICKER_LIMIT = 100  # more options than this: the field searches instead of listing them
RESULTS = 50  # options one search answers with (a narrower search finds the others)
MAX_QUERY = 200
FIELD_NAME = re.compile(r"[A-Za-z_][\w-]{0,99}")


@dataclass(frozen=True)
class Picker:
    key: str  # in the search URL: /pickers/<key>/
    queryset: Callable[[], models.QuerySet[Any]]
    label: Callable[[Any], str]
    search_fields: tuple[str, ...]

    def search(self, query: str, exclude: list[int]) -> tuple[list[Any], bool]:
        """Up to RESULTS matches in the picker's order, and whether there are more."""
        rows = self.queryset().exclude(pk__in=exclude)
        if query:
            match = models.Q()
            for name in self.search_fields:
                match |= models.Q(**{f"{name}__icontains": query})
            rows = rows.filter(match)
        found = list(rows[: RESULTS + 1])
        return found[:RESULTS], len(found) > RESULTS


PICKERS: dict[str, Picker] = {}


def register(picker: Picker) -> None:
    PICKERS[picker.key] = picker


def ids(values: list[str]) -> list[int]:
    """The numeric ids among submitted values (anything else is no id)."""
    return [int(v) for v in values if v.isdigit() and len(v) < 19]


class SearchWidget:
    """Mixed into a choice widget: with many options, only the chosen ones and a search box.

    ``picker`` names the registered picker whose search endpoint fills in options."""

    picker: str = ""
    limit: ClassVar[int] = PICKER_LIMIT
    search_template_name: ClassVar[str]
    result_kind: ClassVar[str]  # "checkbox": results added beside; "option": the select's

    choices: Any
    allow_multiple_selected: bool

    def __init__(self, *args: Any, picker: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.picker = picker

    def is_large(self) -> bool:
        queryset = getattr(self.choices, "queryset", None)
        return queryset is not None and queryset.count() > self.limit

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        if not self.is_large():
            return super().get_context(name, value, attrs)  # type: ignore[misc]
        iterator = self.choices
        chosen = ids([str(v) for v in (value if isinstance(value, list | tuple) else [value])])
        rows = iterator.queryset.filter(pk__in=chosen)
        options: list[tuple[Any, str]] = []
        if getattr(iterator.field, "empty_label", None) is not None and not (
            self.allow_multiple_selected
        ):
            options.append(("", str(iterator.field.empty_label)))
        options += [(row.pk, iterator.field.label_from_instance(row)) for row in rows]
        self.choices = options
        try:
            context: dict[str, Any] = super().get_context(name, value, attrs)  # type: ignore[misc]
        finally:
            self.choices = iterator
        widget = context["widget"]
        widget["search_url"] = reverse("smtpadmin:picker", args=[self.picker])
        widget["result_kind"] = self.result_kind
        widget["blank"] = "1" if options and options[0][0] == "" else ""
        widget["inner_template_name"] = self.template_name  # type: ignore[attr-defined]
        widget["large"] = True
        return context

    def render(self, name: str, value: Any, attrs: Any = None, renderer: Any = None) -> Any:
        context = self.get_context(name, value, attrs)
        template = self.search_template_name if context["widget"].get("large") else None
        return self._render(  # type: ignore[attr-defined]
            template or self.template_name,  # type: ignore[attr-defined]
            context,
            renderer,
        )


class SearchCheckboxes(SearchWidget, forms.CheckboxSelectMultiple):
    search_template_name = "smtpadmin/widgets/search_checkboxes.html"
    result_kind = "checkbox"


class SearchSelect(SearchWidget, forms.Select):
    search_template_name = "smtpadmin/widgets/search_select.html"
    result_kind = "option"


class SearchSelectMultiple(SearchWidget, forms.SelectMultiple):
    search_template_name = "smtpadmin/widgets/search_select.html"
    result_kind = "option"


class PickerSearch(RoleRequiredMixin, TemplateView):
    """GET /pickers/<key>/?q=...&name=<field>&<field>=<chosen id>...: the options that match,
    as checkboxes (``kind=checkbox``, leaving out the chosen ones, which the form shows
    already) or as a select's options (the chosen ones first, still selected)."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        picker = PICKERS.get(self.kwargs["picker"])
        if picker is None:
            raise Http404("No such picker.")
        name = str(request.GET.get("name", ""))
        if not FIELD_NAME.fullmatch(name):
            return HttpResponseBadRequest("name: the form field's name is missing or not valid.")
        kind = "checkbox" if request.GET.get("kind") == "checkbox" else "option"
        query = str(request.GET.get("q", ""))[:MAX_QUERY].strip()
        chosen = ids(request.GET.getlist(name))[:PICKER_LIMIT]
        found, more = picker.search(query, chosen)
        kept = []
        if kind == "option":
            kept = [(row.pk, picker.label(row)) for row in picker.queryset().filter(pk__in=chosen)]
        return self.render_to_response(
            {
                "name": name,
                "kind": kind,
                "blank": request.GET.get("blank") == "1",
                "kept": kept,
                "options": [(row.pk, picker.label(row)) for row in found],
                "more": more,
                "query": query,
            }
        )

    def get_template_names(self) -> list[str]:
        return ["smtpadmin/widgets/picker_results.html"]
