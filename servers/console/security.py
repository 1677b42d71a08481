"""SMTP credentials (the password is set, never shown) and certificates (upload PEM or
generate self-signed; the private key is never shown again)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views import View

from servers.console.common import safe_next, yes_no
from servers.models import Certificate, SmtpCredential, VirtualServer
from smtpadmin import throttle
from smtpadmin.access import RoleRequiredMixin
from smtpadmin.listing import Action, Column, DeleteConfirm, ObjectList
from smtpadmin.navigation import SelectsNode
from smtpadmin.pickers import SearchSelectMultiple
from smtpadmin.roles import Role
from smtpadmin.sheets import LinesField, PropertySheet, SheetForm, Tab


def _accepted_by(credential: SmtpCredential) -> str:
    names = [str(v) for v in credential.virtual_servers.all()]
    return ", ".join(names) if names else "all virtual servers"


def _sent_this_hour(credential: SmtpCredential) -> str:
    """The messages counted against the send limit this hour, by every relay process."""
    sent = credential.sent_this_hour()
    limit = credential.send_limit_per_hour
    return f"{sent} of {limit}" if limit else str(sent)


class SmtpCredentialList(ObjectList):
    title = "SMTP Credentials"
    nav_key = "smtp-credentials"
    search_fields = ("username",)
    columns = [
        Column("User name", lambda c: c.username, "username", link=True),
        Column("Enabled", lambda c: yes_no(c.enabled), "enabled"),
        Column("Accepted by", _accepted_by),
        Column(
            "Messages per hour",
            lambda c: c.send_limit_per_hour or "no limit",
            "send_limit_per_hour",
        ),
        Column("Sent this hour", _sent_this_hour),
        Column("Last used", lambda c: c.last_used_at or "never", "last_used_at"),
        Column("Failed logins", lambda c: c.failed_logins, "failed_logins"),
    ]

    def get_queryset(self) -> models.QuerySet[SmtpCredential]:
        return SmtpCredential.objects.prefetch_related("virtual_servers__server")

    def object_url(self, obj: SmtpCredential) -> str:
        return reverse("servers:smtp-credential", args=[obj.pk])

    def actions(self) -> list[Action]:
        return [Action("New SMTP Credential", reverse("servers:smtp-credential-new"))]


class SmtpCredentialForm(SheetForm):
    """ "Set password" is write-only: it hashes into the credential and is never rendered."""

    password = forms.CharField(
        label="Set password",
        required=False,
        min_length=8,
        max_length=1024,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["password"].help_text = (
            "Leave blank to keep the current password."
            if self.instance.pk
            else "Required; at least 8 characters."
        )
        if "virtual_servers" in self.fields:
            field = self.fields["virtual_servers"]
            assert isinstance(field, forms.ModelMultipleChoiceField)
            field.widget = SearchSelectMultiple(picker="virtual-servers", attrs=field.widget.attrs)
            field.queryset = VirtualServer.objects.select_related("server")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("password"):
            # Hashed before the model's checks run, which want a password on a new credential.
            self.instance.set_password(cleaned["password"])
        return cleaned


class SmtpCredentialSheet(SelectsNode, PropertySheet):
    model = SmtpCredential
    base_form = SmtpCredentialForm
    tabs = [
        Tab("General", ("username", "password", "enabled", "send_limit_per_hour")),
        Tab(
            "Virtual Servers",
            ("virtual_servers",),
            "The virtual servers that accept this credential; none selected = all of them.",
        ),
    ]

    @cached_property
    def credential(self) -> SmtpCredential | None:
        if "pk" not in self.kwargs:
            return None
        return get_object_or_404(SmtpCredential, pk=self.kwargs["pk"])

    def get_object(self) -> SmtpCredential | None:
        return self.credential

    def selected_node(self) -> str:
        return "smtp-credentials"

    def get_success_url(self, instance: models.Model) -> str:
        return reverse("servers:smtp-credential", args=[instance.pk])

    def facts(self) -> list[tuple[str, Any]]:
        if self.credential is None:
            return []
        return [
            ("Last used", self.credential.last_used_at or "never"),
            ("Messages sent this hour", _sent_this_hour(self.credential)),
            ("Failed logins (15 minutes)", self.credential.failed_logins),
            ("Locked until", self.credential.locked_until),
            ("Login locks", throttle.describe(self.credential.login_locks()) or "none"),
        ]

    def actions(self) -> list[Action]:
        if self.credential is None:
            return []
        pk = self.credential.pk
        unlock = [Action("Unlock", reverse("servers:smtp-credential-unlock", args=[pk]), "post")]
        return [
            *(unlock if self.role >= Role.FULL else []),
            Action("Delete", reverse("servers:smtp-credential-delete", args=[pk])),
        ]

    def sheet_context(self, form: Any) -> dict[str, Any]:
        context = super().sheet_context(form)
        context["title"] = (
            f"{self.credential} Properties" if self.credential else "New SMTP Credential"
        )
        return context


class SmtpCredentialUnlock(RoleRequiredMixin, View):
    """Lift a credential's AUTH locks (POST only, Full Administrators, audited)."""

    http_method_names = ["post"]
    write_role = Role.FULL

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        credential = get_object_or_404(SmtpCredential, pk=pk)
        locked = credential.unlock(by=request.user)
        plural = "" if locked == 1 else "es"
        messages.success(request, f"{credential}: unlocked ({locked} locked address{plural}).")
        return redirect(safe_next(request, reverse("servers:smtp-credential", args=[pk])))


class SmtpCredentialDelete(SelectsNode, DeleteConfirm):
    model = SmtpCredential

    def selected_node(self) -> str:
        return "smtp-credentials"

    def success_url(self, instance: models.Model) -> str:
        return reverse("servers:smtp-credential-list")


