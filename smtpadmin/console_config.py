"""Console pages for configuration export and import, under Administration: an export
download (every role, no secrets) and the Import page (Full Administrators): upload a file,
see the plan, Apply it. The file previewed is the file applied: it is kept in the session,
keyed by its SHA-256, and Apply names that digest."""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views import View

from smtpadmin import configio
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.roles import Role

MAX_FILE_BYTES = 10 * 1024 * 1024
SESSION_KEY = "config_import"


class ExportDownload(RoleRequiredMixin, View):
    """The configuration file without secrets, as a download."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        response = HttpResponse(configio.export_text(), content_type="application/json")
        name = f"smtpadmin-configuration-{timezone.now():%Y%m%d-%H%M%S}.json"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class UploadForm(forms.Form):
    file = forms.FileField(label="Configuration file", help_text="Written by exportconfig.")
    passphrase = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput,
        help_text="Only for a file exported with its secrets.",
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_FILE_BYTES:
            raise forms.ValidationError("The file is larger than 10 MB.")
        return upload


class ApplyForm(forms.Form):
    digest = forms.CharField(max_length=64, widget=forms.HiddenInput)
    passphrase = forms.CharField(required=False, strip=False, widget=forms.PasswordInput)


class ImportPage(RoleRequiredMixin, View):
    """Upload -> preview of the plan -> Apply -> result with the audit log's link."""

    read_role: ClassVar[Role] = Role.FULL
    write_role: ClassVar[Role] = Role.FULL
    template_name = "smtpadmin/config_import.html"

    def page(self, request: HttpRequest, status: int = 200, **context: Any) -> HttpResponse:
        context.setdefault("upload_form", UploadForm())
        return render(
            request,
            self.template_name,
            {
                "title": "Import Configuration",
                "nav_key": "config-import",
                "export_url": reverse("admin_pages:config-export"),
                "audit_url": reverse("admin_pages:audit-log"),
                **context,
            },
            status=status,
        )

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        if "digest" in request.POST:
            return self.apply(request)
        form = UploadForm(request.POST, request.FILES)
        if not form.is_valid():
            return self.page(request, 400, upload_form=form)
        text = form.cleaned_data["file"].read()
        try:
            config = configio.read(text, form.cleaned_data["passphrase"] or None)
            plan = configio.plan(config)
            configio.apply(config, request.user, commit=False)
        except configio.ConfigError as exc:
            return self.page(request, 400, upload_form=form, errors=exc.messages)
        request.session[SESSION_KEY] = {"digest": config.digest, "text": text.decode()}
        return self.page(
            request,
            plan=plan,
            apply_form=ApplyForm(initial={"digest": config.digest}),
            encrypted=config.encrypted,
        )

    def apply(self, request: HttpRequest) -> HttpResponse:
        form = ApplyForm(request.POST)
        pending = request.session.get(SESSION_KEY) or {}
        if not form.is_valid() or pending.get("digest") != form.cleaned_data["digest"]:
            return self.page(
                request,
                400,
                errors=["The previewed file is no longer pending here: upload it again."],
            )
        try:
            config = configio.read(pending["text"], form.cleaned_data["passphrase"] or None)
            result = configio.apply(config, request.user)
        except configio.ConfigError as exc:
            return self.page(request, 400, errors=exc.messages)
        del request.session[SESSION_KEY]
        return self.page(request, result=result, plan=result.plan)
