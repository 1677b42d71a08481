"""A raw SMTP client for the tests that send what smtplib will not: NUL, invalid UTF-8, over-long
lines, pipelined bursts, half-closed connections. Bytes go out as given; replies come back as
the lines received, CRLF included, so a test can check their form too."""

from __future__ import annotations

import re
import socket
from types import TracebackType

# An SMTP reply line: a 2xx-5xx code, a space or a hyphen, text, CRLF (RFC 5321 4.2).
REPLY_LINE = re.compile(rb"^[2-5]\d\d[ -][^\r\n]*\r\n\Z")
# What a reply must never show a client: Python's exception names and tracebacks.
PYTHON_ERROR = re.compile(rb"Traceback|Error: \(|[A-Z][a-z]+(Error|Exception)\b")


def well_formed(line: bytes) -> bool:
    """A reply line whose text is printable UTF-8 and tells nothing of the server's insides."""
    if not REPLY_LINE.match(line) or PYTHON_ERROR.search(line):
        return False
    try:
        text = line[4:-2].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return text.isprintable()


class Wire:
    def __init__(self, port: int, *, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")
        self.lines: list[bytes] = []  # every reply line received, in order

    def __enter__(self) -> Wire:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def line(self) -> bytes:
        """One reply line (b"" once the server has closed the connection)."""
        received = self.reader.readline()
        if received:
            self.lines.append(received)
        return received

    def reply(self) -> list[bytes]:
        """One whole reply: its lines up to the last (no hyphen after the code); [] on close."""
        lines: list[bytes] = []
        while True:
            received = self.line()
            if not received:
                return lines
            lines.append(received)
            if received[3:4] != b"-":
                return lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: bytes) -> bytes:
        """Send one command line; the last line of its reply (b"" if the server closed)."""
        self.send(line + b"\r\n")
        reply = self.reply()
        return reply[-1] if reply else b""

    def greeting(self) -> bytes:
        return self.reply()[-1]

    def transaction(self, sender: bytes = b"<a@outside.test>", *rcpts: bytes) -> bytes:
        """EHLO, MAIL, RCPT (alice by default), DATA: the reply to DATA."""
        assert self.greeting().startswith(b"220")
        assert self.command(b"EHLO client.test").startswith(b"250")
        return self.envelope(sender, *rcpts)

    def envelope(self, sender: bytes = b"<a@outside.test>", *rcpts: bytes) -> bytes:
        """MAIL, RCPT (alice by default), DATA in a session already greeted."""
        assert self.command(b"MAIL FROM:" + sender).startswith(b"250")
        for rcpt in rcpts or (b"<alice@smtpadmin.test>",):
            assert self.command(b"RCPT TO:" + rcpt).startswith(b"250")
        return self.command(b"DATA")

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        data = self.reader.read()
        return bytes(data)
