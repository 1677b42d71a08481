"""Reply rules (under Queue Viewer): which remote replies are retried and which fail with an
NDR, in order; the delivery engine applies them (``relay.queue.rules``). A list, a property
sheet, New and Delete, audited like every configuration change."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from django.shortcuts import get_object_or_404
from django.urls import reverse

from relay.queue.rules import ReplyRule
from smtpadmin.listing import Action, Column, DeleteConfirm, ObjectList
from smtpadmin.roles import Role
from smtpadmin.sheets import PropertySheet, Tab

NAV_KEY = "reply-rules"
TABS = [
    Tab(
        "General",
        ("order", "code", "status", "pattern", "action", "enabled", "note"),
        "A reply that meets every condition given is retried or failed. Rules are tried in "
        "order and the first match decides; with no match, 4xx replies are retried and 5xx "
        "replies fail.",
    )
]


class ReplyRuleList(ObjectList):
    title = "Reply Rules"
    nav_key = NAV_KEY
    empty_text = "There are no rules: 4xx replies are retried and 5xx replies fail."
    columns: ClassVar[list[Column]] = [
        Column("Order", lambda r: r.order, "order", link=True),
        Column("Reply code", lambda r: r.code or "any", "code"),
        Column("Enhanced status", lambda r: r.status or "any", "status"),
        Column("Text pattern", lambda r: r.pattern or "any", "pattern"),
        Column("Action", lambda r: r.get_action_display(), "action"),
        Column("Enabled", lambda r: "yes" if r.enabled else "no", "enabled"),
        Column("Note", lambda r: r.note),
    ]

    def get_queryset(self) -> models.QuerySet[ReplyRule]:
        return ReplyRule.objects.order_by("order", "pk")

    def object_url(self, obj: ReplyRule) -> str:
        return reverse("relay:reply-rule", args=[obj.pk])

    def actions(self) -> list[Action]:
        return [Action("New Rule", reverse("relay:reply-rule-new"))]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["description"] = (
            "How the delivery engine treats a refusal from the next hop: retried later or "
            "failed with an NDR. The first matching rule in order decides."
        )
        return context


class ReplyRuleSheet(PropertySheet):
    model = ReplyRule
    nav_key = NAV_KEY
    tabs = TABS

    def get_object(self) -> ReplyRule:
        return get_object_or_404(ReplyRule, pk=self.kwargs["pk"])

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        if "form" in context:
            context["title"] = f"Reply Rule {context['form'].instance.order} Properties"
        return context

    def actions(self) -> list[Action]:
        return [Action("Delete", reverse("relay:reply-rule-delete", args=[self.kwargs["pk"]]))]

    def get_success_url(self, instance: Any) -> str:
        return reverse("relay:reply-rules")


class NewReplyRule(PropertySheet):
    model = ReplyRule
    title = "New Reply Rule"
    nav_key = NAV_KEY
    read_role = Role.ADMINISTRATOR
    tabs = TABS

    def get_success_url(self, instance: Any) -> str:
        return reverse("relay:reply-rules")


class ReplyRuleDelete(DeleteConfirm):
    model = ReplyRule
    nav_key = NAV_KEY

    def success_url(self, instance: Any) -> str:
        return reverse("relay:reply-rules")
