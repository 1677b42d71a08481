"""Threads in tests whose failures reach the test: an ``assert`` (or any exception) inside the
thread is raised again in the main thread by ``finish()``, instead of ending only the thread
(where pytest would at most print it).

    sender = TestThread(blast)
    sender.start()
    ...
    sender.finish(10)   # raises what the thread raised; fails if it is still running
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class TestThread(threading.Thread):
    __test__ = False  # a helper, not a test class for pytest to collect

    def __init__(self, target: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        super().__init__(target=target, args=args, name=name, daemon=True)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            super().run()
        except BaseException as error:  # handed to the main thread by finish()
            self.error = error

    def finish(self, timeout: float) -> None:
        """Wait for the thread; raise its exception, or fail if it has not ended in time."""
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"thread {self.name} still running after {timeout} s")
        if self.error is not None:
            raise self.error


def finish_all(threads: list[TestThread], timeout: float) -> None:
    """``finish`` each thread; every one is joined before the first failure is raised."""
    for thread in threads:
        thread.join(timeout)
    for thread in threads:
        thread.finish(0)
