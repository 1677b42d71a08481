"""How routing and the relay's configuration pass scale with the size of the configuration.

    .venv/bin/python bench/config_scale.py [--levels 10,1000,10000] [--mailboxes 100000]
        [--virtual-servers 1000] [--database-url postgres://postgres@127.0.0.1:5432/NAME]

One organization grows in steps to each number of connectors in ``--levels`` (each connector
with an address space, some with smart hosts, all bridged on the relay's one virtual server),
with ``--mailboxes`` mailboxes over a few authoritative domains and ``--virtual-servers``
virtual servers spread over other servers. At each step it measures, over a mix of
recipients (connector domains, wildcard sub-domains, local and unknown mailboxes, outside
domains):

* the routing function: ``resolve`` over the snapshot the relay keeps (median and p95);
* the routing API: ``GET /api/v1/routing/resolve`` through Django's test client;
* the relay's configuration pass: ``relay.smtp.loader.load`` with its previous result, as the
  supervisor calls it every second when nothing changed.

Each is also printed as a ratio to the first (smallest) step, which is what to compare between
machines. The database is SQLite in a temporary folder, or with a PostgreSQL URL the database
it names, created for the run (dropped first if left over) and dropped at the end.

``fill`` is the part other benchmarks import: run inside a configured Django, it grows the
configuration to the given totals in bulk through the ORM.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from servers.models import VirtualServer

ROOT = Path(__file__).resolve().parent.parent

CONNECTOR_PREFIX = "scale-"
SERVER_PREFIX = "scale-node-"
VIRTUAL_SERVERS_PER_SERVER = 10
FIRST_PORT = 3000  # the other servers' listeners; they never run here
LOCAL_DOMAINS = tuple(f"scale{n}.test" for n in range(4))
SMART_HOST = "[127.0.0.1]"
BATCH = 2000


# --- filling the database ----------------------------------------------------------------


def connector_pattern(number: int) -> str:
    """Connector ``number``'s address space: an exact domain or a wildcard, alternately."""
    return f"c{number}.scale.test" if number % 2 == 0 else f"*.c{number}.scale.test"


def connector_recipient(number: int) -> str:
    """A recipient that connector ``number``'s address space covers."""
    pattern = connector_pattern(number)
    return f"user@{pattern}" if number % 2 == 0 else f"user@host.{pattern[2:]}"


def mailbox_address(number: int) -> str:
    return f"user{number}@{LOCAL_DOMAINS[number % len(LOCAL_DOMAINS)]}"


def fill(
    connectors: int,
    mailboxes: int,
    virtual_servers: int,
    *,
    bridgehead: VirtualServer | None = None,
) -> None:
    """Grow the configuration to at least ``connectors`` scale connectors, ``mailboxes``
    mailboxes in the authoritative domains scale0.test .. scale3.test, and ``virtual_servers``
    virtual servers in all (the new ones on other servers, ten a server, never started).

    Every new connector has one address space (``connector_pattern``), is bridged on
    ``bridgehead`` (default: the first virtual server, created with its server when there is
    none) and every third forwards to a smart host. Bulk inserts, no audit records; calling it
    again with larger numbers adds only the difference."""
    bridgehead = bridgehead or _first_virtual_server()
    _fill_virtual_servers(virtual_servers)
    _fill_mailboxes(mailboxes)
    _fill_connectors(connectors, bridgehead)


def _first_virtual_server() -> VirtualServer:
    from servers.models import RoutingGroup, Server, VirtualServer

    vs = VirtualServer.objects.select_related("server").order_by("pk").first()
    if vs is not None:
        return vs
    server, _ = Server.objects.get_or_create(
        name="scale", defaults={"routing_group": RoutingGroup.first()}
    )
    return VirtualServer.objects.create(server=server, name="Scale", port=2525)


