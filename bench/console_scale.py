"""How the console's pages scale with the size of the configuration.

    .venv/bin/python bench/console_scale.py [--levels 10,10000] [--quick] [--json FILE]
        [--database-url postgres://postgres@127.0.0.1:5432/NAME]

Every console page a logged-in Full Administrator can open with GET (walked from the
URLconf; a detail page gets a sample object: for a connector the last one by name, deep in a
large Connectors container) is requested through Django's test client at each level: the
organization grows to that many connectors, as many mailboxes, and as many virtual servers
up to 1,000 (ten a server), with bench/config_scale.py's ``fill``. Per page: median and p95
CPU time of the request (this process's, so a busy machine changes it little; the median wall
time is recorded too) and the response's size, and the ratio largest / smallest level. The
database is SQLite in a temporary folder, or the PostgreSQL database named by the URL,
created for the run and dropped at the end.

``measure`` returns the figures as a dict (what ``--json`` writes); ``run_isolated`` runs this
script in its own process for bench/run.py, whose process is not a configured Django.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.config_scale import (
    CONNECTOR_PREFIX,
    ROOT,
    ScaleDatabase,
    Timing,
    build_organization,
    fill,
    setup_django,
)

MAX_VIRTUAL_SERVERS = 1000
SKIPPED_PREFIXES = ("api/", "login/", "logout/")
ROUTE_PART = re.compile(r"<(?:\w+:)?(\w+)>")


@dataclass(frozen=True)
class PageTiming:
    page: str  # the URL name, "connectors:connector"
    url: str
    status: int
    median_ms: float  # CPU time of this process per request (what a loaded machine keeps)
    p95_ms: float
    wall_median_ms: float
    size_bytes: int


# --- the pages -----------------------------------------------------------------------------


def console_routes() -> Iterator[tuple[str, str, Any]]:
    """(URL name, route with <kwarg> parts, view class) of every console page with GET."""
    from django.urls import URLPattern, URLResolver, get_resolver

    def walk(patterns: list[Any], prefix: str, namespace: str) -> Iterator[tuple[str, str, Any]]:
        for pattern in patterns:
            part = ROUTE_PART.sub(r"<\1>", str(pattern.pattern))
            if isinstance(pattern, URLResolver):
                inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
                yield from walk(pattern.url_patterns, prefix + part, inner)
            elif isinstance(pattern, URLPattern) and pattern.name:
                view = getattr(pattern.callback, "view_class", None)
                if view is not None and hasattr(view, "get"):
                    yield f"{namespace}{pattern.name}", prefix + part, view

    for name, route, view in walk(get_resolver().url_patterns, "", ""):
        if not route.startswith(SKIPPED_PREFIXES) and ":" in name:
            yield name, route, view


def samples() -> dict[str, Any]:
    """One object for each kind of id a console URL takes (None: there is none)."""
    from django.contrib.auth import get_user_model

    from connectors.models import Connector
    from relay.models import LinkQueue, Message, ReplyRule
    from servers.models import (
        AcceptedDomain,
        Certificate,
        Mailbox,
        RoutingGroup,
        Server,
        SmtpCredential,
        SmtpSession,
        VirtualServer,
    )

    connectors = Connector.objects.filter(name__startswith=CONNECTOR_PREFIX)
    return {
        "connectors": connectors.order_by("-name").first(),
        "routing-groups": RoutingGroup.objects.order_by("pk").first(),
        "servers": Server.objects.order_by("pk").first(),
        "virtual-servers": VirtualServer.objects.order_by("pk").first(),
        "sessions": SmtpSession.objects.order_by("pk").first(),
        "accepted-domains": AcceptedDomain.objects.order_by("pk").first(),
        "mailboxes": Mailbox.objects.order_by("-pk").first(),
        "smtp-credentials": SmtpCredential.objects.order_by("pk").first(),
        "certificates": Certificate.objects.order_by("pk").first(),
        "queues": LinkQueue.objects.order_by("pk").first(),
        "messages": Message.objects.order_by("pk").first(),
        "reply-rules": ReplyRule.objects.order_by("pk").first(),
        "users": get_user_model().objects.order_by("pk").first(),
        "tree": None,
    }


def page_url(route: str, objects: dict[str, Any]) -> str | None:
    """The route with its ids filled from ``objects`` (None: no sample for one of them)."""
    parts = route.split("/")
    for index, part in enumerate(parts):
        match = re.fullmatch(r"<(\w+)>", part)
        if not match:
            continue
        if match.group(1) == "key":  # a tree branch: the connectors of the first group
            group = objects["routing-groups"]
            parts[index] = f"routing-group-{group.pk}-connectors"
            continue
        collection = "routing-groups" if match.group(1) == "group" else parts[index - 1]
        sample = objects.get(collection)
        if sample is None:
            return None
        parts[index] = str(sample.pk)
    return "/" + "/".join(parts)


def add_samples(virtual_server: Any) -> None:
    """What the organization lacks for a sample of every detail page: a credential, a
    certificate, a session on the relay's listener, a reply rule."""
    from django.utils import timezone

    from relay.models import ReplyRule
    from servers.models import Certificate, SmtpCredential, SmtpSession

    credential = SmtpCredential(username="bench")
    credential.set_password("bench secret 1")
    credential.save()
    Certificate.generate_self_signed(name="mail", common_name="mail.example.com").save()
    SmtpSession.objects.create(
        virtual_server=virtual_server,
        key="bench/1/1",
        client_address="192.0.2.7",
        client_port=51234,
        connected_at=timezone.now(),
    )
    ReplyRule.objects.create(order=1, code="552", action=ReplyRule.Action.RETRY)


# --- measuring -----------------------------------------------------------------------------


