"""Recipients: accepted domains (one is the default) and local mailboxes."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.db import models, transaction
from django.db.models import Count
from django.shortcuts import get_object_or_404
from django.urls import reverse

from servers.console.common import yes_no
from servers.models import AcceptedDomain, Mailbox
from smtpadmin.listing import Action, Column, DeleteConfirm, ObjectList
from smtpadmin.navigation import SelectsNode
from smtpadmin.sheets import PropertySheet, SheetForm, Tab


class AcceptedDomainList(ObjectList):
    title = "Accepted Domains"
    nav_key = "accepted-domains"
    search_fields = ("domain",)
    columns = [
        Column("Domain", lambda d: d.domain, "domain", link=True),
        Column("Type", lambda d: d.get_type_display(), "type"),
        Column("Default", lambda d: "default" if d.is_default else "", "is_default"),
        Column("Mailboxes", lambda d: d.mailbox_count, "mailbox_count"),
    ]

    def get_queryset(self) -> models.QuerySet[AcceptedDomain]:
        return AcceptedDomain.objects.annotate(mailbox_count=Count("mailboxes"))

    def object_url(self, obj: AcceptedDomain) -> str:
        return reverse("servers:accepted-domain", args=[obj.pk])

    def actions(self) -> list[Action]:
        return [Action("New Accepted Domain", reverse("servers:accepted-domain-new"))]


class AcceptedDomainForm(SheetForm):
    def _get_validation_exclusions(self) -> set[str]:
        # "One default domain" holds because saving takes the flag from the previous default
        # in the same transaction (AcceptedDomain.clear_default), as the API does.
        exclusions: set[str] = super()._get_validation_exclusions()  # type: ignore[misc]
        return exclusions | {"is_default"}


class AcceptedDomainSheet(SelectsNode, PropertySheet):
    model = AcceptedDomain
    base_form = AcceptedDomainForm
    tabs = [
        Tab(
            "General",
            ("domain", "type", "is_default"),
            "Authoritative: delivered to local mailboxes, unknown recipients refused. "
            "Internal relay: accepted and routed on by connector. "
            "External relay: accepted for relay only (a backup MX, say).",
        )
    ]

    @cached_property
    def domain(self) -> AcceptedDomain | None:
        if "pk" not in self.kwargs:
            return None
        return get_object_or_404(AcceptedDomain, pk=self.kwargs["pk"])

    def get_object(self) -> AcceptedDomain | None:
        return self.domain

    def selected_node(self) -> str:
        return "accepted-domains"

    def get_success_url(self, instance: models.Model) -> str:
        return reverse("servers:accepted-domain", args=[instance.pk])

    def save(self, form: Any) -> models.Model:
        with transaction.atomic():
            if form.cleaned_data.get("is_default"):
                AcceptedDomain.clear_default(by=self.request.user, keep=form.instance.pk)
            return super().save(form)

    def actions(self) -> list[Action]:
        if self.domain is None:
            return []
        return [Action("Delete", reverse("servers:accepted-domain-delete", args=[self.domain.pk]))]

    def sheet_context(self, form: Any) -> dict[str, Any]:
        context = super().sheet_context(form)
        context["title"] = f"{self.domain} Properties" if self.domain else "New Accepted Domain"
        return context


class AcceptedDomainDelete(SelectsNode, DeleteConfirm):
    """Blocked while mailboxes live in the domain (they are listed)."""

    model = AcceptedDomain

    def selected_node(self) -> str:
        return "accepted-domains"

    def success_url(self, instance: models.Model) -> str:
        return reverse("servers:accepted-domain-list")


class MailboxList(ObjectList):
    title = "Mailboxes"
    nav_key = "mailboxes"
    search_fields = ("address",)
    columns = [
        Column("Address", lambda m: m.address, "address", link=True),
        Column("Display name", lambda m: m.display_name, "display_name"),
        Column("Domain", lambda m: m.domain.domain, "domain__domain"),
        Column("Enabled", lambda m: yes_no(m.enabled), "enabled"),
    ]

    def get_queryset(self) -> models.QuerySet[Mailbox]:
        return Mailbox.objects.select_related("domain")

    def object_url(self, obj: Mailbox) -> str:
        return reverse("servers:mailbox", args=[obj.pk])

    def actions(self) -> list[Action]:
        return [Action("New Mailbox", reverse("servers:mailbox-new"))]


class MailboxSheet(SelectsNode, PropertySheet):
    model = Mailbox
    tabs = [
        Tab(
            "General",
            ("address", "display_name", "enabled"),
            "The address must be in an authoritative accepted domain.",
        )
    ]

    @cached_property
    def mailbox(self) -> Mailbox | None:
        if "pk" not in self.kwargs:
            return None
        return get_object_or_404(Mailbox.objects.select_related("domain"), pk=self.kwargs["pk"])

    def get_object(self) -> Mailbox | None:
        return self.mailbox

    def selected_node(self) -> str:
        return "mailboxes"

    def get_success_url(self, instance: models.Model) -> str:
        return reverse("servers:mailbox", args=[instance.pk])

    def facts(self) -> list[tuple[str, Any]]:
        return [("Accepted domain", self.mailbox.domain.domain)] if self.mailbox else []

    def actions(self) -> list[Action]:
        if self.mailbox is None:
            return []
        return [Action("Delete", reverse("servers:mailbox-delete", args=[self.mailbox.pk]))]

    def sheet_context(self, form: Any) -> dict[str, Any]:
        context = super().sheet_context(form)
        context["title"] = f"{self.mailbox} Properties" if self.mailbox else "New Mailbox"
        return context


class MailboxDelete(SelectsNode, DeleteConfirm):
    model = Mailbox

    def selected_node(self) -> str:
        return "mailboxes"

    def success_url(self, instance: models.Model) -> str:
        return reverse("servers:mailbox-list")
