"""``manage.py ready``: exit 0 and one line when the process is ready; exit 1 with the reason
when its readiness file is missing or too old, or when the web's /readyz says 503."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from smtpadmin.readiness import Readiness, check, clear, mark, path_for
from tests.relay.harness import free_port


@pytest.fixture(autouse=True)
def var_dir(tmp_path: Path) -> Iterator[Path]:
    with override_settings(VAR_DIR=tmp_path):
        yield tmp_path


def ready(*arguments: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("ready", *arguments, stdout=out)
    except SystemExit as stop:
        return int(stop.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_a_relay_that_never_started_is_not_ready() -> None:
    code, line = ready("relay", "--name", "node1")
    assert code == 1
    assert "no readiness file" in line


def test_a_fresh_mark_is_ready_and_an_old_one_is_not() -> None:
    mark("relay", "node1")
    code, line = ready("relay", "--name", "node1")
    assert code == 0 and "ready (" in line
    old = time.time() - 120
    os.utime(path_for("relay", "node1"), (old, old))
    code, line = ready("relay", "--name", "node1")
    assert code == 1 and "last sign of life 120 s ago" in line
    assert ready("relay", "--name", "node1", "--max-age", "300")[0] == 0
    clear("relay", "node1")
    assert check("relay", "node1").state is Readiness.ABSENT


def test_names_cannot_reach_outside_the_run_folder(var_dir: Path) -> None:
    path = path_for("worker", "../../etc/passwd")
    assert path.parent == var_dir / "run"
    mark("worker", "celery@host one")
    assert check("worker", "celery@host one").state is Readiness.READY


def test_bad_max_age_is_refused() -> None:
    with pytest.raises(Exception, match="--max-age must be above 0"):
        call_command("ready", "beat", "--max-age", "0")


@pytest.mark.django_db
def test_web_readiness_asks_readyz(live_server: object) -> None:
    url = f"{live_server}/readyz"
    code, line = ready("web", "--url", url)
    assert code == 0, line
    code, line = ready("web", "--url", f"http://127.0.0.1:{free_port()}/readyz")
    assert code == 1 and "not ready" in line


def test_every_smtpadmin_container_has_its_readiness_check() -> None:
    compose = yaml.safe_load((Path(settings.BASE_DIR) / "docker-compose.yml").read_text())
    for service in ("web", "relay", "worker", "beat"):
        test = compose["services"][service]["healthcheck"]["test"]
        assert test == ["CMD", "python", "manage.py", "ready", service], (service, test)
