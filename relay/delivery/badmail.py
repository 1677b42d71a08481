"""The badmail directory: where mail that cannot be delivered and must not be bounced ends up
(a double bounce: a DSN, or another null-sender message, that failed), as IIS and Exchange
keep it. Each message is one ``.eml`` file (the bytes as queued, readable by any mail tool)
next to a small ``.txt`` file that says why it is there.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from relay.delivery.paths import path_component
from relay.queue.models import Message
from servers.models import VirtualServer
from smtpadmin.private import private_directory


def badmail_directory(vs: VirtualServer | None) -> Path:
    """The virtual server's badmail directory, else ``<VAR_DIR>/badmail/<server name>``."""
    if vs is not None and vs.badmail_directory.strip():
        return Path(vs.badmail_directory.strip())
    root = Path(settings.VAR_DIR) / "badmail"
    if vs is None or not vs.server_id:
        return root
    return root / path_component(vs.server.name)


def _write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet, and make it durable before anyone relies on it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_badmail(
    directory: str | Path,
    message: int | Message | bytes,
    reason: str,
    *,
    now: datetime | None = None,
) -> Path:
    """Write ``message`` (a Message, its primary key, or raw bytes) into ``directory`` as
    ``<time>-<queue id>-<random>.eml`` plus the same name with ``.txt`` holding ``reason``.
    Returns the ``.eml`` path. The reason is written first: an ``.eml`` never lies there
    without its explanation. Names never collide (the random part, and O_EXCL)."""
    if isinstance(message, int):
        message = Message.objects.get(pk=message)
    if isinstance(message, Message):
        content, queue_id = message.raw, message.queue_id
    else:
        content, queue_id = bytes(message), "message"
    folder = Path(directory)
    private_directory(folder)  # parents too: badmail holds whole messages
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{stamp}-{path_component(queue_id)}-{secrets.token_hex(4)}"
    text = reason if reason.endswith("\n") else reason + "\n"
    _write_new(folder / f"{stem}.txt", text.replace("\r\n", "\n").encode("utf-8"))
    eml = folder / f"{stem}.eml"
    _write_new(eml, content)
    return eml
