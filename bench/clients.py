"""Small asyncio SMTP clients for what smtp-source does not measure, run as their own process
so that they share no interpreter with what they measure.

    python -m bench.clients send --port P [--clients C] [--messages M] [--recipients R]
        [--domains D] [--auth USER:PASSWORD] [--source-base N]
    python -m bench.clients idle --port P --sessions S

``send``: C concurrent sessions, each a new connection per message: EHLO, [AUTH PLAIN],
MAIL, RCPT x R (spread over D domains), DATA with a message of the shape smtp-source sends
(-l 4096), QUIT. Prints one JSON line: the wall time, every message's latency from the end of
DATA to its reply and every session's duration (connect to the reply to QUIT).

``idle``: opens S sessions (greeting read, EHLO answered), prints ``{"open": S}``, keeps them
idle until a line arrives on stdin, then closes them."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

BODY_BYTES = 4096  # as smtp-source -l 4096
SENDER = "bench@source.bench.test"
HELO = "client.bench.test"
TIMEOUT = 120.0


class SmtpError(Exception):
    pass


@dataclass
class SendResult:
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # end of DATA -> its reply
    sessions: list[float] = field(default_factory=list)  # connect -> reply to QUIT
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # the first few


def recipients(index: int, count: int, domains: int) -> list[str]:
    """``count`` recipients of message ``index``, spread in turn over ``domains`` domains."""
    return [f"r{index}-{k}@d{k % domains}.sink.bench.test" for k in range(count)]


def message(index: int, to: Sequence[str], size: int = BODY_BYTES) -> bytes:
    """Headers and a body of ``size`` octets in 78-character lines, CRLF, dot-safe, ending
    with the end-of-data line."""
    headers = (
        f"From: <{SENDER}>\r\nTo: <{to[0]}>\r\nSubject: bench {index}\r\n"
        f"Message-Id: <bench.{index}.{time.time_ns()}@source.bench.test>\r\n"
        "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\n"
    )
    line = b"La de da de da " * 5 + b"abc\r\n"  # 80 octets with CRLF, never starts with "."
    body = (line * (size // len(line) + 1))[:size]
    if not body.endswith(b"\r\n"):
        body = body[:-2] + b"\r\n"
    return headers.encode("ascii") + body + b".\r\n"


def auth_plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")


async def reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    """One (possibly multi-line) reply: its code and its last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpError("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), line.decode("ascii", "replace").strip()


async def command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str, expect: int
) -> None:
    writer.write(text.encode("ascii") + b"\r\n")
    code, last = await reply(reader)
    if code != expect:
        raise SmtpError(f"{text.split()[0]}: {last}")


async def one_session(
    port: int, index: int, to: Sequence[str], auth: str, source: str, result: SendResult
) -> None:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0) if source else None
    )
    try:
        code, last = await reply(reader)
        if code != 220:
            raise SmtpError(f"greeting: {last}")
        await command(reader, writer, f"EHLO {HELO}", 250)
        if auth:
            await command(reader, writer, f"AUTH PLAIN {auth}", 235)
        await command(reader, writer, f"MAIL FROM:<{SENDER}>", 250)
        for address in to:
            await command(reader, writer, f"RCPT TO:<{address}>", 250)
        await command(reader, writer, "DATA", 354)
        writer.write(message(index, to))
        data_end = time.perf_counter()
        code, last = await reply(reader)
        latency = time.perf_counter() - data_end
        if code != 250:
            raise SmtpError(f"end of DATA: {last}")
        await command(reader, writer, "QUIT", 221)
        result.latencies.append(latency)
        result.sessions.append(time.perf_counter() - started)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def send(args: argparse.Namespace) -> SendResult:
    result = SendResult()
    auth = auth_plain(*args.auth.split(":", 1)) if args.auth else ""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(args.messages):
        queue.put_nowait(index)

    async def client(number: int) -> None:
        # An own loopback source address per client when asked (127.0.0.N): what many
        # submitting hosts look like; otherwise every session comes from 127.0.0.1.
        source = f"127.0.0.{args.source_base + number}" if args.source_base else ""
        while not queue.empty():
            index = queue.get_nowait()
            to = recipients(index, args.recipients, args.domains)
            try:
                await asyncio.wait_for(
                    one_session(args.port, index, to, auth, source, result), TIMEOUT
                )
            except (OSError, SmtpError, TimeoutError) as error:
                result.failed += 1
                if len(result.failures) < 5:
                    result.failures.append(f"{type(error).__name__}: {error}")

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(args.clients)))
    result.wall = time.perf_counter() - started
    return result


async def idle(args: argparse.Namespace) -> None:
    writers: list[asyncio.StreamWriter] = []
    failures: list[str] = []

    async def open_one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
            code, last = await reply(reader)
            if code != 220:
                raise SmtpError(last)
            await command(reader, writer, f"EHLO {HELO}", 250)
            writers.append(writer)
        except (OSError, SmtpError) as error:
            failures.append(str(error))

    # In batches, as clients arrive: no listen backlog overflow.
    for start in range(0, args.sessions, 50):
        await asyncio.gather(*(open_one() for _ in range(start, min(args.sessions, start + 50))))
    print(json.dumps({"open": len(writers), "failures": failures[:5]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for writer in writers:
        writer.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="bench SMTP clients")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("send")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--clients", type=int, default=10)
    s.add_argument("--messages", type=int, default=100)
    s.add_argument("--recipients", type=int, default=1)
    s.add_argument("--domains", type=int, default=1)
    s.add_argument("--auth", default="", help="USER:PASSWORD for AUTH PLAIN")
    s.add_argument("--source-base", type=int, default=0)
    i = sub.add_parser("idle")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--sessions", type=int, default=1000)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "send":
        result = asyncio.run(send(args))
        print(json.dumps(asdict(result)))
        return 0
    asyncio.run(idle(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
