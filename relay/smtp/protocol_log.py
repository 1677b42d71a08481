"""The SMTP protocol log of a virtual server, in W3C extended log format as IIS SMTP wrote it:
one file per UTC day per virtual server (``<VAR_DIR>/logs/SMTPSVC<id>/exYYMMDD.log``), a
header block (#Software, #Version, #Date, #Fields) at the start of every file and whenever a
process starts writing to it, then one line per command and its reply.

It never holds secrets: the argument of AUTH keeps only the mechanism, and the lines a client
sends in answer to an AUTH challenge (logged with the method ``AUTH_RESPONSE``) are masked
whole. Values are made safe for the space-separated format: spaces become ``+``, control
characters become ``%XX``, an empty value is ``-``.

Writing is a short append under a lock, flushed per line, so a session may call it from the
event loop; a log that cannot be written (full disk, permissions) is reported once and never
disturbs the SMTP conversation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO

from django.conf import settings

from smtpadmin.host import software_version
from smtpadmin.private import open_private, private_directory

log = logging.getLogger("relay.protocol_log")

# The method to log the lines a client sends in answer to an AUTH challenge (the base64
# user name and password of AUTH LOGIN, the credentials of AUTH PLAIN without an initial
# response): their argument is never written.
AUTH_RESPONSE = "AUTH-RESPONSE"
MASK = "***"

FIELDS = (
    "date",
    "time",
    "c-ip",
    "cs-username",
    "s-sitename",
    "s-computername",
    "s-ip",
    "s-port",
    "cs-method",
    "cs-uri-query",
    "sc-status",
    "cs-bytes",
    "sc-bytes",
    "time-taken",
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def masked_argument(method: str, argument: str) -> str:
    """What may be logged of a command's argument: the SASL mechanism of AUTH but not its
    initial response; nothing of an AUTH_RESPONSE line."""
    verb = method.upper()
    if verb == AUTH_RESPONSE:
        return MASK if argument else ""
    if verb == "AUTH":
        mechanism, _, initial_response = argument.strip().partition(" ")
        return f"{mechanism} {MASK}" if initial_response.strip() else mechanism
    return argument


def field(value: object) -> str:
    """One value as a W3C field: no spaces, no line breaks, ``-`` when empty."""
    text = "" if value is None else str(value)
    if not text:
        return "-"
    if text.isprintable() and " " not in text:
        return text  # the common case, cheaply
    out = []
    for char in text:
        if char == " ":
            out.append("+")
        elif not char.isprintable():
            # An undecodable byte from the client (a lone surrogate) as the byte it was.
            out.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogateescape")))
        else:
            out.append(char)
    return "".join(out)


class ProtocolLog:
    """The protocol log of one virtual server. ``directory`` is the logs folder (default
    ``<VAR_DIR>/logs``); this virtual server writes into its ``SMTPSVC<vs_id>`` folder.
    ``clock`` returns the current time (aware, or naive meaning UTC); tests pass their own."""

    def __init__(
        self,
        vs_id: int,
        site_name: str,
        computer_name: str,
        directory: Path | str | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        root = Path(settings.VAR_DIR) / "logs" if directory is None else Path(directory)
        self.folder = root / f"SMTPSVC{vs_id}"
        self.site_name = site_name
        self.computer_name = computer_name
        self.clock = clock
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._day: date | None = None
        self._failing = False

    def path_for(self, day: date) -> Path:
        return self.folder / f"ex{day:%y%m%d}.log"

    def write(
        self,
        *,
        client_ip: str,
        username: str = "",
        server_ip: str,
        server_port: int,
        method: str,
        argument: str = "",
        status: int | str | None,
        bytes_in: int = 0,
        bytes_out: int = 0,
        time_taken_ms: int = 0,
    ) -> None:
        """One line: a command (``method`` and ``argument``), the reply's ``status`` code
        (250 or "250"; None if there was none), bytes received and sent for it, and how long
        it took. ``argument`` is masked here for AUTH and AUTH_RESPONSE: pass it as received."""
        now = self._now()
        values = (
            f"{now:%Y-%m-%d}",
            f"{now:%H:%M:%S}",
            client_ip,
            username,
            self.site_name,
            self.computer_name,
            server_ip,
            server_port,
            method.upper(),
            masked_argument(method, argument),
            status,
            bytes_in,
            bytes_out,
            time_taken_ms,
        )
        line = " ".join(field(value) for value in values) + "\n"
        with self._lock:
            try:
                self._file_for(now).write(line)
            except OSError as exc:
                self._failed(exc)
            else:
                self._failing = False

    def close(self) -> None:
        with self._lock:
            self._close()

    def __enter__(self) -> ProtocolLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo is None else now.astimezone(UTC)

    def _file_for(self, now: datetime) -> TextIO:
        if self._file is not None and self._day == now.date():
            return self._file
        self._close()
        # Private (0700 folders, 0600 files): the log holds client addresses and user names.
        private_directory(self.folder)
        descriptor = open_private(self.path_for(now.date()), os.O_WRONLY | os.O_APPEND)
        # Line-buffered append: each line reaches the file in one write, whole, even when
        # another process (a restarted worker) appends to the same file.
        file = os.fdopen(descriptor, "a", encoding="utf-8", newline="\n", buffering=1)
        try:
            file.write(
                f"#Software: smtpadmin {software_version()}\n"
                "#Version: 1.0\n"
                f"#Date: {now:%Y-%m-%d %H:%M:%S}\n"
                f"#Fields: {' '.join(FIELDS)}\n"
            )
        except OSError:
            file.close()
            raise
        self._file, self._day = file, now.date()
        return file

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._failed(exc)
        self._file, self._day = None, None

    def _failed(self, exc: OSError) -> None:
        # Report once until it works again: the log must not flood the worker's own log.
        if not self._failing:
            log.warning("Protocol log %s cannot be written: %s", self.folder, exc)
        self._failing = True
        file, self._file, self._day = self._file, None, None
        if file is not None:
            with contextlib.suppress(OSError):  # already reported
                file.close()
