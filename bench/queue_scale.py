"""How Queue Viewer, the queues and messages API, Find Messages and the sweep scale with the
number of messages queued.

    .venv/bin/python bench/queue_scale.py [--levels 100,100000] [--quick]
        [--database-url postgres://postgres@127.0.0.1:5432/NAME]

The queue grows in steps to each number of messages in ``--levels``, written in bulk with the
rows placement writes (message, queue entry, recipient), spread over many link queues (one per
destination domain, a local delivery queue, the unreachable queue) and over the states a busy
relay holds: due now, waiting for a retry, frozen, and delivered (done). At each step it
measures, as a logged-in Full Administrator through Django's test client:

* Queue Viewer (``/relay/queues/``) and one big queue's page with its messages;
* ``GET /api/v1/queues/``, ``GET /api/v1/messages/`` and the messages list with filters
  (state, queue, recipient domain, sender), and its next page;
* Find Messages with a filter (the page shows the count);

and, called directly, one sweep (``relay.delivery.engine.sweep``). Each is printed with its
median and p95 and as a ratio to the first (smallest) step, by the clock and by the CPU it
cost in this process and its PostgreSQL backend (which a loaded machine changes far less).
The database is the PostgreSQL database the URL names, created for the run (dropped first
if left over) and dropped at the end; SQLite in a temporary folder without one.

``run`` returns the figures as a dict; ``figures`` runs this script in its own process (it
sets Django up for its database) and returns them flat, for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.config_scale import ScaleDatabase, Timing, setup_django

DESTINATIONS = 50  # link queues by DNS, one per destination domain
BATCH = 2000
# Of every 20 messages: 2 due now, 1 due again after a failure, 10 waiting for a retry,
# 3 frozen, 4 delivered (their entries done, kept until tracking retention removes them).
STATES = ["due"] * 2 + ["retry-due"] + ["retry"] * 10 + ["frozen"] * 3 + ["done"] * 4
BODY = b"Subject: bench\r\nFrom: <sender@bench.test>\r\n\r\n" + b"x" * 400 + b"\r\n"


def destination(number: int) -> str:
    return f"d{number % DESTINATIONS}.bench.test"


def fill(total: int) -> None:
    """Grow the queue to ``total`` messages (the ones already there count)."""
    from django.db import transaction
    from django.utils import timezone

    from relay.queue.models import (
        UNREACHABLE_KEY,
        LinkQueue,
        Message,
        QueueEntry,
        QueueSpec,
        Recipient,
        new_queue_id,
    )
    from servers.models import VirtualServer

    vs = VirtualServer.objects.order_by("pk").first()
    assert vs is not None
    specs = [
        QueueSpec(
            key=f"dns:{destination(n)}", kind="dns", name=destination(n), domain=destination(n)
        )
        for n in range(DESTINATIONS)
    ]
    specs.append(
        QueueSpec(key=f"local:{vs.server_id}", kind="local", name="Local", server_id=vs.server_id)
    )
    specs.append(LinkQueue.system_spec(UNREACHABLE_KEY))
    queues = LinkQueue.for_specs(specs)
    by_number = [queues[spec.key] for spec in specs]
    start = Message.objects.count()
    now = timezone.now()
    for first in range(start, total, BATCH):
        numbers = range(first, min(total, first + BATCH))
        with transaction.atomic():
            messages = []
            for n in numbers:
                received = now - timedelta(seconds=(total - n) * 2)
                messages.append(
                    Message(
                        queue_id=new_queue_id(int(received.timestamp() * 1000)),
                        virtual_server=vs,
                        sender="" if n % 97 == 0 else f"sender{n % 500}@bench.test",
                        content=BODY,
                        size=len(BODY) + n % 5000,
                        message_id=f"<{n}@bench.test>",
                        subject=f"Bench message {n}",
                        received_at=received,
                    )
                )
            Message.objects.bulk_create(messages, batch_size=BATCH)
            entries = []
            for n, message in zip(numbers, messages, strict=True):
                state = STATES[n % len(STATES)]
                queue = by_number[n % len(by_number)]
                tried = state not in ("due",)
                entries.append(
                    QueueEntry(
                        message=message,
                        queue=queue,
                        virtual_server=vs,
                        state={
                            "due": QueueEntry.State.READY,
                            "retry-due": QueueEntry.State.RETRY,
                            "retry": QueueEntry.State.RETRY,
                            "frozen": QueueEntry.State.FROZEN,
                            "done": QueueEntry.State.DONE,
                        }[state],
                        attempts=1 if tried else 0,
                        next_attempt_at=now + timedelta(minutes=30 + n % 600)
                        if state == "retry"
                        else message.received_at,
                        last_response="451 4.4.1 bench: try again later" if tried else "",
                        last_attempt_at=message.received_at if tried else None,
                        expires_at=now + timedelta(days=2),
                        delay_notify_at=now + timedelta(hours=4),
                        delay_notified_at=None,
                        created_at=message.received_at,
                        completed_at=now if state == "done" else None,
                    )
                )
            QueueEntry.objects.bulk_create(entries, batch_size=BATCH)
            Recipient.objects.bulk_create(
                [
                    Recipient(
                        message_id=entry.message_id,
                        entry=entry,
                        address=f"user{n % 1000}@{entry.queue.domain or 'bench.test'}",
                        domain=entry.queue.domain or "bench.test",
                        route="dns",
                        state=Recipient.State.DELIVERED
                        if entry.state == QueueEntry.State.DONE
                        else Recipient.State.PENDING,
                        completed_at=now if entry.state == QueueEntry.State.DONE else None,
                    )
                    for n, entry in zip(numbers, entries, strict=True)
                ],
                batch_size=BATCH,
            )


def settle() -> None:
    """What autovacuum does on a running system: fresh statistics and visibility."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    else:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


