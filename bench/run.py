"""The project's throughput against Postfix, measured in one interleaved run (``make bench``).

    python -m bench.run [--quick] [--reps N] [--systems direct,postfix,relay-postgres,...]

Systems, all delivering to the same counting smtp-sink on loopback:

* ``direct``: smtp-source straight to the sink (the ceiling of this machine and these tools);
* ``postfix``: a private Postfix 3.7 as a pure relay (bench/postfix.py);
* ``relay-postgres``: the project (runrelay, Celery worker and beat as the Procfile runs them)
  on a private PostgreSQL and Redis;
* ``relay-embedded``: the same on the embedded default (SQLite and the filesystem broker).

Every repetition runs every scenario on every system before the next repetition starts, so
that a noisy moment of a shared machine hits all of them. See bench/README.md for what each
figure means."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench import console_scale, procstat, queue_scale
from bench.clients import SENDER
from bench.depth import DepthSampler
from bench.postfix import PostfixLayout, PrivatePostfix
from bench.postfix import available as postfix_missing
from bench.relay_processes import BENCH_PASSWORD, BENCH_USER, ROOT, RelaySetup
from bench.report import (
    REST_ROLE_PREFIX,
    RunRecord,
    Sample,
    cpu_table,
    delivery_table,
    percentile,
    summarize,
    table,
    write_chart,
    write_results,
)
from bench.services import SMTP_SOURCE, CountingSink, free_port, missing_binaries, temp_folder

RESULTS = ROOT / "bench" / "results"
SYSTEMS = ("direct", "postfix", "relay-postgres", "relay-embedded")
RELAYS = ("relay-postgres", "relay-embedded")
CLIENTS = (1, 10, 50)
LATENCY_CLIENTS = 10
RECIPIENT = "sink@d0.sink.bench.test"
CONFIG_SETTLE_SECONDS = 10.0
UNITS = {
    "accept_rate": "msg/s",
    "e2e_rate": "msg/s",
    "rate": "msg/s",
    "p50_ms": "ms",
    "p99_ms": "ms",
    "session_p50_ms": "ms",
    "session_1_ms": "ms",
    "session_100_ms": "ms",
    "ratio_time": "100 rcpt / 1",
    "rss_increase_mb": "MB",
    "rss_open_mb": "MB",
    "rest_cpu_pct": "% of a core",
    "kb_per_session": "KB",
    "ratio_big_small": "big / small",
    "accept_rate_small": "msg/s",
    "accept_rate_big": "msg/s",
    "cpu_small_ms": "ms",
    "cpu_big_ms": "ms",
    "relay_cpu_ms": "ms/msg",
    "delivery_cpu_ms": "ms/msg",
    "broker_max_depth": "tasks",
}
# The processes of the delivery side of a relay setup (beside the relay's own): Celery worker
# and beat, the database and the broker. The database also serves the relay's intake.
DELIVERY_ROLES = ("worker", "beat", "postgres", "redis")


@dataclass(frozen=True)
class Load:
    """How much each scenario sends per system and repetition."""

    throughput: dict[int, int]  # clients -> messages
    latency: int
    auth: int
    recipients: int  # messages of each shape (1 and 100 recipients), one client
    idle_sessions: int
    reps: int
    config: tuple[int, int, int]  # the big configuration: connectors, mailboxes, virtual servers
    config_messages: int  # per acceptance measurement (10 clients) before and after
    rest_seconds: float  # the at-rest CPU measurement


FULL = Load(
    throughput={1: 200, 10: 600, 50: 1000},
    latency=300,
    auth=40,
    recipients=20,
    idle_sessions=1000,
    reps=3,
    config=(10_000, 100_000, 1_000),
    config_messages=600,
    rest_seconds=10.0,
)
QUICK = Load(
    throughput={1: 20, 10: 60, 50: 100},
    latency=50,
    auth=10,
    recipients=4,
    idle_sessions=100,
    reps=1,
    config=(1_000, 10_000, 100),
    config_messages=60,
    rest_seconds=3.0,
)


@dataclass
class System:
    name: str
    port: int
    roots: Callable[[], dict[str, list[int]]]
    auth: str = ""  # USER:PASSWORD when it takes AUTH
    describe: dict[str, Any] = field(default_factory=dict)
    depth: Callable[[], int] | None = None  # tasks waiting on its broker now


def cpu_per_message(
    before: procstat.Snapshot, after: procstat.Snapshot, roots: dict[str, list[int]], messages: int
) -> dict[str, float]:
    """Milliseconds of CPU per message of every role (``cpu_ms_<role>``) and their total
    (``cpu_ms``)."""
    figures = {
        f"cpu_ms_{role}": procstat.cpu_seconds(before, after, pids) * 1000 / messages
        for role, pids in roots.items()
    }
    figures["cpu_ms"] = sum(figures.values())
    return figures


def rest_cpu(
    before: procstat.Snapshot, after: procstat.Snapshot, roots: dict[str, list[int]], wall: float
) -> dict[str, float]:
    """CPU of each role (``rest_cpu_pct_<role>``) and in all (``rest_cpu_pct``) as a
    percentage of one core over ``wall`` seconds."""
    figures = {
        f"rest_cpu_pct_{role}": procstat.cpu_seconds(before, after, pids) * 100 / wall
        for role, pids in roots.items()
    }
    figures["rest_cpu_pct"] = sum(figures.values())
    return figures


def measured_cpu(
    before: procstat.Snapshot,
    after: procstat.Snapshot,
    system_roots: dict[str, list[int]],
    sink_pid: int,
    messages: int,
) -> dict[str, float]:
    """The system's CPU per message (its total without the sink, unless the sink is the
    system) and the shared sink's own, apart (``sink_cpu_ms``)."""
    figures = cpu_per_message(before, after, system_roots, messages)
    figures.update(delivery_split(figures))
    if "sink" not in system_roots:
        sink = cpu_per_message(before, after, {"sink": [sink_pid]}, messages)
        figures["sink_cpu_ms"] = sink["cpu_ms"]
    return figures


