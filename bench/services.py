"""The processes the bench starts besides the systems under test: a private PostgreSQL and
Redis (as tests/ledger does, so that their CPU is attributable and nothing else on the machine
is touched) and smtp-sink, the one sink every system delivers to, which counts messages."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

PG_USER = "postgres"  # initdb refuses to run as root: the cluster is the postgres user's
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(
    port: int, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the process for port {port} exited") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL binaries (/usr/lib/postgresql/<version>/bin)."""
    versions = [Path(p).parent.parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    numbered = sorted((int(v.name), v) for v in versions if v.name.isdigit())
    return numbered[-1][1] / "bin" if numbered else None


def missing_binaries() -> dict[str, str]:
    """What cannot run here, by component (empty when everything can)."""
    missing: dict[str, str] = {}
    if postgres_bin() is None:
        missing["postgres"] = "no PostgreSQL binaries under /usr/lib/postgresql/*/bin"
    if shutil.which("redis-server") is None:
        missing["redis"] = "no redis-server on PATH"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing["postgres"] = "no runuser to run PostgreSQL as the postgres user"
    for tool in (SMTP_SINK, SMTP_SOURCE):
        if not Path(tool).exists():
            missing[Path(tool).name] = f"no {tool} (apt-get install postfix)"
    return missing


def _as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *command] if os.geteuid() == 0 else list(command)


class PrivatePostgres:
    """A PostgreSQL cluster (initdb in a temporary folder) on 127.0.0.1:<free port>, with
    fsync on as in production."""

    def __init__(self, folder: Path) -> None:
        binaries = postgres_bin()
        if binaries is None:
            raise RuntimeError("no PostgreSQL binaries")
        self.bin = binaries
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.folder, PG_USER, PG_USER)
        self.started = False

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            _as_postgres(str(self.bin / command[0]), *command[1:]),
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout}\n{result.stderr}")

    def start(self) -> PrivatePostgres:
        self._run("initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            "-c max_connections=300 -c shared_buffers=64MB"
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
        self.started = True
        return self

    def pid(self) -> int:
        """The postmaster (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def create_database(self, name: str) -> str:
        result = subprocess.run(
            _as_postgres(
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-d",
                "postgres",
                "-c",
                f"CREATE DATABASE {name}",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE failed: {result.stderr}")
        return f"postgres://{PG_USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            self.started = False


class PrivateRedis:
    """A redis-server without persistence on 127.0.0.1:<free port>."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("no redis-server")
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
        wait_listening(self.port, 20, self.process)
        return self

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


_COUNTER = re.compile(rb"mesg=(\d+)")


def last_message_count(output: bytes) -> int | None:
    """The newest message counter in smtp-sink -c output ("sess=N quit=N mesg=N" records
    separated by carriage returns); None when there is none yet."""
    found = _COUNTER.findall(output)
    return int(found[-1]) if found else None


class CountingSink:
    """smtp-sink on a free loopback port, counting the messages it received (-c): the one
    sink of every system, so the end-to-end figures share the same receiving end."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.count = 0
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def start(self) -> CountingSink:
        command = [SMTP_SINK, "-c", "-m", "1024", f"127.0.0.1:{self.port}", "1024"]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]  # smtp-sink refuses to keep root's privileges
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, name="sink-counter", daemon=True)
        self._reader.start()
        wait_listening(self.port, 10, self.process)
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        tail = b""
        while True:
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                return
            tail = (tail + chunk)[-256:]
            count = last_message_count(tail)
            if count is not None:
                with self._lock:
                    self.count = count

    def messages(self) -> int:
        with self._lock:
            return self.count

    def wait_for(self, target: int, timeout: float) -> bool:
        """Until the sink has counted ``target`` messages in all; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.messages() < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def settle(self, quiet: float = 1.0, timeout: float = 300.0) -> int:
        """Wait until nothing arrived for ``quiet`` seconds (stragglers of a scenario)."""
        deadline = time.monotonic() + timeout
        last, since = self.messages(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.messages()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; nothing when it has already exited."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def temp_folder(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)  # the postfix and postgres users must reach their folders below
    return folder