ITEMS = [
    ("queue_viewer", "Queue Viewer page"),
    ("queue_page", "one queue's page"),
    ("api_queues", "GET /api/v1/queues/"),
    ("api_messages", "GET /api/v1/messages/"),
    ("api_messages_next", "  its next page"),
    ("api_messages_state", "  ?state=frozen"),
    ("api_messages_queue", "  ?queue=<id>"),
    ("api_messages_domain", "  ?domain="),
    ("api_messages_sender", "  ?sender="),
    ("find", "Find Messages ?state=retry"),
    ("find_domain", "Find Messages ?domain="),
    ("sweep", "one sweep"),
]


@dataclass(frozen=True)
class Measured:
    wall: Timing
    cpu: Timing  # this process and its PostgreSQL backend: what a loaded machine leaves alone
    rows: int  # rows the answer showed (queues the sweep found): the work that is per row


def backend_cpu_seconds() -> float:
    """CPU time of this connection's PostgreSQL backend (on this machine), 0 elsewhere."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return 0.0
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def timed(call: Callable[[int], object], *, count: int, budget: float, rows: int) -> Measured:
    """``count`` calls (fewer when they take longer than ``budget`` seconds in all), each
    timed by the clock and by the CPU it cost here and in the database."""
    walls: list[float] = []
    cpus: list[float] = []
    for n in range(count):
        cpu = time.process_time() + backend_cpu_seconds()
        started = time.perf_counter()
        call(n)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() + backend_cpu_seconds() - cpu)
        if sum(walls) > budget and len(walls) >= 3:
            break
    return Measured(Timing.of(walls), Timing.of(cpus), rows)


def measure_step(scale: float) -> dict[str, Measured]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from relay.delivery import engine
    from relay.queue.models import LinkQueue

    admin = get_user_model().objects.get(username="bench")
    console = Client()
    console.force_login(admin)
    big = LinkQueue.objects.get(key=f"dns:{destination(1)}")

    def page(url: str, data: dict[str, Any] | None = None) -> Callable[[int], int]:
        """GET it; the rows it shows (API results, or the table rows of a console page)."""

        def get(_: int) -> int:
            answer = console.get(url, data or {})
            assert answer.status_code == 200, (url, answer.status_code, answer.content[:500])
            if answer["Content-Type"].startswith("application/json"):
                return len(answer.json()["results"])
            return answer.content.count(b'<td><a href="/relay/')  # each row links its object

        return get

    def next_page(_: int) -> int:
        first = console.get("/api/v1/messages/").json()
        assert first.get("next"), first
        answer = console.get(first["next"])
        assert answer.status_code == 200, answer.content[:500]
        return len(first["results"]) + len(answer.json()["results"])

    calls: dict[str, Callable[[int], int]] = {
        "queue_viewer": page("/relay/queues/"),
        "queue_page": page(f"/relay/queues/{big.pk}/"),
        "api_queues": page("/api/v1/queues/"),
        "api_messages": page("/api/v1/messages/"),
        "api_messages_next": next_page,
        "api_messages_state": page("/api/v1/messages/", {"state": "frozen"}),
        "api_messages_queue": page("/api/v1/messages/", {"queue": big.pk}),
        "api_messages_domain": page("/api/v1/messages/", {"domain": destination(2)}),
        "api_messages_sender": page("/api/v1/messages/", {"sender": "sender7@"}),
        "find": page("/relay/find/", {"state": "retry"}),
        "find_domain": page("/relay/find/", {"domain": destination(3)}),
        "sweep": lambda _: len(engine.sweep()),
    }
    timings = {}
    for name, call in calls.items():
        rows = call(0)  # a first call may build what later ones reuse, as in a running process
        timings[name] = timed(call, count=int(30 * scale) + 3, budget=20.0 * scale, rows=rows)
    return timings


def report(levels: Sequence[int], steps: Sequence[dict[str, Measured]]) -> None:
    base = steps[0]
    for kind in ("cpu", "wall"):
        what = "CPU (this process + its PostgreSQL backend)" if kind == "cpu" else "wall clock"
        print(f"\n{what}, ms")
        print(
            f"{'item':28s}"
            + "".join(f" | {level:>8d}: rows median   p95  ratio" for level in levels)
        )
        for name, label in ITEMS:
            cells = ""
            for step in steps:
                t, b = getattr(step[name], kind), getattr(base[name], kind)
                cells += (
                    f" | {step[name].rows:14d} {t.median * 1e3:6.1f} {t.p95 * 1e3:5.1f}"
                    f" x{t.median / b.median:5.2f}"
                )
            print(f"{label:28s}{cells}")


def run(
    levels: Sequence[int] = (100, 100_000), *, quick: bool = False, database_url: str = ""
) -> dict[str, Any]:
    """Fill and measure each level in a throwaway database; the figures by level and item
    (milliseconds) and each item's ratio of the largest level to the smallest."""
    levels = sorted(levels)
    with tempfile.TemporaryDirectory(prefix="queue-scale-") as folder:
        database = ScaleDatabase(database_url, Path(folder))
        database.create()
        try:
            setup_django(database, Path(folder))
            print(f"database: {database.description}", flush=True)
            build_organization()
            steps = []
            for level in levels:
                started = time.perf_counter()
                fill(level)
                settle()
                print(
                    f"filled {level} messages in {time.perf_counter() - started:.1f} s", flush=True
                )
                steps.append(measure_step(0.1 if quick else 1.0))
            report(levels, steps)
        finally:
            from django.db import connections

            connections.close_all()
            database.drop()
    return {
        "levels": list(levels),
        "items": {
            name: {
                str(level): {
                    "median_ms": step[name].wall.median * 1e3,
                    "p95_ms": step[name].wall.p95 * 1e3,
                    "cpu_median_ms": step[name].cpu.median * 1e3,
                    "cpu_p95_ms": step[name].cpu.p95 * 1e3,
                    "rows": step[name].rows,
                }
                for level, step in zip(levels, steps, strict=True)
            }
            for name, _label in ITEMS
        },
        "ratio": {
            name: steps[-1][name].wall.median / steps[0][name].wall.median for name, _ in ITEMS
        },
        "cpu_ratio": {
            name: steps[-1][name].cpu.median / steps[0][name].cpu.median for name, _ in ITEMS
        },
    }


