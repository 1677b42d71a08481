"""Readiness files of the processes that serve no HTTP: the relay, the Celery worker and beat.

A process touches ``VAR_DIR/run/<kind>-<name>.ready`` while it is working (the relay after each
heartbeat it wrote to the database, the worker and beat every few seconds while connected to the
broker) and removes it when it stops. ``manage.py ready <kind>`` answers from the file's age,
so a docker-compose healthcheck or a systemd timer needs neither the database nor the broker to
ask, and a hung process shows as not ready once its file is older than the allowed age.
"""

from __future__ import annotations

import contextlib
import enum
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from smtpadmin.private import private_directory

TOUCH_SECONDS = 5.0  # how often the worker and beat touch their file
MAX_AGE_SECONDS = 30.0  # older than this: not ready (the console's "not responding" as well)


class Readiness(enum.Enum):
    READY = "ready"
    STALE = "stale"  # the process stopped touching its file: hung, or killed with -9
    ABSENT = "absent"  # never started, or stopped


@dataclass(frozen=True)
class Check:
    state: Readiness
    path: Path
    age: float | None = None

    def describe(self) -> str:
        if self.state is Readiness.READY:
            return f"ready ({self.age:.0f} s ago: {self.path})"
        if self.state is Readiness.STALE:
            return f"not ready: last sign of life {self.age:.0f} s ago ({self.path})"
        return f"not ready: no readiness file ({self.path})"


def path_for(kind: str, name: str) -> Path:
    # Node names such as "celery@host" stay readable; nothing else may reach the path.
    safe = re.sub(r"[^A-Za-z0-9@._-]", "_", name)
    return Path(settings.VAR_DIR) / "run" / f"{kind}-{safe}.ready"


def mark(kind: str, name: str) -> None:
    """This process is working: create or touch its file (never raises: a full or read-only
    disk must not stop the relay, the check then just says not ready)."""
    path = path_for(kind, name)
    with contextlib.suppress(OSError):
        private_directory(path.parent)
        path.touch()  # an existing file's time is set to now


def clear(kind: str, name: str) -> None:
    with contextlib.suppress(OSError):
        path_for(kind, name).unlink()


def check(
    kind: str, name: str, max_age: float = MAX_AGE_SECONDS, now: float | None = None
) -> Check:
    path = path_for(kind, name)
    try:
        modified = path.stat().st_mtime
    except OSError:
        return Check(Readiness.ABSENT, path)
    age = max((time.time() if now is None else now) - modified, 0.0)
    return Check(Readiness.READY if age <= max_age else Readiness.STALE, path, age)


class Toucher:
    """A daemon thread touching one readiness file while ``alive()`` holds."""

    def __init__(
        self, kind: str, name: str, alive: Callable[[], bool], seconds: float = TOUCH_SECONDS
    ) -> None:
        self.kind, self.name, self.alive, self.seconds = kind, name, alive, seconds
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"readiness-{kind}", daemon=True)

    def start(self) -> Toucher:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        clear(self.kind, self.name)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                working = self.alive()
            except Exception:  # a check that fails is a process that is not ready
                working = False
            if working and not self.stopping.is_set():
                mark(self.kind, self.name)
            self.stopping.wait(self.seconds)
