"""How fast the relay takes mail in, against the cost of SMTP itself, measured in one run.

    .venv/bin/python bench/relay_intake.py [--messages N] [--clients C] [--recipients R]

Two servers on free loopback ports get the same load: C client processes (smtplib) send N
messages in all, R recipients each, reconnecting every few messages as the relay's
messages-per-connection limit asks. The reference is a bare aiosmtpd server whose handler
accepts everything and does nothing; the relay is the real worker (``Supervisor`` on its own
event loop in a thread, as the end-to-end tests run it) with intake into a throwaway database:
SQLite in a temporary folder, or, when DATABASE_URL names a PostgreSQL server, a database
``smtpadmin_bench`` created on that server for the run and dropped afterwards (no other
database is touched). The recipients mix local mailboxes (queued for local delivery, which the
relay then does in the background), a domain behind a connector and an outside domain this
client may relay to (DNS queue); nothing is delivered to the outside.

It prints messages per second for both, the ratio relay/reference, and the p50 / p95 latency
of the reply to the end of DATA (the relay answers only once the message is committed). The
numbers depend on the machine; the ratio is what to compare between runs. Exit status 0 when
every message was answered 250 and stored, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import secrets
import shutil
import smtplib
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from relay.smtp.supervisor import Supervisor
    from servers.models import VirtualServer

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATABASE = "smtpadmin_bench"

LOCAL_DOMAIN = "bench.test"  # authoritative, with mailboxes: local delivery
PARTNER_DOMAIN = "partner.test"  # internal relay behind a connector: a connector queue
OUTSIDE_DOMAIN = "outside.test"  # not ours; the client is on the relay list: a DNS queue
MAILBOXES = 100
MEASURED_SENDER = "bench@sender.test"
WARMUP_SENDER = "warmup@sender.test"
WARMUP_PER_CLIENT = 2
START_DELAY = 0.3  # seconds between handing out the work and the clients starting together
BODY_LINES = 24  # about 1.7 KB of body


# --- the clients (separate processes: they must not share the relay's interpreter) ----------


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: tuple[str, ...]
    data: bytes  # CRLF lines, dot-stuffed, ending with CRLF; the final dot is added when sent


@dataclass(frozen=True)
class ClientJob:
    port: int
    mails: tuple[Mail, ...]
    per_connection: int
    start_at: float  # time.time() at which every client of a round starts


@dataclass
class ClientResult:
    started: float = 0.0
    finished: float = 0.0
    latencies: list[float] = field(default_factory=list)  # end of DATA -> its reply, seconds
    failures: list[str] = field(default_factory=list)


def run_client(job: ClientJob) -> ClientResult:
    """Send the job's mails over as many connections as ``per_connection`` asks."""
    result = ClientResult()
    delay = job.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    result.started = time.time()
    client: smtplib.SMTP | None = None
    sent = 0
    try:
        for mail in job.mails:
            if client is None or sent >= job.per_connection:
                if client is not None:
                    client.quit()
                client = _connect(job.port)
                sent = 0
            latency, failure = _send(client, mail)
            sent += 1
            if failure:
                result.failures.append(failure)
            else:
                result.latencies.append(latency)
        if client is not None:
            client.quit()
    except (OSError, smtplib.SMTPException) as error:
        result.failures.append(f"connection: {error!r}")
    result.finished = time.time()
    return result


def _connect(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, local_hostname="client.bench.test", timeout=60)
    if client.sock is not None:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    code, reply = client.ehlo()
    if code != 250:
        raise smtplib.SMTPException(f"EHLO: {code} {reply!r}")
    return client


def _send(client: smtplib.SMTP, mail: Mail) -> tuple[float, str]:
    """One transaction; (latency of the reply to the end of DATA, "") or (0, what failed)."""
    code, reply = client.mail(mail.sender)
    if code != 250:
        client.rset()
        return 0.0, f"MAIL: {code} {reply!r}"
    for recipient in mail.recipients:
        code, reply = client.rcpt(recipient)
        if code not in (250, 251):
            client.rset()
            return 0.0, f"RCPT {recipient}: {code} {reply!r}"
    code, reply = client.docmd("DATA")
    if code != 354:
        client.rset()
        return 0.0, f"DATA: {code} {reply!r}"
    started = time.perf_counter()
    client.send(mail.data + b".\r\n")
    code, reply = client.getreply()
    latency = time.perf_counter() - started
    if code != 250:
        return 0.0, f"end of DATA: {code} {reply!r}"
    return latency, ""