def delivery_split(figures: Mapping[str, float]) -> dict[str, float]:
    """A relay setup's CPU per message in two: the relay's own (``relay_cpu_ms``: SMTP intake
    and local delivery) and the delivery side's (``delivery_cpu_ms``: the roles of
    ``DELIVERY_ROLES`` it has). Nothing for a system without a relay process (Postfix: its
    ``cpu_ms`` is its whole cost)."""
    if "cpu_ms_relay" not in figures:
        return {}
    delivery = [figures[f"cpu_ms_{role}"] for role in DELIVERY_ROLES if f"cpu_ms_{role}" in figures]
    return {"relay_cpu_ms": figures["cpu_ms_relay"], "delivery_cpu_ms": sum(delivery)}


@contextlib.contextmanager
def broker_depth(system: System) -> Iterator[dict[str, float]]:
    """The broker's maximum queue depth while the block runs (``broker_max_depth``, into the
    yielded figures at the end; nothing for a system without a broker)."""
    figures: dict[str, float] = {}
    if system.depth is None:
        yield figures
        return
    with DepthSampler(system.depth) as sampler:
        yield figures
    figures["broker_max_depth"] = float(sampler.maximum)


def smtp_source_command(port: int, clients: int, messages: int) -> list[str]:
    """A new connection per message, one recipient, a 4 KB body."""
    return [
        SMTP_SOURCE,
        "-s",
        str(clients),
        "-m",
        str(messages),
        "-l",
        "4096",
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        f"127.0.0.1:{port}",
    ]


