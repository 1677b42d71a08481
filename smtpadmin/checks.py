"""Startup problems as Django system checks with stable ids."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register

from smtpadmin.private import exposed

# Paths named in the warning, and how many are looked for at most (a whole tree may be open).
SHOWN = 5
LOOKED_FOR = 20


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


def _sqlite_files() -> list[Path]:
    """The SQLite database and its journals, wherever DATABASE_URL puts them."""
    database = settings.DATABASES["default"]
    if not str(database.get("ENGINE", "")).endswith("sqlite3"):
        return []
    name = str(database.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return []
    return [Path(name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]


@register(Tags.security)
def check_private_files(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """The var directory holds the database, queued mail, Maildirs, badmail, protocol logs and
    the secret key: other users of the host must not read them. Files made before they were
    created private (or copied in since) are found here; static files are public anyway."""
    var_dir = Path(settings.VAR_DIR)
    static = Path(settings.STATIC_ROOT) if settings.STATIC_ROOT else None
    outside = [p for p in _sqlite_files() if var_dir not in p.parents]
    found = exposed(var_dir, public=[static] if static else [], also=outside, limit=LOOKED_FOR)
    if not found:
        return []
    listed = ", ".join(str(p) for p in found[:SHOWN])
    if len(found) > SHOWN:
        plus = "+" if len(found) >= LOOKED_FOR else ""
        listed += f" and {len(found) - SHOWN}{plus} more"
    targets = " ".join(shlex.quote(str(p)) for p in [var_dir, *(p for p in outside if p in found)])
    return [
        Warning(
            f"Files or folders holding secrets or mail are open to other users: {listed}.",
            hint=f"Run: chmod -R go-rwx {targets} (files made from now on are private).",
            id="smtpadmin.W002",
        )
    ]
