"""One setup of the project under test: its database and broker, its organization, and the
processes `make run` starts for it (the relay, a Celery worker and beat, as the Procfile
says), each a subprocess of the bench with its output in a log file. Stops only what it
started."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat
from bench.depth import folder_depth, redis_depth
from bench.services import PrivatePostgres, PrivateRedis, free_port, stop_process, wait_listening

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile"
BENCH_USER = "bench"
BENCH_PASSWORD = "bench-Passw0rd-only"
# Inherited settings that would point a setup at someone else's database, broker or files.
FOREIGN_SETTINGS = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "SMTPADMIN_VAR_DIR",
    "SMTPADMIN_SERVER_NAME",
)


def procfile_commands(text: str) -> dict[str, list[str]]:
    """``name: command`` lines of a Procfile, split like a shell would."""
    commands: dict[str, list[str]] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        name, command = stripped.split(":", 1)
        commands[name.strip()] = shlex.split(command)
    return commands


def runnable(argv: list[str], python: str) -> list[str]:
    """A Procfile command with this interpreter: ``python`` is ``python``, ``celery`` is
    ``python -m celery`` (the venv's, whatever PATH says)."""
    if argv and argv[0] == "python":
        return [python, *argv[1:]]
    if argv and argv[0] == "celery":
        return [python, "-m", "celery", *argv[1:]]
    return list(argv)


def relay_command(procfile: dict[str, list[str]], python: str, server: str) -> list[str]:
    return [*runnable(procfile["relay"], python), "--server", server]


@dataclass
class Managed:
    """A subprocess the bench started, with its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM, then SIGKILL; afterwards any descendant still alive is killed by pid."""
        if self.process.poll() is None:
            descendants = procstat.tree(procstat.snapshot(), self.process.pid)
            stop_process(self.process, timeout)
            alive = procstat.snapshot()
            for pid in descendants:
                if pid != self.process.pid and pid in alive:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


@dataclass
class RelaySetup:
    """``kind`` is "postgres" (private PostgreSQL + Redis) or "embedded" (SQLite and the
    filesystem broker in a private SMTPADMIN_VAR_DIR)."""

    kind: str
    folder: Path
    sink_port: int
    python: str = sys.executable
    port: int = field(default_factory=free_port)
    server: str = ""
    postgres: PrivatePostgres | None = None
    redis: PrivateRedis | None = None
    processes: dict[str, Managed] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    database_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    world: dict[str, object] = field(default_factory=dict)
    _redis_client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.server = f"bench-{self.kind}"
        self.folder.mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_SETTINGS}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "smtpadmin.settings",
                "SMTPADMIN_VAR_DIR": str(self.folder / "var"),
                "SECRET_KEY": "bench-only",
                # Nothing may leave the machine: a closed loopback port as the resolver.
                "SMTPADMIN_DNS_SERVERS": f"127.0.0.1:{free_port()}",
                "PYTHONUNBUFFERED": "1",
                "PATH": f"{Path(self.python).parent}:{env.get('PATH', '')}",
            }
        )
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.redis is not None:
            env["CELERY_BROKER_URL"] = self.redis.url
        return env

    def prepare(self) -> None:
        """Database, broker, schema and organization (nothing runs yet)."""
        if self.kind == "postgres":
            self.postgres = PrivatePostgres(self.folder / "postgres").start()
            self.redis = PrivateRedis(self.folder / "redis").start()
            self.database_url = self.postgres.create_database("bench_relay")
        self.env = self.environment()
        self._run([self.python, "manage.py", "migrate", "--noinput"], "migrate")
        out = self._run(
            [
                self.python,
                "-m",
                "bench.relay_world",
                self.server,
                str(self.port),
                str(self.sink_port),
                BENCH_USER,
                BENCH_PASSWORD,
            ],
            "world",
        )
        self.world = json.loads(out.strip().splitlines()[-1])

    def run_python(self, arguments: list[str], what: str) -> str:
        """A Python program of the project against this setup's database (its output)."""
        return self._run([self.python, *arguments], what)

    def _run(self, command: list[str], what: str) -> str:
        result = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=900
        )
        if result.returncode != 0:
            raise RuntimeError(f"{self.kind}: {what} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def _spawn(self, name: str, command: list[str]) -> Managed:
        log = self.folder / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        managed = Managed(name, process, log)
        self.processes[name] = managed
        self.commands[name] = command
        return managed

    def start(self) -> None:
        procfile = procfile_commands(PROCFILE.read_text())
        relay = self._spawn("relay", relay_command(procfile, self.python, self.server))
        wait_listening(self.port, 120, relay.process)
        worker = self._spawn("worker", runnable(procfile["worker"], self.python))
        beat = self._spawn("beat", runnable(procfile["beat"], self.python))
        wait_for_text(worker, " ready.", 120)
        wait_for_text(beat, "beat: Starting", 120)

    def roots(self) -> dict[str, list[int]]:
        """The process trees whose CPU counts, by role."""
        roots = {name: [m.process.pid] for name, m in self.processes.items()}
        if self.postgres is not None:
            roots["postgres"] = [self.postgres.pid()]
        if self.redis is not None:
            roots["redis"] = [self.redis.pid()]
        return roots

    def broker_folder(self) -> Path:
        """The embedded broker's queue folder (settings: <SMTPADMIN_VAR_DIR>/broker/queue)."""
        return self.folder / "var" / "broker" / "queue"

    def queue_depth(self) -> int:
        """Tasks waiting on the broker now: the lists of the private Redis, or the task files
        of the embedded broker's queue folder."""
        if self.redis is None:
            return folder_depth(self.broker_folder())
        if self._redis_client is None:
            import redis

            self._redis_client = redis.Redis.from_url(self.redis.url)
        return redis_depth(self._redis_client)

    def relay_processes(self) -> list[str]:
        """What runs as the relay: the command line of each process of its tree."""
        relay = self.processes.get("relay")
        if relay is None:
            return []
        lines = []
        for pid in procstat.tree(procstat.snapshot(), relay.process.pid):
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                lines.append(
                    " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
                )
        return lines

    def stop(self) -> None:
        if self._redis_client is not None:
            self._redis_client.close()
            self._redis_client = None
        for name in ("beat", "worker", "relay"):
            managed = self.processes.pop(name, None)
            if managed is not None:
                managed.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


def wait_for_text(managed: Managed, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in managed.text():
        if managed.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{managed.name} did not start:\n{managed.text()[-3000:]}")
        time.sleep(0.1)