class Bench:
    def __init__(self, args: argparse.Namespace, load: Load, folder: Path) -> None:
        self.args = args
        self.load = load
        self.folder = folder
        self.sink = CountingSink()
        self.postfix: PrivatePostfix | None = None
        self.relays: dict[str, RelaySetup] = {}
        self.systems: dict[str, System] = {}
        self.samples: list[Sample] = []
        self.skipped: dict[str, str] = {}

    # -- setting up ----------------------------------------------------------------------------

    def start(self, wanted: Sequence[str]) -> None:
        self.sink.start()
        if "direct" in wanted:
            sink_pid = self.sink.pid()
            self.systems["direct"] = System("direct", self.sink.port, lambda: {"sink": [sink_pid]})
        if "postfix" in wanted:
            reason = postfix_missing()
            if reason:
                self.skipped["postfix"] = reason
            else:
                layout = PostfixLayout(self.folder / "postfix", free_port(), self.sink.port)
                layout.folder.mkdir()
                self.postfix = PrivatePostfix(layout).start()
                postfix = self.postfix
                self.systems["postfix"] = System(
                    "postfix",
                    layout.port,
                    lambda: {"postfix": [postfix.master_pid()]},
                    describe={"version": postfix_version(), "config": str(layout.config)},
                )
        for name in RELAYS:
            if name in wanted:
                self.start_relay(name)

    def start_relay(self, name: str) -> None:
        kind = name.removeprefix("relay-")
        missing = missing_binaries()
        if kind == "postgres" and ("postgres" in missing or "redis" in missing):
            self.skipped[name] = missing.get("postgres") or missing["redis"]
            return
        setup = RelaySetup(kind, self.folder / name, self.sink.port)
        self.relays[name] = setup
        log(f"{name}: migrating, setting up the organization, starting the processes")
        try:
            setup.prepare()
            setup.start()
        except Exception as error:  # the other systems are still worth measuring
            self.skipped[name] = f"did not start: {error}"[-2000:]
            log(f"{name}: did not start: {error}")
            setup.stop()
            del self.relays[name]
            return
        processes = setup.relay_processes()
        self.systems[name] = System(
            name,
            setup.port,
            setup.roots,
            auth=f"{BENCH_USER}:{BENCH_PASSWORD}",
            depth=setup.queue_depth,
            describe={
                "relay_processes": processes,
                "commands": {k: " ".join(v) for k, v in setup.commands.items()},
                "database": "PostgreSQL (private)" if kind == "postgres" else "SQLite",
                "broker": "Redis (private)"
                if kind == "postgres"
                else "filesystem (smtpadmin.broker)",
            },
        )
        log(f"{name}: {len(processes)} relay process(es): {processes}")

    def stop(self) -> None:
        for setup in self.relays.values():
            with contextlib.suppress(Exception):
                setup.stop()
        if self.postfix is not None:
            with contextlib.suppress(Exception):
                self.postfix.stop()
        self.sink.stop()

    # -- scenarios -----------------------------------------------------------------------------

    def record(
        self,
        scenario: str,
        system: System,
        rep: int,
        clients: int,
        metrics: dict[str, float],
        note: str = "",
    ) -> None:
        self.samples.append(Sample(scenario, system.name, rep, clients, metrics, note))
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if not k.startswith("cpu_ms_"))
        suffix = f" ({note})" if note else ""
        log(f"  rep {rep} {scenario:<10} {system.name:<15} c={clients:<3} {shown}{suffix}")

    def throughput(self, system: System, rep: int, clients: int) -> None:
        metrics, note = self.accept(system, clients, self.load.throughput[clients])
        self.record("throughput", system, rep, clients, metrics, note)

    def accept(self, system: System, clients: int, messages: int) -> tuple[dict[str, float], str]:
        """smtp-source's wall time (acceptance), the time until the sink has counted every
        message (end to end) and the CPU per message of the system's processes."""
        base = self.sink.settle(quiet=0.5)
        before = procstat.snapshot()
        started = time.perf_counter()
        with broker_depth(system) as depth:
            result = subprocess.run(
                smtp_source_command(system.port, clients, messages),
                capture_output=True,
                text=True,
                timeout=1800,
            )
            accepted = time.perf_counter() - started
            arrived = self.sink.wait_for(base + messages, timeout=max(120.0, messages * 0.5))
            delivered = time.perf_counter() - started
        after = procstat.snapshot()
        metrics = {"accept_rate": messages / accepted, **depth}
        notes = []
        if result.returncode != 0:
            notes.append(f"smtp-source failed: {result.stderr.strip()[-200:]}")
        if arrived:
            metrics["e2e_rate"] = messages / delivered
        else:
            notes.append(f"only {self.sink.messages() - base}/{messages} reached the sink")
        metrics.update(measured_cpu(before, after, system.roots(), self.sink.pid(), messages))
        return metrics, "; ".join(notes)

    def send(self, system: System, *extra: str) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "bench.clients", "send", "--port", str(system.port), *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if result.returncode != 0:
            raise RuntimeError(f"bench.clients failed: {result.stderr[-2000:]}")
        data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return data

    def rest(self, system: System, rep: int) -> None:
        """CPU of the system doing nothing (heartbeats, configuration checks, polling), as a
        percentage of one core: the cost every message rate pays, largest per message at
        low rates."""
        self.sink.settle(quiet=0.5)
        before = procstat.snapshot()
        started = time.perf_counter()
        time.sleep(self.load.rest_seconds)
        after = procstat.snapshot()
        wall = time.perf_counter() - started
        self.record("rest", system, rep, 0, rest_cpu(before, after, system.roots(), wall))

    def latency(self, system: System, rep: int) -> None:
        messages = self.load.latency
        self.sink.settle(quiet=0.5)
        before = procstat.snapshot()
        data = self.send(system, "--clients", str(LATENCY_CLIENTS), "--messages", str(messages))
        after = procstat.snapshot()
        metrics = send_metrics(data)
        metrics["cpu_ms"] = cpu_per_message(before, after, system.roots(), messages)["cpu_ms"]
        self.record("latency", system, rep, LATENCY_CLIENTS, metrics, failures_note(data))

    def auth(self, system: System, rep: int) -> None:
        """AUTH PLAIN per session on the relays, the same load unauthenticated on Postfix.
        Each client has its own loopback address, as separate submitting hosts would."""
        messages = self.load.auth
        self.sink.settle(quiet=0.5)
        extra = [
            "--clients",
            str(LATENCY_CLIENTS),
            "--messages",
            str(messages),
            "--source-base",
            "10",
        ]
        if system.auth:
            extra += ["--auth", system.auth]
            # What is measured is a login after the credential's first one (the first hashes the
            # password in each intake process): a few sessions first, unmeasured.
            self.send(system, *extra[:2], "--messages", str(2 * LATENCY_CLIENTS), *extra[4:])
        before = procstat.snapshot()
        data = self.send(system, *extra)
        after = procstat.snapshot()
        metrics = send_metrics(data)
        metrics["cpu_ms"] = cpu_per_message(before, after, system.roots(), messages)["cpu_ms"]
        self.record("auth", system, rep, LATENCY_CLIENTS, metrics, failures_note(data))

    def recipients(self, system: System, rep: int) -> None:
        """One message with 100 recipients over 10 domains against one with 1 recipient: the
        time of a whole session (connect to the reply to QUIT), one client."""
        messages = self.load.recipients
        self.sink.settle(quiet=0.5)
        one = self.send(system, "--clients", "1", "--messages", str(messages))
        many = self.send(
            system,
            "--clients",
            "1",
            "--messages",
            str(messages),
            "--recipients",
            "100",
            "--domains",
            "10",
        )
        single = percentile(one["sessions"], 50) * 1000
        hundred = percentile(many["sessions"], 50) * 1000
        metrics = {
            "session_1_ms": single,
            "session_100_ms": hundred,
            "ratio_time": hundred / single if single else float("nan"),
        }
        self.record(
            "recipients",
            system,
            rep,
            1,
            metrics,
            (failures_note(one) + " " + failures_note(many)).strip(),
        )

    def idle(self, system: System, rep: int) -> None:
        """Idle sessions held open: the increase of the relay's RSS (all its processes)."""
        setup = self.relays[system.name]
        relay_root = setup.roots()["relay"]
        sessions = self.load.idle_sessions
        before = procstat.tree_rss(procstat.snapshot(), relay_root)
        holder = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.clients",
                "idle",
                "--port",
                str(system.port),
                "--sessions",
                str(sessions),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdin is not None
            opened = json.loads(holder.stdout.readline() or "{}")
            time.sleep(1.0)  # the relay finishes setting the sessions up
            after = procstat.tree_rss(procstat.snapshot(), relay_root)
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(60)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait(10)
        open_count = int(opened.get("open", 0))
        increase = after - before
        metrics = {
            "rss_open_mb": after / 2**20,
            "rss_increase_mb": increase / 2**20,
            "kb_per_session": increase / 1024 / open_count if open_count else float("nan"),
            "open": float(open_count),
        }
        note = (
            ""
            if open_count == sessions
            else f"opened {open_count}/{sessions}: {opened.get('failures')}"
        )
        self.record("idle", system, rep, sessions, metrics, note)

    # -- the run -------------------------------------------------------------------------------

    def attempt(self, scenario: str, system: System, rep: int, step: Callable[[], None]) -> None:
        """One measurement; a failure is recorded as a note and the run goes on."""
        try:
            step()
        except Exception as error:  # a broken system must not cost the other measurements
            self.samples.append(
                Sample(scenario, system.name, rep, 0, {}, f"error: {error!r}"[:500])
            )
            log(f"  rep {rep} {scenario:<10} {system.name:<15} ERROR {error!r}"[:500])

    def run(self) -> None:
        order = [name for name in SYSTEMS if name in self.systems]
        for rep in range(1, self.load.reps + 1):
            log(f"repetition {rep}/{self.load.reps}")
            # Rotate the order each repetition: nobody always runs right after a busy neighbour.
            shift = (rep - 1) % len(order)
            rotated = [self.systems[n] for n in order[shift:] + order[:shift]]
            for system in rotated:
                self.attempt("rest", system, rep, partial(self.rest, system, rep))
            for clients in CLIENTS:
                for system in rotated:
                    self.attempt(
                        "throughput",
                        system,
                        rep,
                        partial(self.throughput, system, rep, clients),
                    )
            for system in rotated:
                self.attempt("latency", system, rep, partial(self.latency, system, rep))
            for system in rotated:
                if system.name == "postfix" or system.name in RELAYS:
                    self.attempt("auth", system, rep, partial(self.auth, system, rep))
            for system in rotated:
                if system.name != "direct":
                    self.attempt("recipients", system, rep, partial(self.recipients, system, rep))
            for system in rotated:
                if system.name in RELAYS:
                    self.attempt("idle", system, rep, partial(self.idle, system, rep))
        self.config_scale()
        # The console's pages at 10 and 10,000 connectors (results/console_scale.json).
        console_scale.run_isolated(self.args.results, quick=self.args.quick)
        self.queue_scale()

    def queue_scale(self) -> None:
        """Queue views and the sweep with 100 and 100,000 messages queued, on the private
        PostgreSQL (bench/queue_scale.py): medians and the ratio of the two."""
        setup = self.relays.get("relay-postgres")
        if setup is None or not setup.database_url:
            self.skipped["queue_scale"] = "no relay-postgres run"
            return
        figures = queue_scale.figures(setup.database_url, quick=self.args.quick)
        self.record("queue_scale", self.systems["relay-postgres"], 0, 0, figures)

    def config_scale(self) -> None:
        """The acceptance rate (10 clients) with one of each (one connector, one mailbox, one
        virtual server) and then with the big configuration, on each relay, Postfix measured
        alongside as the yardstick of the machine's noise; ``ratio_big_small`` per
        repetition. The big configuration is written by bench/config_scale.py's ``fill``."""
        reason = config_scale_missing(ROOT)
        relays = [self.systems[n] for n in RELAYS if n in self.systems]
        if reason or not relays:
            self.skipped["config"] = reason or "no relay runs"
            return
        yardstick = [self.systems[n] for n in ("postfix",) if n in self.systems]
        messages = self.load.config_messages
        small: dict[tuple[str, int], float] = {}
        for phase in ("small", "big"):
            if phase == "big":
                for system in relays:
                    self.attempt("config", system, 0, partial(self.fill, system))
            for rep in range(1, self.load.reps + 1):
                for system in [*relays, *yardstick]:
                    metrics, note = self.accept(system, LATENCY_CLIENTS, messages)
                    rate = metrics["accept_rate"]
                    figures = {f"accept_rate_{phase}": rate, f"cpu_{phase}_ms": metrics["cpu_ms"]}
                    if phase == "small":
                        small[(system.name, rep)] = rate
                    elif (system.name, rep) in small:
                        figures["ratio_big_small"] = rate / small[(system.name, rep)]
                    self.record("config", system, rep, LATENCY_CLIENTS, figures, note)

    def fill(self, system: System) -> None:
        setup = self.relays[system.name]
        connectors, mailboxes, virtual_servers = self.load.config
        started = time.perf_counter()
        setup.run_python(
            ["-m", "bench.config_fill", str(connectors), str(mailboxes), str(virtual_servers)],
            "filling the big configuration",
        )
        log(
            f"{system.name}: filled {connectors} connectors, {mailboxes} mailboxes, "
            f"{virtual_servers} virtual servers in {time.perf_counter() - started:.0f} s"
        )
        # The relay follows configuration changes within a second or two; let it settle.
        time.sleep(CONFIG_SETTLE_SECONDS)


