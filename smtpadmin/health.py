"""Health checks for load balancers, docker-compose and systemd.

* ``GET /healthz``: liveness, the web process answers; touches nothing else.
* ``GET /readyz``: readiness, the database and the broker answer; 503 naming what is down.

Both answer without login and before host validation: a check from inside the container or
from the host itself names 127.0.0.1, which ALLOWED_HOSTS rightly does not list. They show no
data and no error detail (the log has it).

The relay and the Celery processes are not web servers: each touches a readiness file while it
is working (``smtpadmin.readiness``), and ``manage.py ready relay|worker|beat|web`` checks it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse

log = logging.getLogger("smtpadmin.health")

BROKER_TIMEOUT = 3  # seconds for the broker to answer before it counts as down


def database_ready() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as error:
        log.warning("readiness: the database does not answer: %r", error)
        return False
    return True


def broker_ready() -> bool:
    from smtpadmin.celery import app

    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
    except Exception as error:  # kombu raises the transport's own errors
        log.warning("readiness: the broker does not answer: %r", error)
        return False
    return True


CHECKS: dict[str, Callable[[], bool]] = {"database": database_ready, "broker": broker_ready}


def readiness() -> dict[str, str]:
    return {name: "ok" if check() else "unavailable" for name, check in CHECKS.items()}


def _answer(status: int, body: dict[str, object]) -> HttpResponse:
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


def healthz() -> HttpResponse:
    return _answer(200, {"status": "ok"})


def readyz() -> HttpResponse:
    checks = readiness()
    ready = all(value == "ok" for value in checks.values())
    return _answer(200 if ready else 503, {"status": "ok" if ready else "unavailable", **checks})


ENDPOINTS: dict[str, Callable[[], HttpResponse]] = {
    "/healthz": healthz,
    "/healthz/": healthz,
    "/readyz": readyz,
    "/readyz/": readyz,
}


class HealthCheckMiddleware:
    """Answers the health paths first, for GET and HEAD only; everything else passes on."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        endpoint = ENDPOINTS.get(request.path_info)
        if endpoint is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = _answer(405, {"status": "method not allowed"})
            response["Allow"] = "GET, HEAD"
            return response
        response = endpoint()
        if request.method == "HEAD":
            response.content = b""
        return response
