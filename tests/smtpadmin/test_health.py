"""/healthz and /readyz: open without login and before host validation, no data shown, 503
naming what is down (a real database and broker that do not answer, in a separate process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from tests.relay.harness import free_port, process_environment

ROOT = Path(settings.BASE_DIR)


def test_healthz_answers_without_login_for_any_host() -> None:
    # A check from inside a container names 127.0.0.1 or the container: never in ALLOWED_HOSTS.
    response = Client().get("/healthz", HTTP_HOST="not-an-allowed-host.test")
    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_readyz_is_ready_when_the_database_and_the_broker_answer() -> None:
    response = Client().get("/readyz/", HTTP_HOST="127.0.0.1")
    assert response.status_code == 200, response.content
    assert json.loads(response.content) == {"status": "ok", "database": "ok", "broker": "ok"}


def test_health_paths_take_only_get_and_head() -> None:
    assert Client().post("/readyz").status_code == 405
    head = Client().head("/healthz")
    assert head.status_code == 200 and head.content == b""


def readyz_in_a_process(**env: str) -> tuple[int, dict[str, str]]:
    """GET /readyz in a fresh process with these settings (what a restarted web would see)."""
    script = (
        "import json, django; django.setup(); from django.test import Client; "
        "r = Client().get('/readyz'); print(json.dumps([r.status_code, json.loads(r.content)]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=process_environment(DJANGO_SETTINGS_MODULE="smtpadmin.settings", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    status, body = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Traceback" not in json.dumps(body)
    return status, body


@pytest.mark.django_db
def test_readyz_names_a_database_that_does_not_answer() -> None:
    status, body = readyz_in_a_process(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nothing"
    )
    assert status == 503
    assert body["status"] == "unavailable" and body["database"] == "unavailable"


@pytest.mark.django_db
def test_readyz_names_a_broker_that_does_not_answer() -> None:
    status, body = readyz_in_a_process(CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert status == 503
    assert body == {"status": "unavailable", "database": "ok", "broker": "unavailable"}