def config_scale_missing(root: Path) -> str:
    """Why the big-configuration scenario cannot run ("" when it can): it needs the bulk
    filler bench/config_scale.py."""
    if not (root / "bench" / "config_scale.py").exists():
        return "bench/config_scale.py (the bulk filler) is not in this tree"
    return ""


def send_metrics(data: dict[str, Any]) -> dict[str, float]:
    latencies = data["latencies"]
    sessions = data["sessions"]
    return {
        "rate": len(latencies) / data["wall"] if data["wall"] else float("nan"),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "session_p50_ms": percentile(sessions, 50) * 1000,
        "failed": float(data.get("failed", len(data["failures"]))),
    }


def failures_note(data: dict[str, Any]) -> str:
    failures = data.get("failures") or []
    count = data.get("failed", len(failures))
    return f"{count} failed, e.g. {failures[0]}" if count else ""


def postfix_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["/usr/sbin/postconf", "-d", "-h", "mail_version"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return ""


def stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_notes(
    samples: Sequence[Sample], skipped: dict[str, str], systems: Mapping[str, Any]
) -> list[str]:
    """What the table does not say: how each relay ran, what was skipped, what went wrong."""
    lines = []
    for name, describe in systems.items():
        processes = describe.get("relay_processes")
        if processes is not None:
            lines.append(f"{name}: the relay ran as {len(processes)} process(es): {processes}")
    lines.extend(f"skipped {name}: {reason}" for name, reason in skipped.items())
    lines.extend(
        f"note: rep {s.rep} {s.scenario} {s.system} clients={s.clients}: {s.note}"
        for s in samples
        if s.note
    )
    return lines


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK") == "1",
        help="few messages, one repetition (also BENCH_QUICK=1)",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=int(os.environ.get("BENCH_REPS", "0")) or None,
        help="repetitions (default 3, 1 in quick mode; also BENCH_REPS)",
    )
    parser.add_argument(
        "--systems",
        default=os.environ.get("BENCH_SYSTEMS", ",".join(SYSTEMS)),
        help="comma-separated subset of " + ", ".join(SYSTEMS),
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and PNG go")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems: {', '.join(unknown)}")
    args.wanted = wanted
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def load_for(args: argparse.Namespace) -> Load:
    base = QUICK if args.quick else FULL
    if args.reps:
        return dataclasses.replace(base, reps=args.reps)
    return base


