"""The ledger: SMTP clients that send uniquely numbered messages and write down every reply
they got, and the census that counts what arrived at the sinks and in the Maildirs.

A message is numbered in a header (``X-Ledger: <n>``) and in its subject. A client retries a
message that got 4xx, or no reply at all, later (as a real client does); a message that got
250 is never sent again. Whatever the relay answered 250 must arrive at least once (delivered
or as an NDR); copies beyond the first are duplicates, which only messages in flight at the
fault may have.
"""

from __future__ import annotations

import re
import smtplib
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.ledger.setup_world import LOCAL, SENDER
from tests.sinks import Sink

LEDGER = re.compile(rb"^X-Ledger: (\d+)\r?$", re.MULTILINE)
RETRY_AFTER = 0.5  # seconds before a client tries a deferred message again
LOCAL_EVERY = 5  # every fifth message goes to the local mailbox, the others to the sink
FIGURES: list[str] = []  # one line per fault run, printed at the end of the session


def recipient(n: int) -> str:
    return LOCAL if n % LOCAL_EVERY == 0 else f"r{n}@elsewhere.test"


def ledger_message(n: int) -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {recipient(n)}\r\nSubject: ledger {n}\r\nX-Ledger: {n}\r\n"
        f"\r\nMessage number {n} of the ledger.\r\n"
    ).encode()


@dataclass
class Ledger:
    """What the clients were told, per message number."""

    sent: set[int] = field(default_factory=set)
    accepted: Counter[int] = field(default_factory=Counter)  # 250 at the end of DATA
    deferred: Counter[int] = field(default_factory=Counter)  # 4xx (any command)
    unanswered: Counter[int] = field(default_factory=Counter)  # the DATA reply never came
    rejected: dict[int, str] = field(default_factory=dict)  # 5xx: must not happen
    replies: Counter[str] = field(default_factory=Counter)  # the 4xx replies, for the report
    lock: threading.Lock = field(default_factory=threading.Lock)


