"""How many tasks wait on a broker, sampled in a thread during a measurement: a broker that
keeps up stays near zero whatever the rate; one that does not grows with every message.

* Redis: the sum of LLEN over every list of the (private) Redis database: kombu keeps each
  queue, and each priority of it, as one list, and nothing else there is a list.
* the embedded filesystem broker: the task files in its queue folder (``*.msg``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

INTERVAL = 0.1  # seconds between samples


def folder_depth(folder: Path) -> int:
    """Task files waiting in a filesystem broker's queue folder (0 before it exists)."""
    try:
        return sum(1 for entry in folder.iterdir() if entry.name.endswith(".msg"))
    except FileNotFoundError:
        return 0


def redis_depth(client: Any) -> int:
    """Messages in all lists of the client's Redis database (a redis.Redis)."""
    keys = list(client.scan_iter(_type="list", count=1000))
    if not keys:
        return 0
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    return int(sum(pipe.execute()))


class DepthSampler:
    """Calls ``probe`` every ``interval`` seconds in a thread between enter and exit; keeps
    the samples and their maximum. A probe that fails (a broker restarting) is skipped."""

    def __init__(self, probe: Callable[[], int], interval: float = INTERVAL) -> None:
        self.probe = probe
        self.interval = interval
        self.samples: list[int] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-depth", daemon=True)

    @property
    def maximum(self) -> int:
        return max(self.samples, default=0)

    def _sample(self) -> None:
        try:
            self.samples.append(self.probe())
        except Exception:  # a sample lost is no reason to lose the measurement
            self.errors += 1

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> DepthSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # what is left at the end counts too
