"""Pieces the connectors' console pages share."""

from __future__ import annotations

from django.utils import timezone

from connectors.models import Connector


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
