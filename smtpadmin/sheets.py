"""Property sheets, declared like ModelAdmin fieldsets: a sheet lists its tabs and their fields;
one form and one POST for all tabs; the first tab with an error opens; a change is saved in one
transaction and audited with old and new values. View Only administrators see the same sheet
read-only, without buttons."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from django import forms
from django.contrib import messages
from django.db import models, transaction
from django.forms import modelform_factory
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.generic import TemplateView

from smtpadmin import audit
from smtpadmin.access import RoleRequiredMixin


class LinesField(forms.Field):
    """A list edited as a textarea, one entry per line (IP lists, DNS servers, senders)."""

    widget = forms.Textarea(attrs={"rows": 4})

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return value
        if isinstance(value, list | tuple):
            return "\n".join(str(v) for v in value)
        return "" if value is None else str(value)

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return [str(v).strip() for v in value if str(v).strip()]
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]


def _formfield(field: models.Field[Any, Any], **kwargs: Any) -> forms.Field | None:
    if isinstance(field, models.JSONField):
        return LinesField(
            required=False, label=str(field.verbose_name).capitalize(), help_text=field.help_text
        )
    return field.formfield(**kwargs)


@dataclass(frozen=True)
class Tab:
    title: str
    fields: tuple[str, ...]
    description: str = ""


class PropertySheet(RoleRequiredMixin, TemplateView):
    """Subclass with ``model``, ``tabs`` and ``title``; override ``get_object`` for singletons."""

    model: ClassVar[type[models.Model]]
    tabs: ClassVar[list[Tab]]
    title: ClassVar[str] = ""
    template_name = "smtpadmin/sheet.html"
    nav_key: ClassVar[str] = ""
    success_url: ClassVar[str] = ""

    # --- hooks ---------------------------------------------------------------------------
    def get_object(self) -> models.Model | None:
        """The object being edited; None for a new one."""
        return None

    def new_object(self) -> models.Model:
        return self.model()

    def form_class(self) -> type[forms.ModelForm[Any]]:
        fields = [name for tab in self.tabs for name in tab.fields]
        return modelform_factory(self.model, fields=fields, formfield_callback=_formfield)

    def get_success_url(self, instance: models.Model) -> str:
        return self.success_url or self.request.get_full_path()

    def save(self, form: forms.ModelForm[Any]) -> models.Model:
        """Save in one transaction with the audit entries."""
        with transaction.atomic():
            if form.instance.pk is None:
                instance = form.save()
                audit.record_create(self.request.user, instance)
            else:
                before = audit.snapshot(self.model._default_manager.get(pk=form.instance.pk))
                instance = form.save()
                audit.record_update(self.request.user, before, instance)
        return instance

    # --- view ----------------------------------------------------------------------------
    def _form(self, data: Any = None) -> forms.ModelForm[Any]:
        instance = self.get_object() or self.new_object()
        form = self.form_class()(data=data, instance=instance)
        if not self.can_write:
            for field in form.fields.values():
                field.disabled = True
        return form

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self.render_to_response(self.sheet_context(self._form()))

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = self._form(request.POST)
        if form.is_valid():
            instance = self.save(form)
            messages.success(request, f"Saved {instance}.")
            return redirect(self.get_success_url(instance))
        return self.render_to_response(self.sheet_context(form), status=400)

    def sheet_context(self, form: forms.ModelForm[Any]) -> dict[str, Any]:
        tabs = []
        first_error = None
        for index, tab in enumerate(self.tabs):
            bound = [form[name] for name in tab.fields]
            has_error = any(b.errors for b in bound)
            if has_error and first_error is None:
                first_error = index
            tabs.append(
                {
                    "title": tab.title,
                    "description": tab.description,
                    "fields": bound,
                    "has_error": has_error,
                    "id": f"tab-{index}",
                }
            )
        active = first_error if first_error is not None else 0
        for index, tab_data in enumerate(tabs):
            tab_data["active"] = index == active
        return self.get_context_data(
            form=form,
            tabs=tabs,
            title=self.title or str(form.instance),
            can_write=self.can_write,
            nav_key=self.nav_key,
        )
