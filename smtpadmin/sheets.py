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
from django.core.exceptions import NON_FIELD_ERRORS, FieldDoesNotExist, ValidationError
from django.db import models, transaction
from django.forms import modelform_factory
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.generic import TemplateView

from smtpadmin import audit
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.listing import Action


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
            required=False,
            label=kwargs.get("label") or str(field.verbose_name).capitalize(),
            help_text=kwargs.get("help_text") or field.help_text,
        )
    return field.formfield(**kwargs)


@dataclass(frozen=True)
class Group:
    """A titled box inside a tab, the way ESM groups settings in its dialogs."""

    title: str
    fields: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class Tab:
    title: str
    fields: tuple[str, ...] = ()
    description: str = ""
    groups: tuple[Group, ...] = ()
    # Shown before the fields: read-only values (created, modified), then parts (an editable
    # table of rows, say) that the sheet's ``get_parts`` provides under these names.
    readonly: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()

    @property
    def all_fields(self) -> tuple[str, ...]:
        return self.fields + tuple(name for group in self.groups for name in group.fields)


class SheetPart:
    """More than model fields inside a tab (a formset of rows, say). It is bound to the same
    POST as the sheet's form, validated with it, and saved in the same transaction after the
    object and before the audit, so the audit sees it (through the model's ``audit_extra``)."""

    template_name: ClassVar[str]

    def is_valid(self) -> bool:
        return True

    @property
    def has_errors(self) -> bool:
        return False

    def disable(self) -> None:
        """Read-only, for roles that may not change the object."""

    def save(self, instance: models.Model) -> None:
        """Called inside the sheet's transaction, after the object itself is saved."""


class SheetForm(forms.ModelForm):
    """The base of every sheet's form (declare extra, non-model fields on a subclass)."""

    def add_error(self, field: str | None, error: Any) -> None:
        # A model rule about a field this sheet does not show goes to the top of the sheet
        # (Django would raise ValueError and answer 500).
        if field is None and isinstance(error, ValidationError) and hasattr(error, "error_dict"):
            known: dict[str, list[ValidationError]] = {}
            for name, errors in error.error_dict.items():
                key = name if name in self.fields else NON_FIELD_ERRORS
                known.setdefault(key, []).extend(errors)
            error = ValidationError(known)
        super().add_error(field, error)


class PropertySheet(RoleRequiredMixin, TemplateView):
    """Subclass with ``model``, ``tabs`` and ``title``; override ``get_object`` for singletons."""

    model: ClassVar[type[models.Model]]
    tabs: ClassVar[list[Tab]]
    title: ClassVar[str] = ""
    template_name = "smtpadmin/sheet.html"
    nav_key: ClassVar[str] = ""
    success_url: ClassVar[str] = ""
    base_form: ClassVar[type[forms.ModelForm[Any]]] = SheetForm
    parts: dict[str, SheetPart]

    # --- hooks ---------------------------------------------------------------------------
    def get_object(self) -> models.Model | None:
        """The object being edited; None for a new one."""
        return None

    def new_object(self) -> models.Model:
        return self.model()

    def form_class(self) -> type[forms.ModelForm[Any]]:
        fields = [name for tab in self.tabs for name in tab.all_fields]
        return modelform_factory(
            self.model, form=self.base_form, fields=fields, formfield_callback=_formfield
        )

    def get_initial(self) -> dict[str, Any]:
        """Initial values of the form (defaults of a new object beyond the model's)."""
        return {}

    def get_parts(self, instance: models.Model, data: Any) -> dict[str, SheetPart]:
        """The parts that tabs name in ``Tab.parts``, bound to ``data`` (None on GET)."""
        return {}

    def readonly_value(self, instance: models.Model, name: str) -> tuple[str, Any]:
        """Label and value of a ``Tab.readonly`` entry: a model field or an attribute."""
        try:
            field = instance._meta.get_field(name)
        except FieldDoesNotExist:
            field = None
        label = str(getattr(field, "verbose_name", "") or name.replace("_", " "))
        value = getattr(instance, name, "")
        return label[:1].upper() + label[1:], value() if callable(value) else value

    def save_related(self, form: forms.ModelForm[Any], instance: models.Model) -> None:
        """Inside the save transaction, after the object and before the audit: the parts."""
        for part in self.parts.values():
            part.save(instance)

    def facts(self) -> list[tuple[str, Any]]:
        """Read-only (label, value) pairs shown above the tabs (state, heartbeat, fingerprint)."""
        return []

    def actions(self) -> list[Action]:
        """Buttons above the tabs (Delete, Start / Stop / Pause), shown to roles that may write."""
        return []

    def get_success_url(self, instance: models.Model) -> str:
        return self.success_url or self.request.get_full_path()

    def save(self, form: forms.ModelForm[Any]) -> models.Model:
        """Save in one transaction with the audit entries."""
        with transaction.atomic():
            if form.instance.pk is None:
                instance = form.save()
                self.save_related(form, instance)
                audit.record_create(self.request.user, instance)
            else:
                current = self.model._default_manager.select_for_update().get(pk=form.instance.pk)
                before = audit.snapshot(current)
                instance = form.save(commit=False)
                instance.save(update_fields=audit.configuration_fields(instance))
                form.save_m2m()
                self.save_related(form, instance)
                audit.record_update(self.request.user, before, instance)
        return instance

    # --- view ----------------------------------------------------------------------------
    def _form(self, data: Any = None) -> forms.ModelForm[Any]:
        instance = self.get_object() or self.new_object()
        form = self.form_class()(data=data, instance=instance, initial=self.get_initial())
        self.parts = self.get_parts(instance, data)
        if not self.can_write:
            for field in form.fields.values():
                field.disabled = True
            for part in self.parts.values():
                part.disable()
        return form

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self.render_to_response(self.sheet_context(self._form()))

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = self._form(request.POST)
        # Every part is validated (not short-circuited) so that all errors show at once.
        parts_valid = all([part.is_valid() for part in self.parts.values()])
        if form.is_valid() and parts_valid:
            instance = self.save(form)
            messages.success(request, f"Saved {instance}.")
            return redirect(self.get_success_url(instance))
        return self.render_to_response(self.sheet_context(form), status=400)

    def sheet_context(self, form: forms.ModelForm[Any]) -> dict[str, Any]:
        tabs = []
        first_error = None
        for index, tab in enumerate(self.tabs):
            bound = [form[name] for name in tab.fields]
            groups = [
                {
                    "title": group.title,
                    "description": group.description,
                    "fields": [form[name] for name in group.fields],
                }
                for group in tab.groups
            ]
            tab_parts = [self.parts[name] for name in tab.parts if name in self.parts]
            has_error = any(form[name].errors for name in tab.all_fields) or any(
                part.has_errors for part in tab_parts
            )
            if has_error and first_error is None:
                first_error = index
            tabs.append(
                {
                    "title": tab.title,
                    "description": tab.description,
                    "fields": bound,
                    "groups": groups,
                    "readonly": [self.readonly_value(form.instance, name) for name in tab.readonly],
                    "parts": tab_parts,
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
            facts=self.facts(),
            sheet_actions=self.actions() if self.can_write else [],
        )