@contextlib.contextmanager
def private_folder() -> Iterator[Path]:
    folder = temp_folder("smtpadmin-bench-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load = load_for(args)
    missing = missing_binaries()
    for tool in ("smtp-source", "smtp-sink"):
        if tool in missing:
            print(f"bench: {missing[tool]}", file=sys.stderr)
            return 2
    started = datetime.datetime.now(datetime.UTC)
    load_at_start = os.getloadavg()
    # A SIGTERM stops the run like Ctrl-C: the private Postfix, PostgreSQL, Redis and the
    # project's processes are stopped on the way out, never left running.
    signal.signal(signal.SIGTERM, stop_on_signal)
    with private_folder() as folder:
        bench = Bench(args, load, folder)
        try:
            bench.start(args.wanted)
            bench.run()
        finally:
            bench.stop()
    finished = datetime.datetime.now(datetime.UTC)
    record = RunRecord(
        started=started.isoformat(timespec="seconds"),
        finished=finished.isoformat(timespec="seconds"),
        options={"quick": args.quick, "reps": load.reps, "load": load.__dict__},
        environment={
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        systems={name: system.describe for name, system in bench.systems.items()},
        samples=bench.samples,
        skipped=bench.skipped,
    )
    summaries = summarize(bench.samples)
    print(table(summaries, UNITS, SYSTEMS))
    print()
    print(cpu_table(summaries, SYSTEMS))
    print()
    print(delivery_table(summaries, SYSTEMS))
    print()
    print(
        cpu_table(
            summaries,
            SYSTEMS,
            "rest",
            REST_ROLE_PREFIX,
            "CPU at rest by process, % of one core (median; nothing sent)",
        )
    )
    print()
    for line in run_notes(bench.samples, bench.skipped, record.systems):
        print(line)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    stamped, _ = write_results(args.results, stamp, record, summaries)
    chart = write_chart(
        args.results / "latest.png",
        summaries,
        f"smtpadmin vs Postfix, {os.cpu_count()} cores, median of {load.reps} "
        f"run(s), {started:%Y-%m-%d %H:%M} UTC",
    )
    print(f"results: {stamped} (and latest.json), chart: {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
