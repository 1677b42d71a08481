"""``python manage.py ready web|relay|worker|beat``: exit 0 when that process is ready, 1 when
not, with one line saying why. Meant for docker-compose healthchecks, systemd and monitoring
scripts; it asks no database and no broker itself (web: it asks the web's own /readyz)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from smtpadmin.readiness import MAX_AGE_SECONDS, Readiness, check

DEFAULT_URL = "http://127.0.0.1:8000/readyz"


class Command(BaseCommand):
    help = "Is this process ready? Exit 0 if so, 1 if not (for health checks)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=("web", "relay", "worker", "beat"))
        parser.add_argument(
            "--name",
            help="relay: the server name (default SMTPADMIN_SERVER_NAME); worker: the node name "
            "(default celery@<this host>); beat: the host name (default this host).",
        )
        parser.add_argument(
            "--max-age",
            type=float,
            default=MAX_AGE_SECONDS,
            help=f"seconds since the last sign of life (default {MAX_AGE_SECONDS:.0f})",
        )
        parser.add_argument("--url", default=DEFAULT_URL, help=f"web: (default {DEFAULT_URL})")

    def handle(self, *args: Any, **options: Any) -> None:
        kind: str = options["kind"]
        if options["max_age"] <= 0:
            raise CommandError("--max-age must be above 0.")
        if kind == "web":
            ready, line = self.web(options["url"])
        else:
            name = (
                options["name"]
                or {
                    "relay": settings.SMTPADMIN_SERVER_NAME,
                    "worker": f"celery@{socket.gethostname()}",
                    "beat": socket.gethostname(),
                }[kind]
            )
            result = check(kind, name, options["max_age"])
            ready, line = result.state is Readiness.READY, f"{kind} {name}: {result.describe()}"
        self.stdout.write(line)
        if not ready:
            raise SystemExit(1)

    def web(self, url: str) -> tuple[bool, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (local check)
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            body, status = error.read(), error.code
        except (OSError, ValueError) as error:
            return False, f"web {url}: not ready: {error}"
        try:
            checks = json.loads(body)
        except ValueError:
            checks = {}
        down = sorted(k for k, v in checks.items() if k != "status" and v != "ok")
        if status == 200:
            return True, f"web {url}: ready"
        return False, f"web {url}: not ready (HTTP {status}; down: {', '.join(down) or '?'})"
