"""What one test process must not share with another (``pytest -n N`` runs N of them, and a
developer's ``make run`` may be running beside them): a pytest plugin, listed in
``tests/conftest.py``.

* ``VAR_DIR`` is a fresh temporary folder per process: protocol logs, badmail, maildrop folders,
  the filesystem broker's queues and beat's schedule file never land in the project's var/ and
  never meet another process's. The SQLite test database is already named per process.
* The broker: under pytest-xdist, worker ``gwN`` uses Redis database ``base + N``, where base
  is the database of CELERY_BROKER_URL (``redis://127.0.0.1:6379/9`` with ``-n 3``: 9, 10 and
  11), so one worker's Celery processes never take another's tasks and FLUSHDB stays within
  the worker. The filesystem broker lives in the process's own VAR_DIR.
* PostgreSQL: pytest-django names the test database per worker (``test_<name>_gwN``); test
  subprocesses get its URL from ``tests.relay.harness.process_environment``.

Settings, the Celery app and ``os.environ`` (which subprocesses inherit) are changed together,
before any test runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

_made: list[Path] = []


def worker_index() -> int:
    """0 without xdist, N in xdist's worker ``gwN``."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker.removeprefix("gw")) if worker.startswith("gw") else 0


def broker_url_for_worker(url: str, index: int) -> str:
    """A Redis URL moved ``index`` databases up from its own (``/9`` -> ``/11`` for gw2);
    other brokers are returned unchanged (the filesystem broker is per VAR_DIR)."""
    parts = urlsplit(url)
    if index == 0 or parts.scheme not in ("redis", "rediss"):
        return url
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{base + index}"))


def _moved(value: Any, old: Path, new: Path) -> Any:
    """A path setting under the old VAR_DIR, under the new one instead."""
    if isinstance(value, str | Path) and Path(value).is_relative_to(old):
        moved = new / Path(value).relative_to(old)
        return str(moved) if isinstance(value, str) else moved
    return value


def pytest_configure(config: pytest.Config) -> None:
    from smtpadmin.celery import app

    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    old_var = Path(settings.VAR_DIR)
    var_dir = Path(tempfile.mkdtemp(prefix=f"smtpadmin-tests-{worker}-"))
    _made.append(var_dir)

    settings.VAR_DIR = var_dir
    settings.STATIC_ROOT = _moved(settings.STATIC_ROOT, old_var, var_dir)
    settings.CELERY_BEAT_SCHEDULE_FILENAME = _moved(
        settings.CELERY_BEAT_SCHEDULE_FILENAME, old_var, var_dir
    )
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        key: _moved(value, old_var, var_dir)
        for key, value in settings.CELERY_BROKER_TRANSPORT_OPTIONS.items()
    }
    settings.CELERY_BROKER_URL = broker_url_for_worker(
        str(settings.CELERY_BROKER_URL), worker_index()
    )
    if settings.CELERY_BROKER_URL.startswith("filesystem"):
        for key in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder"):
            folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(key)
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)

    app.conf.update(
        broker_url=settings.CELERY_BROKER_URL,
        broker_transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        beat_schedule_filename=settings.CELERY_BEAT_SCHEDULE_FILENAME,
    )
    os.environ["SMTPADMIN_VAR_DIR"] = str(var_dir)
    os.environ["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL


def pytest_unconfigure(config: pytest.Config) -> None:
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    return f"smtpadmin: VAR_DIR {settings.VAR_DIR}, broker {settings.CELERY_BROKER_URL}"
