"""A real Celery worker receives a task through the configured broker and runs it.

The broker is whatever the environment configures: Redis in CI, otherwise the embedded
filesystem broker, here under a temporary SMTPADMIN_VAR_DIR. A queue of its own keeps this
test's task away from any other worker on the same broker. Results are ignored by design
(CELERY_TASK_IGNORE_RESULT), so the test reads the worker's log for the task's success.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings

from smtpadmin.celery import app
from smtpadmin.tasks import ping

TIMEOUT = 90


def _transport_options(var_dir: Path) -> dict[str, Any]:
    if not app.conf.broker_url.startswith("filesystem"):
        return dict(app.conf.broker_transport_options)
    broker = var_dir / "broker"
    for folder in ("queue", "processed"):
        (broker / folder).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(broker / "queue"),
        "data_folder_out": str(broker / "queue"),
        "processed_folder": str(broker / "processed"),
        "store_processed": False,
    }


def test_a_real_worker_runs_ping_from_the_broker(tmp_path: Path) -> None:
    queue = f"test-wiring-{uuid.uuid4().hex}"
    transport_options = _transport_options(tmp_path)
    environ = {
        **os.environ,
        "SMTPADMIN_VAR_DIR": str(tmp_path),
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{tmp_path / 'worker.sqlite3'}"),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "smtpadmin", "worker"]
    options = ["--pool", "solo", "--concurrency", "1", "-Q", queue, "-l", "info"]
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [*command, *options, "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=settings.BASE_DIR,
            env=environ,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            with (
                app.connection_for_write(transport_options=transport_options) as connection,
                connection.Producer() as producer,
            ):
                result = ping.apply_async(queue=queue, producer=producer)
            expected = f"Task smtpadmin.tasks.ping[{result.id}] succeeded"
            deadline = time.monotonic() + TIMEOUT
            while True:
                log = log_path.read_text(errors="replace")
                if expected in log:
                    break
                assert worker.poll() is None, f"the worker exited:\n{log}"
                assert time.monotonic() < deadline, f"no success within {TIMEOUT} s:\n{log}"
                time.sleep(0.2)
            assert "'pong'" in log
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            with app.connection_for_write(transport_options=transport_options) as connection:
                # Leave the broker as it was: no queue or binding of this test remains.
                bound = app.amqp.queues[queue].bind(connection.default_channel)
                bound.declare()  # kombu deletes only the bindings this channel knows
                bound.delete()
