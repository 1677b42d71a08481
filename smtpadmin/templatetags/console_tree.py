"""``{% console_tree %}``: the console tree of the page being rendered, opened down to the
page's own node (``nav_key``), so the current item shows without any script."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from smtpadmin.models import Organization
from smtpadmin.navigation import navigation

register = template.Library()


@register.inclusion_tag("smtpadmin/tree.html", takes_context=True)
def console_tree(context: template.Context) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_tree": None}
    key = str(context.get("nav_key") or "")
    tree = navigation.tree(
        user, Organization.get().name, reverse("smtpadmin:organization"), selected=key
    )
    return {"nav_tree": tree, "nav_key": key}
