"""LOG_FORMAT: plain by default, json for log shippers (one object per line, the call's
``extra`` fields included); anything else stops the start with a clear message."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from smtpadmin.logformat import JsonFormatter

ROOT = Path(settings.BASE_DIR)


def test_a_json_line_carries_the_message_and_the_extra_fields() -> None:
    record = logging.LogRecord(
        "relay.smtp", logging.INFO, __file__, 1, "session %s ended", ("S1",), None
    )
    record.queue_id = "ABC123"
    record.duration_ms = 12.5
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "session S1 ended"
    assert entry["level"] == "INFO" and entry["logger"] == "relay.smtp"
    assert entry["queue_id"] == "ABC123" and entry["duration_ms"] == 12.5
    assert entry["time"].endswith("+00:00")


def test_an_exception_stays_on_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: bad" in json.loads(line)["exception"]


def run_with(log_format: str) -> subprocess.CompletedProcess[str]:
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('t').warning('hello', extra={'client': '192.0.2.1'})"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "smtpadmin.settings",
            "SECRET_KEY": "test-only",
            "LOG_FORMAT": log_format,
            "SMTPADMIN_VAR_DIR": str(settings.VAR_DIR),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_setting_switches_every_process_log() -> None:
    done = run_with("json")
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stderr.strip().splitlines()[-1])
    assert entry["message"] == "hello" and entry["client"] == "192.0.2.1"
    plain = run_with("plain")
    assert plain.stderr.strip().endswith("WARNING t: hello")
    wrong = run_with("xml")
    assert wrong.returncode != 0 and "LOG_FORMAT='xml': use plain or json" in wrong.stderr