def _fill_virtual_servers(total: int) -> None:
    from servers.models import RoutingGroup, Server, VirtualServer

    missing = total - VirtualServer.objects.count()
    if missing <= 0:
        return
    group = RoutingGroup.first()
    start = VirtualServer.objects.filter(server__name__startswith=SERVER_PREFIX).count()
    numbers = range(start, start + missing)
    servers_needed = {n // VIRTUAL_SERVERS_PER_SERVER for n in numbers}
    existing = {
        s.name: s for s in Server.objects.filter(name__startswith=SERVER_PREFIX).order_by("pk")
    }
    Server.objects.bulk_create(
        Server(name=f"{SERVER_PREFIX}{n}", routing_group=group)
        for n in sorted(servers_needed)
        if f"{SERVER_PREFIX}{n}" not in existing
    )
    servers = {s.name: s for s in Server.objects.filter(name__startswith=SERVER_PREFIX)}
    VirtualServer.objects.bulk_create(
        (
            VirtualServer(
                server=servers[f"{SERVER_PREFIX}{n // VIRTUAL_SERVERS_PER_SERVER}"],
                name=f"Scale {n}",
                port=FIRST_PORT + n % VIRTUAL_SERVERS_PER_SERVER,
            )
            for n in numbers
        ),
        batch_size=BATCH,
    )


def _fill_mailboxes(total: int) -> None:
    from servers.models import AcceptedDomain, Mailbox

    domains = {}
    for name in LOCAL_DOMAINS:
        domains[name], _ = AcceptedDomain.objects.get_or_create(
            domain=name, defaults={"type": AcceptedDomain.Type.AUTHORITATIVE}
        )
    start = Mailbox.objects.filter(address__startswith="user").count()
    Mailbox.objects.bulk_create(
        (
            Mailbox(address=mailbox_address(n), domain=domains[mailbox_address(n).split("@")[1]])
            for n in range(start, total)
        ),
        batch_size=BATCH,
    )


def _fill_connectors(total: int, bridgehead: VirtualServer) -> None:
    from connectors.models import AddressSpace, Connector
    from servers.models import RoutingGroup

    start = Connector.objects.filter(name__startswith=CONNECTOR_PREFIX).count()
    if total <= start:
        return
    group = RoutingGroup.first()
    created = Connector.objects.bulk_create(
        (
            Connector(
                name=f"{CONNECTOR_PREFIX}{n:06d}",
                routing_group=group,
                use_dns=n % 3 != 0,
                smart_hosts="" if n % 3 else SMART_HOST,
            )
            for n in range(start, total)
        ),
        batch_size=BATCH,
    )
    if any(c.pk is None for c in created):  # a database that does not return new keys
        created = list(
            Connector.objects.filter(name__startswith=CONNECTOR_PREFIX).order_by("name")[start:]
        )
    AddressSpace.objects.bulk_create(
        (
            AddressSpace(connector=c, domain=connector_pattern(n), cost=1 + n % 5)
            for n, c in enumerate(created, start)
        ),
        batch_size=BATCH,
    )
    through = Connector.bridgeheads.through
    through.objects.bulk_create(
        (through(connector_id=c.pk, virtualserver_id=bridgehead.pk) for c in created),
        batch_size=BATCH,
    )


# --- measuring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    median: float  # seconds
    p95: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        ordered = sorted(samples)
        return cls(
            statistics.median(ordered), ordered[min(len(ordered) - 1, len(ordered) * 95 // 100)]
        )


def timed(call: Callable[[int], object], *, count: int, budget: float) -> Timing:
    """``count`` timed calls (fewer when they take longer than ``budget`` seconds in all)."""
    samples: list[float] = []
    spent = 0.0
    for n in range(count):
        started = time.perf_counter()
        call(n)
        samples.append(time.perf_counter() - started)
        spent += samples[-1]
        if spent > budget and len(samples) >= 3:
            break
    return Timing.of(samples)


def recipient_mix(connectors: int, mailboxes: int) -> list[str]:
    """Connector domains and wildcard sub-domains across the whole range, local and unknown
    mailboxes, and outside domains that only the catch-all connector covers."""
    mix: list[str] = []
    for n in range(100):
        kind = n % 5
        if kind in (0, 1):
            mix.append(connector_recipient((n * 7919) % max(connectors, 1)))
        elif kind == 2 and mailboxes:
            mix.append(mailbox_address((n * 104729) % mailboxes))
        elif kind == 3:
            mix.append(f"nobody{n}@{LOCAL_DOMAINS[n % len(LOCAL_DOMAINS)]}")
        else:
            mix.append(f"someone@outside{n}.example")
    return mix


@dataclass(frozen=True)
class Step:
    connectors: int
    routing: Timing
    api: Timing
    loader: Timing


def measure_step(
    connectors: int, mailboxes: int, vs: VirtualServer, token: str, *, scale: float = 1.0
) -> Step:
    """``scale`` shrinks the number of samples (a quick run to check that it works)."""
    from django.test import Client
    from django.utils import timezone

    from connectors.routing import resolve
    from connectors.snapshot import MessageFacts
    from relay.smtp.loader import load
    from servers.models import Server

    mix = recipient_mix(connectors, mailboxes)
    # The relay's server is up, as its heartbeat keeps it (bridgeheads are on it).
    Server.objects.filter(pk=vs.server_id).update(last_seen=timezone.now())
    previous = load(vs.server_id)  # the supervisor's first pass
    topology = previous.topologies[vs.pk]
    sender = "bench@sender.test"

    def route(n: int) -> None:
        resolve(mix[n % len(mix)], sender, MessageFacts(spread_key=n), topology)

    routing = timed(route, count=int(3000 * scale) + 3, budget=10.0 * scale)

    client = Client(HTTP_AUTHORIZATION=f"Token {token}")

    def ask(n: int) -> None:
        answer = client.get(
            "/api/v1/routing/resolve", {"recipient": mix[n % len(mix)], "sender": sender}
        )
        assert answer.status_code == 200, answer.content

    ask(0)  # a first request may build what later ones reuse, as in a running web process
    api = timed(ask, count=int(100 * scale) + 3, budget=15.0 * scale)

    state = {"previous": previous}

    def loader_pass(_: int) -> None:
        state["previous"] = load(vs.server_id, state["previous"])

    loader = timed(loader_pass, count=int(30 * scale) + 3, budget=15.0 * scale)
    return Step(connectors, routing, api, loader)


def report(steps: Sequence[Step]) -> None:
    base = steps[0]

    def cell(t: Timing, b: Timing, unit: float, name: str) -> str:
        return f"{t.median * unit:9.2f} {t.p95 * unit:9.2f} {name} x{t.median / b.median:6.2f}"

    print(
        "connectors | resolve median p95 (us) ratio | API median p95 (ms) ratio "
        "| loader pass median p95 (ms) ratio"
    )
    for step in steps:
        print(
            f"{step.connectors:10d} | {cell(step.routing, base.routing, 1e6, 'us')} "
            f"| {cell(step.api, base.api, 1e3, 'ms')} | {cell(step.loader, base.loader, 1e3, 'ms')}"
        )
    last = steps[-1]
    print(
        f"ratio to {base.connectors} connectors at {last.connectors}: "
        f"resolve {last.routing.median / base.routing.median:.2f}, "
        f"API {last.api.median / base.api.median:.2f}, "
        f"loader pass {last.loader.median / base.loader.median:.2f}"
    )


# --- the throwaway database and the organization -----------------------------------------


class ScaleDatabase:
    """SQLite in ``folder``, or the PostgreSQL database named by ``url`` (created, dropped)."""

    def __init__(self, url: str, folder: Path) -> None:
        self.admin_url = ""
        self.name = ""
        if url.startswith(("postgres://", "postgresql://", "pgsql://")):
            parts = urlsplit(url)
            self.name = parts.path.lstrip("/")
            if not self.name or self.name == "postgres" or self.name.startswith("template"):
                raise SystemExit("give a PostgreSQL URL naming a database to create and drop")
            self.admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
            self.url = url
            self.description = f"PostgreSQL, database {self.name}"
        else:
            path = folder / "config_scale.sqlite3"
            self.url = f"sqlite:///{path}"
            self.description = f"SQLite, {path}"

    def _admin(self, statement: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(sql.SQL(statement).format(sql.Identifier(self.name)))

    def create(self) -> None:
        if self.admin_url:
            self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            self._admin("CREATE DATABASE {}")

    def drop(self) -> None:
        if self.admin_url:
            self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def setup_django(database: ScaleDatabase, folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "smtpadmin.settings"
    os.environ["DATABASE_URL"] = database.url
    os.environ["SMTPADMIN_VAR_DIR"] = str(folder / "var")
    os.environ["SECRET_KEY"] = secrets.token_urlsafe(40)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Liveness is not measured here: the relay's server stays up between heartbeats.
    os.environ["SMTPADMIN_HEARTBEAT_TIMEOUT"] = "86400"
    import django
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    django.setup()
    setup_test_environment()  # the test client's host name
    (folder / "var" / "staticfiles").mkdir(parents=True, exist_ok=True)
    call_command("migrate", verbosity=0, interactive=False)


def build_organization() -> tuple[VirtualServer, str]:
    """The relay's server (up, by its heartbeat) with one virtual server, a catch-all
    connector by DNS, and an API token of a superuser."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from connectors.models import AddressSpace, Connector
    from servers.models import RoutingGroup, Server, VirtualServer

    group = RoutingGroup.first()
    server = Server.objects.create(name="relay", routing_group=group, last_seen=timezone.now())
    vs = VirtualServer.objects.create(server=server, name="Relay", port=2525)
    internet = Connector.objects.create(name="Internet", routing_group=group)
    internet.bridgeheads.set([vs])
    AddressSpace.objects.create(connector=internet, domain="*", cost=10)
    user = get_user_model().objects.create_superuser("bench", password=secrets.token_urlsafe())
    token = Token.objects.create(user=user)
    return VirtualServer.objects.select_related("server").get(pk=vs.pk), token.key


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="10,1000,10000", help="numbers of connectors")
    parser.add_argument("--mailboxes", type=int, default=100_000)
    parser.add_argument("--virtual-servers", type=int, default=1000)
    parser.add_argument(
        "--quick", action="store_true", help="a few samples only: checks that it runs"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", ""),
        help="a PostgreSQL URL naming the database to create for the run (default: "
        "$DATABASE_URL; SQLite in a temporary folder when not PostgreSQL)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    levels = sorted(int(level) for level in args.levels.split(","))
    with tempfile.TemporaryDirectory(prefix="config-scale-") as folder:
        database = ScaleDatabase(args.database_url, Path(folder))
        database.create()
        try:
            setup_django(database, Path(folder))
            print(f"database: {database.description}")
            vs, token = build_organization()
            steps = []
            for level in levels:
                started = time.perf_counter()
                fill(level, args.mailboxes, args.virtual_servers, bridgehead=vs)
                print(
                    f"filled {level} connectors, {args.mailboxes} mailboxes, "
                    f"{args.virtual_servers} virtual servers in "
                    f"{time.perf_counter() - started:.1f} s",
                    flush=True,
                )
                steps.append(
                    measure_step(
                        level, args.mailboxes, vs, token, scale=0.01 if args.quick else 1.0
                    )
                )
            report(steps)
        finally:
            from django.db import connections

            connections.close_all()
            database.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
