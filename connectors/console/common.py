"""Pieces the connectors' console pages share."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from connectors.models import Connector


class SelectsNode:
    """Marks this page's node in the tree; the key depends on the object, so it is computed."""

    def selected_node(self) -> str:
        return ""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)  # type: ignore[misc]
        key = self.selected_node()
        if key:
            context["nav_key"] = key
        return context


def connector_state(connector: Connector) -> tuple[str, str]:
    """(badge class, readable text): disabled, or down after connection failures, or ''."""
    if not connector.enabled:
        return "disabled", "disabled"
    if connector.is_marked_down:
        until = timezone.localtime(connector.down_until).strftime("%Y-%m-%d %H:%M")
        reason = f": {connector.down_reason}" if connector.down_reason else ""
        return "down", f"down until {until}{reason}"
    return "", ""


def yes_no(value: bool) -> str:
    return "yes" if value else "no"
