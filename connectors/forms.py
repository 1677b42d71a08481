"""Forms of the connector's property sheet and of the routing simulator.

The rules live in the models (``Connector.clean``, ``check_address_spaces``); these forms only
shape what a browser sends: radio buttons for yes/no choices, the address-space table as a
formset, the weekly schedule as a grid of checkboxes, a write-only password."""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe

from connectors.models import Connector, ScheduleMode, check_address_spaces
from connectors.snapshot import PRIORITIES
from servers.models import VirtualServer
from smtpadmin.pickers import SearchCheckboxes, SearchSelect
from smtpadmin.sheets import LinesField, SheetForm, SheetPart
from smtpadmin.validators import SCHEDULE_SLOTS, SCHEDULE_SLOTS_PER_DAY, normalize_address

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _yes(value: Any) -> bool:
    return value in (True, "True", "true", "1", "on")


# --- the weekly schedule ------------------------------------------------------------------


class ScheduleGridWidget(forms.Widget):
    """7 days x 24 hours x 4 quarters of checkboxes, all named like the field, each with its
    slot number as value (Monday 00:00 = 0). Works without JavaScript; console.js adds
    drag-select."""

    template_name = "connectors/schedule_grid.html"
    wide = True  # the sheet gives it the whole width of the tab

    def __init__(self, mode_field: str = "", attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.mode_field = mode_field

    def value_from_datadict(self, data: Any, files: Any, name: str) -> str:
        raw = data.getlist(name) if hasattr(data, "getlist") else data.get(name) or []
        chosen: set[int] = set()
        for item in raw if isinstance(raw, list | tuple) else [raw]:
            try:
                slot = int(item)
            except (TypeError, ValueError):
                continue  # a tampered value is ignored, never a 500
            if 0 <= slot < SCHEDULE_SLOTS:
                chosen.add(slot)
        return "".join("1" if slot in chosen else "0" for slot in range(SCHEDULE_SLOTS))

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return False  # an unchecked grid sends nothing, and means "no slot"

    def id_for_label(self, id_: str) -> str:
        return ""  # a table of checkboxes: the label names the group, not one input

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        grid = value if isinstance(value, str) and len(value) == SCHEDULE_SLOTS else ""
        disabled = " disabled" if context["widget"]["attrs"].get("disabled") else ""
        field_name = conditional_escape(name)
        days = []
        # 672 checkboxes per grid: built here rather than in a template loop, which is ten
        # times slower; every piece is either escaped or made of digits.
        for number, day in enumerate(DAYS):
            cells = []
            for quarter in range(SCHEDULE_SLOTS_PER_DAY):
                index = number * SCHEDULE_SLOTS_PER_DAY + quarter
                hour, minute = divmod(quarter * 15, 60)
                checked = " checked" if grid[index : index + 1] == "1" else ""
                cells.append(
                    f'<td{" class=h" if minute == 0 else ""}><input type="checkbox" class="slot" '
                    f'name="{field_name}" value="{index}" title="{day[:3]} {hour:02}:{minute:02}"'
                    f"{checked}{disabled}></td>"
                )
            days.append({"name": day, "short": day[:3], "cells": mark_safe("".join(cells))})  # noqa: S308
        context["widget"].update(
            days=days, hours=[f"{h:02}" for h in range(24)], mode_field=self.mode_field
        )
        return context


class ScheduleGridField(forms.CharField):
    """The grid as the stored string: 672 characters of '0' / '1'."""

    def __init__(self, mode_field: str, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        super().__init__(widget=ScheduleGridWidget(mode_field=mode_field), **kwargs)


# --- the address-space table --------------------------------------------------------------


class AddressSpaceRow(forms.Form):
    """One row; the pattern and cost rules are the model's (``check_address_spaces``)."""

    domain = forms.CharField(
        label="Address",
        widget=forms.TextInput(attrs={"aria-label": "Address", "placeholder": "example.com"}),
    )
    cost = forms.IntegerField(
        required=False,
        initial=1,
        widget=forms.NumberInput(attrs={"aria-label": "Cost", "min": 1, "max": 100}),
    )


AddressSpaceFormSet = forms.formset_factory(AddressSpaceRow, extra=1, can_delete=True)


class AddressSpaceTable(SheetPart):
    """The Address Space tab's table: one row per SMTP address space, rows added and removed
    in the same POST as the rest of the sheet."""

    template_name = "connectors/address_spaces.html"
    prefix = "address_spaces"

    def __init__(self, connector: Connector, data: Any) -> None:
        if connector.pk is not None:
            initial = [{"domain": s.domain, "cost": s.cost} for s in connector.address_spaces.all()]
        else:
            initial = [{"domain": "*", "cost": 1}]
        self.formset = AddressSpaceFormSet(data=data, initial=initial, prefix=self.prefix)
        self.error = ""
        self.disabled = False
        self.cleaned: list[dict[str, Any]] = []
        self._valid: bool | None = None

    def is_valid(self) -> bool:
        if self._valid is None:
            self._valid = self._validate()
        return self._valid

    def _validate(self) -> bool:
        if not self.formset.is_valid():
            return False
        rows = [
            form
            for form in self.formset.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        entries = [
            {
                "domain": form.cleaned_data["domain"],
                "cost": 1 if form.cleaned_data.get("cost") is None else form.cleaned_data["cost"],
            }
            for form in rows
        ]
        check = check_address_spaces(entries)
        self.error = check.error
        for form, errors in zip(rows, check.row_errors, strict=False):
            for field, messages in errors.items():
                form.add_error(field if field in form.fields else None, messages)
        self.cleaned = check.cleaned
        return check.ok

    @property
    def has_errors(self) -> bool:
        return bool(self.error) or (self.formset.is_bound and self.formset.total_error_count() > 0)

    def disable(self) -> None:
        self.disabled = True
        for form in self.formset.forms:
            for field in form.fields.values():
                field.disabled = True

    def save(self, instance: Any) -> None:
        instance.set_address_spaces(self.cleaned)


# --- the connector ------------------------------------------------------------------------


class BridgeheadChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} ({obj.server.name})"


class ConnectorForm(SheetForm):
    """The fields of the connector's sheet that need more than the model's default form field."""

    use_dns = forms.TypedChoiceField(
        label="Route",
        choices=[
            (True, "Use DNS to route to each address space"),
            (False, "Forward all mail through this connector to the following smart hosts"),
        ],
        coerce=_yes,
        widget=forms.RadioSelect,
    )
    smart_hosts = forms.CharField(
        required=False,
        max_length=1000,
        help_text="Separated by ';', each with an optional :port; [192.0.2.1] skips DNS.",
    )
    bridgeheads = BridgeheadChoiceField(
        queryset=VirtualServer.objects.select_related("server").order_by("server__name", "name"),
        widget=SearchCheckboxes(picker="virtual-servers"),
        label="Local bridgeheads",
        help_text="The virtual servers that send over this connector; several share the load "
        "and take over from each other.",
    )
    accept_by_default = forms.TypedChoiceField(
        label="By default, messages from everyone are",
        choices=[(True, "Accepted"), (False, "Rejected")],
        coerce=_yes,
        widget=forms.RadioSelect,
    )
    sender_exceptions = LinesField(
        required=False,
        label="Except these senders",
        help_text="One per line: user@example.com or *@example.com.",
    )
    schedule_daily_time = forms.TimeField(
        required=False,
        label="Daily at",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    schedule_grid = ScheduleGridField(
        "schedule_mode",
        label="Custom schedule",
        help_text="Checked quarter hours may connect (Use custom schedule). Drag to select.",
    )
    oversize_schedule_daily_time = forms.TimeField(
        required=False,
        label="Oversize daily at",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    oversize_schedule_grid = ScheduleGridField(
        "oversize_schedule_mode", label="Oversize custom schedule"
    )
    outbound_password = forms.CharField(
        required=False,
        max_length=500,
        strip=False,
        label="Password",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    clear_outbound_password = forms.BooleanField(required=False, label="Remove the stored password")
    etrn_domains = LinesField(
        required=False, label="ETRN domains", help_text="One domain per line; blank = this one."
    )

    class Meta:
        labels: ClassVar[dict[str, str]] = {
            "allow_priority_high": "High",
            "allow_priority_normal": "Normal",
            "allow_priority_low": "Low",
            "allow_system_messages": "System messages (DSNs, NDRs)",
            "allow_non_system_messages": "Non-system messages",
            "max_message_size_kb": "Only messages smaller than (KB)",
            "schedule_mode": "Connection time",
            "oversize_schedule_enabled": "Use a different schedule for oversize messages",
            "oversize_threshold_kb": "Oversize messages are larger than (KB)",
            "oversize_schedule_mode": "Oversize connection time",
            "outbound_auth": "Authentication",
            "outbound_username": "User name",
            "tls_mode": "TLS",
            "etrn_request": "ETRN/TURN",
            "scope": "Connector scope",
        }
        widgets: ClassVar[dict[str, Any]] = {
            "admin_note": forms.Textarea(attrs={"rows": 5}),
            "scope": forms.RadioSelect,
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Write-only: the stored password never goes back to the browser.
        self.initial["outbound_password"] = ""
        if "outbound_password" in self.fields:
            has = bool(getattr(self.instance, "outbound_password", ""))
            self.fields["outbound_password"].help_text = (
                "A password is stored; leave blank to keep it." if has else "No password is stored."
            )

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean() or self.cleaned_data
        if "outbound_password" in self.fields:
            typed = data.get("outbound_password") or ""
            if data.get("clear_outbound_password"):
                if typed:
                    self.add_error(
                        "clear_outbound_password",
                        "Type a new password or remove the stored one, not both.",
                    )
                data["outbound_password"] = ""
            elif not typed:
                data["outbound_password"] = self.instance.outbound_password
        for prefix in ("", "oversize_"):
            grid = data.get(f"{prefix}schedule_grid")
            mode = data.get(f"{prefix}schedule_mode")
            # An empty grid is stored as "no custom schedule"; an empty grid *in use* is left
            # for the model to refuse ("The schedule never runs").
            if grid is not None and "1" not in grid and mode != ScheduleMode.CUSTOM:
                data[f"{prefix}schedule_grid"] = ""
        return data


# --- the routing simulator ----------------------------------------------------------------


def _address_or_null(value: str, what: str) -> str:
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    try:
        return normalize_address(text)
    except (ValidationError, ValueError):
        raise ValidationError(f"'{value}' is not a valid {what} address.") from None


class SimulatorForm(forms.Form):
    sender = forms.CharField(
        required=False,
        max_length=1000,
        help_text="Blank or <> is the null sender: a system message (DSN/NDR).",
    )
    recipient = forms.CharField(max_length=1000)
    size_kb = forms.IntegerField(
        label="Size (KB)", min_value=0, max_value=2_000_000, required=False, initial=0
    )
    priority = forms.ChoiceField(
        choices=[(p, p.capitalize()) for p in PRIORITIES], initial="normal", required=False
    )
    system = forms.BooleanField(required=False, label="System message (DSN/NDR)")
    virtual_server = forms.ModelChoiceField(
        queryset=VirtualServer.objects.select_related("server").order_by("id"),
        widget=SearchSelect(picker="virtual-servers"),
        required=False,
        empty_label="(the first virtual server)",
        label="Arrives on virtual server",
    )

    def clean_sender(self) -> str:
        sender: str = self.cleaned_data["sender"].strip()
        if sender in ("", "<>"):
            return ""
        return _address_or_null(sender, "sender")

    def clean_priority(self) -> str:
        return str(self.cleaned_data["priority"] or "normal")

    def clean_recipient(self) -> str:
        return _address_or_null(self.cleaned_data["recipient"], "recipient")
