"""Startup problems as Django system checks with stable ids."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register


@register()
def check_secret_key(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    if len(settings.SECRET_KEY) < 32:
        return [
            Warning(
                "SECRET_KEY is shorter than 32 characters.",
                hint="Use a long random value, e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(50))'.",
                id="smtpadmin.W001",
            )
        ]
    return []
