"""The embedded broker: kombu's filesystem transport with its races and leftovers fixed.

A task is one file in the queue folder, ``<time>_<uuid>.<queue>.msg``. What this changes:

* The time in the name is the clock in nanoseconds, zero-padded, so that sorting the names is
  the order of publishing, also across restarts (kombu's monotonic milliseconds, unpadded, put
  tasks of the same millisecond in random order, sorted "10000" before "9999" and started
  again at every boot while the tasks stayed in the folder).
* Publishing writes the file under a temporary name in the in-flight folder and renames it into
  the queue folder: a consumer never sees a half-written task (kombu's creates the file in the
  queue folder and then writes it: a consumer polling in between could take an empty file).
* Taking a task renames it into the in-flight folder (one rename wins among consumers), reads it
  and deletes it there. kombu moved it to the system's temporary folder (a copy when that is
  another file system, and a file left there by a consumer that died in between).
* A consumer lists the folder once for a run of tasks, not once per task (kombu's sorted the
  whole listing for every task: a backlog of thousands made each take milliseconds).
* What a process that died between those steps left in the in-flight folder is removed by the
  next process that opens the broker, once it is older than any publish or take can be (a task
  lost that way is like one a broker lost: the sweeper finds its work in the database).

Consumers poll the folder (settings.CELERY_BROKER_TRANSPORT_OPTIONS "polling_interval").
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import deque
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

# Seconds after which a file in the in-flight folder is a leftover: a publish or a take holds
# one there for the time of one small write or read.
LEFTOVER_AFTER = 60.0


def message_name(queue: str) -> str:
    """The name of a task file: publishing time, a unique id, the queue."""
    return f"{time.time_ns():020d}_{uuid.uuid4()}.{queue}.msg"


def queue_of(name: str) -> str:
    """The queue a task file belongs to ("" for anything else in the folder)."""
    _, dot, rest = name.partition(".")
    return rest.removesuffix(".msg") if dot and rest.endswith(".msg") else ""


def remove_leftovers(folder: str, now: float, older_than: float = LEFTOVER_AFTER) -> int:
    """Delete the files of ``folder`` last changed more than ``older_than`` seconds before
    ``now`` (wall-clock); returns how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file() and entry.stat().st_mtime < now - older_than:
                    os.unlink(entry.path)
                    removed += 1
    return removed


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per queue: task files seen at the last listing and not taken yet, oldest first.
        self._listed: dict[str, deque[str]] = {}
        remove_leftovers(self.processed_folder, time.time())

    # kombu's filesystem signature, which its stubs mark as differing from the base's.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = message_name(queue)
        staged = os.path.join(self.processed_folder, f"{name}.part")
        try:
            with open(staged, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.rename(staged, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            raise ChannelError(f"Cannot add {name!r} to the broker folder") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        listed = self._listed.get(queue)
        if listed:  # the rest of the last listing (other consumers may have taken some)
            payload = self._take(listed)
            if payload is not None:
                return loads(bytes_to_str(payload))
        names = sorted(n for n in os.listdir(self.data_folder_in) if queue_of(n) == queue)
        listed = self._listed[queue] = deque(names)
        payload = self._take(listed)
        if payload is None:
            raise Empty()
        return loads(bytes_to_str(payload))

    def _take(self, listed: deque[str]) -> bytes | None:
        """The content of the first listed task no other consumer has taken (None when they
        all have): renamed into the in-flight folder, read and deleted there."""
        while listed:
            name = listed.popleft()
            taken = os.path.join(self.processed_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), taken)
            except FileNotFoundError:  # another consumer took it first
                continue
            try:
                with open(taken, "rb") as f:
                    return f.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read {name!r} from the broker folder") from exc
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(taken)
        return None

    def _size(self, queue: str) -> int:
        return sum(1 for name in os.listdir(self.data_folder_in) if queue_of(name) == queue)


class Transport(filesystem.Transport):
    Channel = Channel