class LedgerClients:
    """``threads`` SMTP clients (AUTH as the ledger credential) sharing the numbers to send."""

    def __init__(self, port: int, password: str, numbers: Iterable[int], threads: int = 4):
        self.port = port
        self.password = password
        self.ledger = Ledger()
        self.todo: deque[tuple[float, int]] = deque((0.0, n) for n in numbers)
        self.ledger.sent.update(n for _, n in self.todo)
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, name=f"ledger-client-{i}", daemon=True)
            for i in range(threads)
        ]

    # -- control ---------------------------------------------------------------------------

    def start(self) -> LedgerClients:
        for thread in self.threads:
            thread.start()
        return self

    def accepted_count(self) -> int:
        with self.ledger.lock:
            return len(self.ledger.accepted)

    def wait_accepted(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.accepted_count() < count:
            if time.monotonic() > deadline or not self.running():
                return False
            time.sleep(0.02)
        return True

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def finish(self, timeout: float) -> bool:
        """Wait until every message was answered 250 (True), or stop trying at ``timeout``."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)
        return len(self.ledger.accepted) == len(self.ledger.sent)

    # -- one client -----------------------------------------------------------------------

    def _next(self) -> int | None:
        """The next number due, None when nothing is left; waits while all are retried later."""
        while not self.stopping.is_set():
            with self.ledger.lock:
                if not self.todo:
                    return None
                ready_at, n = self.todo.popleft()
                if ready_at <= time.monotonic():
                    return n
                self.todo.append((ready_at, n))
            time.sleep(0.02)
        return None

    def _later(self, n: int) -> None:
        with self.ledger.lock:
            self.todo.append((time.monotonic() + RETRY_AFTER, n))

    def _connect(self, n: int) -> smtplib.SMTP | None:
        """A logged-in session to send ``n`` over; a 4xx on the way (AUTH while the database
        is away) is that message deferred."""
        client = None
        try:
            client = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=30)
            client.ehlo()
            client.login("ledger", self.password)
            return client
        except (OSError, smtplib.SMTPException) as error:
            code = getattr(error, "smtp_code", 0)
            if 400 <= code < 500:
                with self.ledger.lock:
                    self.ledger.deferred[n] += 1
                    text = error.smtp_error  # type: ignore[attr-defined]
                    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
                    self.ledger.replies[f"{code} {text}"[:80]] += 1
            if client is not None:
                client.close()
            time.sleep(RETRY_AFTER)
            return None

    def _client(self) -> None:
        client: smtplib.SMTP | None = None
        while (n := self._next()) is not None:
            if client is None:
                client = self._connect(n)
                if client is None:
                    self._later(n)
                    continue
            client = self._send(client, n)
        if client is not None:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()

    def _send(self, client: smtplib.SMTP, n: int) -> smtplib.SMTP | None:
        """One transaction; the connection to go on with (None: reconnect)."""
        ledger = self.ledger
        in_data = False
        reply: bytes | str
        try:
            code, reply = client.mail(SENDER)
            if code == 250:
                code, reply = client.rcpt(recipient(n))
            if code == 250:
                in_data = True
                code, reply = client.data(ledger_message(n))
        except smtplib.SMTPDataError as error:  # DATA itself refused (not the final dot)
            code, reply, in_data = error.smtp_code, error.smtp_error, False
        except (OSError, smtplib.SMTPException):
            with ledger.lock:
                if in_data:
                    ledger.unanswered[n] += 1
            self._later(n)
            client.close()
            return None
        with ledger.lock:
            if code == 250 and in_data:
                ledger.accepted[n] += 1
                return client
            if 400 <= code < 500:
                ledger.deferred[n] += 1
                text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
                ledger.replies[f"{code} {text}"[:80]] += 1
            else:
                ledger.rejected[n] = f"{code} {reply!r}"
        if 400 <= code < 500:
            self._later(n)
        if code == 421:
            client.close()
            return None
        try:
            client.rset()
            return client
        except (OSError, smtplib.SMTPException):
            client.close()
            return None


# -- the census ----------------------------------------------------------------------------


@dataclass
class Census:
    delivered: Counter[int] = field(default_factory=Counter)  # copies at a sink or Maildir
    ndrs: Counter[int] = field(default_factory=Counter)  # non-delivery reports naming it

    def arrived(self) -> set[int]:
        return set(self.delivered) | set(self.ndrs)

    def duplicates(self) -> int:
        copies = self.delivered + self.ndrs
        return sum(count - 1 for count in copies.values() if count > 1)


def take_census(sinks: Iterable[Sink], drop: Path) -> Census:
    census = Census()
    for sink in sinks:
        for received in list(sink.messages):
            _count(census, received.content, ndr=received.mail_from in ("", "<>"))
    for path in drop.glob("*/*/new/*"):
        content = path.read_bytes()
        _count(census, content, ndr=content.startswith(b"Return-Path: <>"))
    return census


def _count(census: Census, content: bytes, *, ndr: bool) -> None:
    numbers = {int(found) for found in LEDGER.findall(content)}
    for n in numbers:
        (census.ndrs if ndr else census.delivered)[n] += 1


@dataclass
class Figures:
    """One fault's result, as ``make soak`` prints it."""

    fault: str
    sent: int
    accepted: int
    delivered: int
    lost: int
    duplicates: int
    bound: int
    ndrs: int
    unanswered: int
    deferred: int
    seconds: float

    def line(self) -> str:
        return (
            f"ledger {self.fault}: sent={self.sent} accepted={self.accepted} "
            f"delivered={self.delivered} lost={self.lost} duplicates={self.duplicates} "
            f"(bound {self.bound}) ndrs={self.ndrs} unanswered={self.unanswered} "
            f"4xx={self.deferred} in {self.seconds:.0f} s"
        )


def figures(fault: str, ledger: Ledger, census: Census, bound: int, seconds: float) -> Figures:
    accepted = set(ledger.accepted)
    arrived = census.arrived()
    return Figures(
        fault=fault,
        sent=len(ledger.sent),
        accepted=len(accepted),
        delivered=len(accepted & arrived),
        lost=len(accepted - arrived),
        duplicates=census.duplicates(),
        bound=bound,
        ndrs=len(census.ndrs),
        unanswered=sum(ledger.unanswered.values()),
        deferred=sum(ledger.deferred.values()),
        seconds=seconds,
    )