# --- the load ------------------------------------------------------------------------------


def recipients_of(index: int, count: int) -> tuple[str, ...]:
    """Recipients of message ``index``: local mailboxes, the partner domain and the outside,
    in turn (so each kind gets a third of all recipients, whatever ``count`` is)."""
    addresses = []
    for k in range(count):
        n = index * count + k
        kind = n % 3
        if kind == 0:
            addresses.append(f"user{n % MAILBOXES}@{LOCAL_DOMAIN}")
        elif kind == 1:
            addresses.append(f"r{index}-{k}@{PARTNER_DOMAIN}")
        else:
            addresses.append(f"r{index}-{k}@{OUTSIDE_DOMAIN}")
    return tuple(addresses)


def make_mail(index: int, recipients: int, sender: str) -> Mail:
    to = recipients_of(index, recipients)
    headers = [
        f"From: Bench <{sender}>",
        f"To: {', '.join(to[:3])}{', ...' if len(to) > 3 else ''}",
        f"Subject: bench message {index}",
        "Date: Thu, 01 Jan 2026 00:00:00 +0000",
        f"Message-ID: <bench.{index}.{secrets.token_hex(6)}@sender.test>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
    ]
    body = [
        f"Line {n:02d} of message {index}: " + "lorem ipsum dolor sit amet " * 2
        for n in range(BODY_LINES)
    ]
    text = "\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(body) + "\r\n"
    return Mail(sender=sender, recipients=to, data=text.encode("ascii"))


def split(mails: Sequence[Mail], clients: int) -> list[tuple[Mail, ...]]:
    return [tuple(mails[i::clients]) for i in range(clients) if mails[i::clients]]


@dataclass
class Round:
    name: str
    messages: int
    seconds: float
    latencies: list[float]
    failures: list[str]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else math.inf

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the DATA reply latency, in milliseconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1] * 1000


def run_round(
    pool: ProcessPoolExecutor,
    name: str,
    port: int,
    mails: Sequence[Mail],
    clients: int,
    per_connection: int,
) -> Round:
    start_at = time.time() + START_DELAY
    jobs = [ClientJob(port, part, per_connection, start_at) for part in split(mails, clients)]
    results = list(pool.map(run_client, jobs))
    started = min(r.started for r in results)
    finished = max(r.finished for r in results)
    return Round(
        name=name,
        messages=len(mails),
        seconds=finished - started,
        latencies=[x for r in results for x in r.latencies],
        failures=[x for r in results for x in r.failures],
    )


def measure(
    pool: ProcessPoolExecutor, name: str, port: int, args: argparse.Namespace, per_connection: int
) -> Round:
    """A short warm-up (connections, threads, caches), then the measured round."""
    warmup = [
        make_mail(i, args.recipients, WARMUP_SENDER)
        for i in range(WARMUP_PER_CLIENT * args.clients)
    ]
    warm = run_round(pool, name, port, warmup, args.clients, per_connection)
    if warm.failures:
        print(f"{name}: warm-up failed: {warm.failures[0]}", file=sys.stderr)
    mails = [make_mail(i, args.recipients, MEASURED_SENDER) for i in range(args.messages)]
    return run_round(pool, name, port, mails, args.clients, per_connection)


# --- the reference: SMTP and nothing else ----------------------------------------------------


class NullHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK"