def build_organization() -> None:
    """The relay's server with one virtual server and a Full Administrator ``bench``."""
    import secrets

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from servers.models import RoutingGroup, Server, VirtualServer

    server = Server.objects.create(
        name="relay", routing_group=RoutingGroup.first(), last_seen=timezone.now()
    )
    VirtualServer.objects.create(server=server, name="Relay", port=2525)
    get_user_model().objects.create_superuser("bench", password=secrets.token_urlsafe())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="100,100000", help="numbers of messages")
    parser.add_argument("--quick", action="store_true", help="a few samples: checks that it runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", ""),
        help="a PostgreSQL URL naming the database to create for the run (default: "
        "$DATABASE_URL; SQLite in a temporary folder when not PostgreSQL)",
    )
    args = parser.parse_args(argv)
    result = run(
        [int(level) for level in args.levels.split(",")],
        quick=args.quick,
        database_url=args.database_url,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def figures(server_url: str, *, quick: bool = False) -> dict[str, float]:
    """Run the bench against the PostgreSQL server of ``server_url`` (in a database
    ``queue_scale`` it creates and drops) and return, per item, the median at each level
    (``<item>_<level>_ms``) and the ratio of the largest level to the smallest."""
    database = urlunsplit(urlsplit(server_url)._replace(path="/queue_scale"))
    with tempfile.TemporaryDirectory(prefix="queue-scale-json-") as folder:
        out = Path(folder) / "figures.json"
        command = [sys.executable, str(Path(__file__)), "--database-url", database]
        subprocess.run([*command, "--json", str(out), *(["--quick"] if quick else [])], check=True)
        data = json.loads(out.read_text())
    flat: dict[str, float] = {}
    for name, by_level in data["items"].items():
        for level, timing in by_level.items():
            flat[f"{name}_{level}_ms"] = timing["median_ms"]
            flat[f"{name}_{level}_cpu_ms"] = timing["cpu_median_ms"]
        flat[f"{name}_ratio"] = data["ratio"][name]
        flat[f"{name}_cpu_ratio"] = data["cpu_ratio"][name]
    return flat


if __name__ == "__main__":
    sys.exit(main())