def measure_pages(count: int, budget: float, only: Sequence[str] = ()) -> list[PageTiming]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    routes = sorted(console_routes(), key=lambda r: ("<" in r[1], r[0]))  # lists first
    results = []
    for name, route, _view in routes:
        if only and not any(part in name for part in only):
            continue
        url = page_url(route, samples())
        if url is None:
            print(f"  {name}: no sample object, not measured", flush=True)
            continue
        first = client.get(url)  # a first request may build what later ones reuse
        cpu, wall = sample(client, url, count, budget)
        results.append(
            PageTiming(
                name,
                url,
                first.status_code,
                cpu.median * 1e3,
                cpu.p95 * 1e3,
                wall.median * 1e3,
                len(first.content),
            )
        )
    return results


def sample(client: Any, url: str, count: int, budget: float) -> tuple[Timing, Timing]:
    """CPU and wall time of ``count`` requests (fewer once they took ``budget`` CPU seconds,
    at least 3)."""
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(count):
        started, started_cpu = time.perf_counter(), time.process_time()
        client.get(url)
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started)
        if sum(cpu) > budget and len(cpu) >= 3:
            break
    return Timing.of(cpu), Timing.of(wall)


def levels_of(text: str) -> list[int]:
    return sorted(int(level) for level in text.split(","))


def measure(
    levels: Sequence[int],
    *,
    quick: bool = False,
    database_url: str = "",
    pages: Sequence[str] = (),
) -> dict[str, Any]:
    """Each page's timings at each level (only the pages whose URL name contains one of
    ``pages``, when given), and their ratios largest / smallest level."""
    count, budget = (3, 1.0) if quick else (9, 3.0)
    with tempfile.TemporaryDirectory(prefix="console-scale-") as folder:
        database = ScaleDatabase(database_url, Path(folder))
        database.create()
        try:
            setup_django(database, Path(folder))
            vs, _token = build_organization()
            add_samples(vs)
            steps: dict[int, list[PageTiming]] = {}
            for level in levels:
                started = time.perf_counter()
                fill(level, level, min(level, MAX_VIRTUAL_SERVERS), bridgehead=vs)
                print(
                    f"filled {level} connectors, {level} mailboxes, "
                    f"{min(level, MAX_VIRTUAL_SERVERS)} virtual servers in "
                    f"{time.perf_counter() - started:.1f} s; measuring the pages",
                    flush=True,
                )
                steps[level] = measure_pages(count, budget, pages)
        finally:
            from django.db import connections

            connections.close_all()
            database.drop()
    return summarize(steps, database.description)


def summarize(steps: dict[int, list[PageTiming]], database: str) -> dict[str, Any]:
    small, big = min(steps), max(steps)
    by_page = {level: {t.page: t for t in timings} for level, timings in steps.items()}
    pages: dict[str, Any] = {}
    for page, base in by_page[small].items():
        last = by_page[big].get(page)
        if last is None:
            continue
        pages[page] = {
            "levels": {str(level): asdict(by_page[level][page]) for level in sorted(steps)},
            "ratio": last.median_ms / base.median_ms if base.median_ms else float("nan"),
            "size_ratio": last.size_bytes / base.size_bytes if base.size_bytes else float("nan"),
        }
    ratios = [p["ratio"] for p in pages.values()]
    return {
        "database": database,
        "levels": sorted(steps),
        "pages": pages,
        "median_ratio": statistics.median(ratios) if ratios else float("nan"),
        "worst_ratio": max(ratios) if ratios else float("nan"),
        "worst_page": max(pages, key=lambda p: pages[p]["ratio"]) if pages else "",
    }


def report(result: dict[str, Any]) -> None:
    small, big = str(result["levels"][0]), str(result["levels"][-1])
    print(f"database: {result['database']}")
    print(
        f"{'page (CPU ms per request)':38} | {small + ' connectors: median p95 ms, KB':>34} | "
        f"{big + ' connectors: median p95 ms, KB':>37} | ratio"
    )
    for name, page in sorted(result["pages"].items(), key=lambda item: -item[1]["ratio"]):
        a, b = page["levels"][small], page["levels"][big]
        status = "" if a["status"] == b["status"] == 200 else f" (HTTP {a['status']}/{b['status']})"
        print(
            f"{name:38} | {a['median_ms']:9.1f} {a['p95_ms']:9.1f} {a['size_bytes'] / 1024:9.1f} KB"
            f"    | {b['median_ms']:9.1f} {b['p95_ms']:9.1f} {b['size_bytes'] / 1024:9.1f} KB"
            f"       | x{page['ratio']:5.2f}{status}"
        )
    print(
        f"ratio {big} / {small} connectors: median over pages x{result['median_ratio']:.2f}, "
        f"worst x{result['worst_ratio']:.2f} ({result['worst_page']})"
    )


def run_isolated(results: Path, *, quick: bool = False) -> dict[str, Any]:
    """This bench in a process of its own (a fresh Django), its table printed, its figures
    written to ``results/console_scale.json`` and returned ({} when it failed)."""
    results.mkdir(parents=True, exist_ok=True)
    target = results / "console_scale.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--json", str(target)]
    done = subprocess.run([*command, *(["--quick"] if quick else [])], cwd=ROOT, check=False)
    if done.returncode != 0 or not target.exists():
        return {}
    loaded: dict[str, Any] = json.loads(target.read_text())
    return loaded


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--levels", default="10,10000", help="numbers of connectors")
    parser.add_argument(
        "--quick", action="store_true", help="a few samples only: checks that it runs"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--pages",
        default="",
        help="only the pages whose URL name contains one of these (comma-separated), "
        "e.g. delete,tree-children",
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
    result = measure(
        levels_of(args.levels),
        quick=args.quick,
        database_url=args.database_url,
        pages=[part for part in args.pages.split(",") if part],
    )
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
