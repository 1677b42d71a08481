"""Private PostgreSQL and Redis servers for the ledger fault tests: started in a temporary
folder on free loopback ports, so that restarting or flushing them harms nobody else."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import redis

from tests.relay.harness import free_port

PG_USER = "postgres"  # initdb refuses to run as root: the cluster is the postgres user's


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL binaries (/usr/lib/postgresql/<version>/bin)."""
    versions = [Path(p).parent.parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    numbered = sorted((int(v.name), v) for v in versions if v.name.isdigit())
    return numbered[-1][1] / "bin" if numbered else None


def redis_bin() -> str | None:
    return shutil.which("redis-server")


def missing_services() -> str:
    """Why the private services cannot run here ("" when they can)."""
    reasons = []
    if postgres_bin() is None:
        reasons.append("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    if redis_bin() is None:
        reasons.append("no redis-server on PATH")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        reasons.append("no runuser to run PostgreSQL as the postgres user")
    return "; ".join(reasons)


def _as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *command] if os.geteuid() == 0 else list(command)


class PrivatePostgres:
    """One PostgreSQL cluster (initdb in a temporary folder) on 127.0.0.1:<free port>.
    ``fsync`` off speeds the fast variant up; it only matters if the machine itself crashes,
    which no test does (a stopped or killed server still finds its WAL in the page cache)."""

    def __init__(self, *, fsync: bool) -> None:
        binaries = postgres_bin()
        assert binaries is not None
        self.bin: Path = binaries
        self.fsync = fsync
        self.folder = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.folder, PG_USER, PG_USER)

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            _as_postgres(str(self.bin / command[0]), *command[1:]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout}\n{result.stderr}")

    def start(self) -> PrivatePostgres:
        if not self.data.exists():
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                PG_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200 "
            "-c shared_buffers=32MB"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgres://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, dbname=database, autocommit=True
        )

    def execute(self, sql: str, database: str = "postgres") -> None:
        with self.connect(database) as connection:
            connection.execute(sql)

    def query(self, sql: str, database: str) -> list[tuple[Any, ...]]:
        with self.connect(database) as connection:
            return list(connection.execute(sql).fetchall())


class PrivateRedis:
    """One redis-server without persistence on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ledger-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> PrivateRedis:
        binary = redis_bin()
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
