"""Startup problems as Django system checks with stable ids."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register


@register()
def check_secret_key(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    import os

    if not os.environ.get("SECRET_KEY") and not settings.DEBUG:
        return [
            Warning(
                "SECRET_KEY is not set; a random key is used and logins end at every restart.",
                hint="Set SECRET_KEY in the environment (.env for docker-compose).",
                id="smtpadmin.W001",
            )
        ]
    return []