@contextlib.contextmanager
def reference_server() -> Iterator[int]:
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(NullHandler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


# --- the relay --------------------------------------------------------------------------------


class RelayThread:
    """The relay worker without the process (as tests/relay/harness.py runs it)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.supervisor: Supervisor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="relay-bench", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:
            self.error = error
            self.ready.set()

    async def _serve(self) -> None:
        from relay.smtp.supervisor import Supervisor

        self.loop = asyncio.get_running_loop()
        self.supervisor = Supervisor(self.server, interval=1.0, heartbeat_interval=5.0, grace=30.0)
        waiter = asyncio.ensure_future(self.supervisor.started.wait())
        runner = asyncio.ensure_future(self.supervisor.run())
        await waiter
        self.ready.set()
        await runner

    def start(self) -> RelayThread:
        self.thread.start()
        if not self.ready.wait(30) or self.error is not None:
            raise RuntimeError(f"the relay did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        """Stop; the supervisor waits for background work (local deliveries) first."""
        if self.loop is not None and self.supervisor is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.supervisor.stop)
        self.thread.join(60)
        if self.thread.is_alive():
            raise RuntimeError("the relay did not stop")
        if self.error is not None:
            raise RuntimeError(f"the relay failed: {self.error!r}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.02)


# --- the throwaway database -----------------------------------------------------------------


class BenchDatabase:
    """SQLite in ``folder``, or ``smtpadmin_bench`` on the PostgreSQL server of ``url``."""

    def __init__(self, url: str, folder: Path) -> None:
        self.admin_url = ""
        if url.startswith(("postgres://", "postgresql://", "pgsql://")):
            parts = urlsplit(url)
            if parts.path.lstrip("/") == BENCH_DATABASE:
                raise SystemExit(
                    f"DATABASE_URL names {BENCH_DATABASE} itself; give the URL of another database "
                    "on that server (e.g. /postgres) to create and drop it from"
                )
            self.admin_url = urlunsplit(parts._replace(scheme="postgresql"))
            self.url = urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}"))
            where = parts.hostname or "localhost"
            self.description = (
                f"PostgreSQL, database {BENCH_DATABASE} on {where}:{parts.port or 5432}"
            )
        else:
            if url:
                print(
                    f"note: DATABASE_URL {url.split(':', 1)[0]}:... is not PostgreSQL; "
                    "using a temporary SQLite file"
                )
            path = folder / "bench.sqlite3"
            self.url = f"sqlite:///{path}"
            self.description = f"SQLite, {path}"

    def _admin(self, statement: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(sql.SQL(statement).format(sql.Identifier(BENCH_DATABASE)))

    def create(self) -> None:
        if self.admin_url:
            # A leftover of an interrupted run goes; one still in use by a running bench makes
            # this fail rather than disturb it.
            self._admin("DROP DATABASE IF EXISTS {}")
            self._admin("CREATE DATABASE {}")

    def drop(self) -> None:
        if self.admin_url:
            # Our own connections only (the relay's worker threads may leave some behind).
            self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def setup_django(database: BenchDatabase, folder: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "smtpadmin.settings"
    os.environ["DATABASE_URL"] = database.url
    os.environ["SMTPADMIN_VAR_DIR"] = str(folder / "var")
    os.environ["SECRET_KEY"] = secrets.token_urlsafe(40)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command

    django.setup()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0, interactive=False)


def build_organization(folder: Path) -> tuple[Any, VirtualServer]:
    """A server with one virtual server on a free loopback port (this client on its relay
    list), an authoritative domain with mailboxes and a partner domain behind a connector."""
    from connectors.models import AddressSpace, Connector
    from servers.models import AcceptedDomain, Mailbox, RoutingGroup, Server, VirtualServer

    group = RoutingGroup.first()
    server = Server(name="bench", fqdn="bench-node.test", routing_group=group)
    server.drop_directory = str(folder / "maildrop")
    server.full_clean()
    server.save()
    vs = VirtualServer(
        server=server,
        name="Bench",
        ip_address="127.0.0.1",
        port=free_port(),
        fqdn="mx.bench.test",
        relay_list=["127.0.0.1"],
    )
    vs.full_clean()
    vs.save()
    AcceptedDomain.objects.create(domain=LOCAL_DOMAIN, is_default=True)
    AcceptedDomain.objects.create(domain=PARTNER_DOMAIN, type=AcceptedDomain.Type.INTERNAL_RELAY)
    for n in range(MAILBOXES):
        box = Mailbox(address=f"user{n}@{LOCAL_DOMAIN}")
        box.full_clean()
        box.save()
    connector = Connector(
        name="Partner link", routing_group=group, use_dns=False, smart_hosts="[127.0.0.1]"
    )
    connector.full_clean()
    connector.save()
    connector.bridgeheads.set([vs])
    AddressSpace.objects.create(connector=connector, domain=PARTNER_DOMAIN, cost=1)
    return server, vs


def messages_per_connection(vs: VirtualServer, recipients: int) -> int:
    """What a well-behaved client does: stay within the virtual server's messages per
    connection and within the session's command burst (beyond it the relay slows a client
    down on purpose, which would measure the throttle, not intake)."""
    from relay.smtp.protocol import COMMAND_BURST

    limit = vs.messages_per_connection or 1_000_000
    commands = recipients + 2  # MAIL, RCPT x R, DATA
    return max(1, min(limit, (COMMAND_BURST - 10) // commands))


def stored_counts() -> tuple[int, int, dict[str, int]]:
    from django.db.models import Count

    from relay.models import Message, QueueEntry

    total = Message.objects.count()
    measured = Message.objects.filter(sender=MEASURED_SENDER).count()
    kinds = dict(
        QueueEntry.objects.filter(message__sender=MEASURED_SENDER)
        .values_list("queue__kind")
        .annotate(n=Count("id"))
        .values_list("queue__kind", "n")
    )
    return total, measured, kinds


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=500, help="messages in all (default 500)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument(
        "--recipients", type=int, default=3, help="recipients per message (default 3)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", ""),
        help="a PostgreSQL server to create the bench database on (default: $DATABASE_URL; "
        "none: SQLite in a temporary folder)",
    )
    args = parser.parse_args(argv)
    for name in ("messages", "clients", "recipients"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def report(reference: Round, relay: Round) -> None:
    def line(label: str, r: Round) -> str:
        return (
            f"{label:<11} {r.rate:9.1f} msg/s  ({r.messages} in {r.seconds:.2f} s)   "
            f"DATA reply p50 {r.percentile(50):7.2f} ms  p95 {r.percentile(95):7.2f} ms"
        )

    print(line("reference", reference))
    print(line("relay", relay))
    print(
        f"ratio relay/reference: {relay.rate / reference.rate:.3f} (messages/s); "
        f"DATA reply p50 x{relay.percentile(50) / reference.percentile(50):.1f}, "
        f"p95 x{relay.percentile(95) / reference.percentile(95):.1f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    folder = Path(tempfile.mkdtemp(prefix="smtpadmin-bench-"))
    database = BenchDatabase(args.database_url, folder)
    # Client processes are started before any thread: spawn, never fork a threaded process.
    pool = ProcessPoolExecutor(
        max_workers=args.clients, mp_context=multiprocessing.get_context("spawn")
    )
    created = False
    try:
        database.create()
        created = True
        setup_django(database, folder)
        server, vs = build_organization(folder)
        per_connection = messages_per_connection(vs, args.recipients)
        print(
            f"smtpadmin relay intake: {args.messages} messages, {args.clients} clients, "
            f"{args.recipients} recipient(s) each, {per_connection} messages per connection; "
            f"{database.description}"
        )
        with reference_server() as port:
            reference = measure(pool, "reference", port, args, per_connection)
        relay_thread = RelayThread(server).start()
        try:
            wait_listening(vs.port)
            relay = measure(pool, "relay", vs.port, args, per_connection)
        finally:
            relay_thread.stop()
        report(reference, relay)
        total, measured, kinds = stored_counts()
        print(
            f"stored: {measured}/{args.messages} measured messages "
            f"(Message rows in total: {total}, the others from the warm-up)"
        )
        print(
            "queue entries of the measured messages: "
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        )
        failures = reference.failures + relay.failures
        for failure in failures[:5]:
            print(f"failed: {failure}", file=sys.stderr)
        if failures or measured != args.messages:
            print(
                f"{len(failures)} message(s) refused, {args.messages - measured} not stored",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        pool.shutdown()
        if created:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            database.drop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