class CertificateList(ObjectList):
    title = "Certificates"
    nav_key = "certificates"
    search_fields = ("name",)
    columns = [
        Column("Name", lambda c: c.name, "name", link=True),
        Column("Subject", lambda c: c.subject, "subject"),
        Column("Alternative names", lambda c: ", ".join(c.sans)),
        Column("Not after", lambda c: c.not_after, "not_after"),
        Column("Expired", lambda c: yes_no(c.is_expired), "not_after"),
    ]

    def get_queryset(self) -> models.QuerySet[Certificate]:
        # The key stays in the database: this page has no use for it.
        return Certificate.objects.defer("private_key_pem", "certificate_pem")

    def object_url(self, obj: Certificate) -> str:
        return reverse("servers:certificate", args=[obj.pk])

    def actions(self) -> list[Action]:
        return [
            Action("Upload PEM", reverse("servers:certificate-upload")),
            Action("Generate self-signed", reverse("servers:certificate-generate")),
        ]


class SecretTextarea(forms.Textarea):
    """A textarea that never renders its value (a private key pasted once)."""

    def format_value(self, value: Any) -> str | None:
        return None


class CertificateUploadForm(SheetForm):
    class Meta:
        widgets = {"private_key_pem": SecretTextarea(attrs={"rows": 6})}
        labels = {"certificate_pem": "Certificate (PEM)", "private_key_pem": "Private key (PEM)"}
        help_texts = {
            "private_key_pem": "Unencrypted PEM. It is never shown again, "
            "so paste it again if the page reports an error."
        }


class CertificateSheet(SelectsNode, PropertySheet):
    """An existing certificate: its name can change; the rest is shown read-only, never the key."""

    model = Certificate
    tabs = [Tab("General", ("name",))]

    @cached_property
    def certificate(self) -> Certificate:
        return get_object_or_404(Certificate, pk=self.kwargs["pk"])

    def get_object(self) -> Certificate:
        return self.certificate

    def selected_node(self) -> str:
        return "certificates"

    def get_success_url(self, instance: models.Model) -> str:
        return reverse("servers:certificate", args=[instance.pk])

    def facts(self) -> list[tuple[str, Any]]:
        c = self.certificate
        used_by = ", ".join(str(v) for v in c.virtual_servers.select_related("server"))
        return [
            ("Subject", c.subject),
            ("Issuer", c.issuer),
            ("Alternative names", ", ".join(c.sans)),
            ("Valid from", c.not_before),
            ("Valid until", c.not_after),
            ("Expired", yes_no(c.is_expired)),
            ("SHA-256 fingerprint", c.fingerprint_sha256),
            ("Used by", used_by or "no virtual server"),
        ]

    def actions(self) -> list[Action]:
        return [Action("Delete", reverse("servers:certificate-delete", args=[self.certificate.pk]))]

    def sheet_context(self, form: Any) -> dict[str, Any]:
        context = super().sheet_context(form)
        context["title"] = f"{self.certificate} Properties"
        return context


class CertificateUpload(SelectsNode, PropertySheet):
    model = Certificate
    base_form = CertificateUploadForm
    title = "Upload Certificate"
    tabs = [
        Tab(
            "General",
            ("name", "certificate_pem", "private_key_pem"),
            "The certificate first, then its chain; the key must belong to the certificate.",
        )
    ]

    def selected_node(self) -> str:
        return "certificates"

    def get_success_url(self, instance: models.Model) -> str:
        return reverse("servers:certificate", args=[instance.pk])


class SelfSignedForm(SheetForm):
    common_name = forms.CharField(max_length=253, help_text="mail.example.com")
    alt_names = LinesField(
        required=False, label="Alternative names", help_text="One host name per line."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generated = False

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "common_name" not in cleaned or "alt_names" not in cleaned:
            return cleaned
        try:
            certificate = Certificate.generate_self_signed(
                name=cleaned.get("name", ""),
                common_name=cleaned["common_name"],
                alt_names=cleaned["alt_names"],
            )
        except ValidationError as exc:
            self.add_error("common_name", exc.messages)
            return cleaned
        self.instance.certificate_pem = certificate.certificate_pem
        self.instance.private_key_pem = certificate.private_key_pem
        self.generated = True
        return cleaned

    def add_error(self, field: str | None, error: Any) -> None:
        # Nothing generated: the model's complaints are about empty PEM fields the page does
        # not show, and the common name's own error says what is wrong.
        if (
            field is None
            and not self.generated
            and isinstance(error, ValidationError)
            and hasattr(error, "error_dict")
        ):
            kept = {k: v for k, v in error.error_dict.items() if k in self.fields}
            if not kept:
                return
            error = ValidationError(kept)
        super().add_error(field, error)


class CertificateGenerate(SelectsNode, PropertySheet):
    model = Certificate
    base_form = SelfSignedForm
    title = "Generate Self-Signed Certificate"
    tabs = [
        Tab(
            "General",
            ("name", "common_name", "alt_names"),
            "An EC P-256 key and a certificate valid for 825 days, for testing or internal use.",
        )
    ]

    def selected_node(self) -> str:
        return "certificates"

    def get_success_url(self, instance: models.Model) -> str:
        return reverse("servers:certificate", args=[instance.pk])


class CertificateDelete(SelectsNode, DeleteConfirm):
    """Blocked while a virtual server uses the certificate (they are listed)."""

    model = Certificate

    def selected_node(self) -> str:
        return "certificates"

    def success_url(self, instance: models.Model) -> str:
        return reverse("servers:certificate-list")
