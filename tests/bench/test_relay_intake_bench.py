"""bench/relay_intake.py runs end to end with tiny numbers: it finishes, prints the ratio and
stores every message it relayed. Only that: benchmarks are not timed tests (the numbers depend
on the machine), so nothing here looks at the speed.

It uses the database the tests use: SQLite in a temporary folder by default, or its own
``smtpadmin_bench`` database on the PostgreSQL server of DATABASE_URL (as in CI)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 20


def test_the_relay_intake_bench_runs_and_stores_every_message() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "relay_intake.py"),
            "--messages",
            str(MESSAGES),
            "--clients",
            "2",
            "--recipients",
            "3",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"

    assert completed.returncode == 0, output
    assert re.search(r"^ratio relay/reference: \d+\.\d+", completed.stdout, re.M), output
    stored = re.search(r"^stored: (\d+)/(\d+) measured messages", completed.stdout, re.M)
    assert stored is not None, output
    assert (int(stored.group(1)), int(stored.group(2))) == (MESSAGES, MESSAGES), output
