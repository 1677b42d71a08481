"""Fixtures of the ledger fault tests: private PostgreSQL and Redis servers, a database
migrated once per session and copied for every test, the sink, and the rig that starts the
relay and Celery processes against them.

Without the PostgreSQL or Redis binaries the tests are skipped with the reason, unless
SMTPADMIN_REQUIRE_FAULTS=1 (CI), where that is a failure."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dnsserver import DnsServer
from tests.ledger.harness import ROOT, Rig, environment
from tests.ledger.ledger import FIGURES
from tests.ledger.services import PrivatePostgres, PrivateRedis, missing_services
from tests.relay.harness import free_port
from tests.sinks import Sink, sink

__all__ = ["ledger_rig", "private_postgres", "private_redis", "sink"]

TEMPLATE = "ledger_template"
_databases = itertools.count(1)


def soak() -> bool:
    return os.environ.get("SMTPADMIN_SOAK", "") == "1"


def require_services() -> None:
    reason = missing_services()
    if not reason:
        return
    if os.environ.get("SMTPADMIN_REQUIRE_FAULTS", "") == "1":
        pytest.fail(f"SMTPADMIN_REQUIRE_FAULTS=1 but the fault tests cannot run: {reason}")
    pytest.skip(f"ledger fault tests need private PostgreSQL and Redis: {reason}")


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of our own, with the schema migrated into a template database."""
    require_services()
    # fsync off in the fast variant (speed); the soak runs with it on.
    postgres = PrivatePostgres(fsync=soak()).start()
    try:
        postgres.execute(f"CREATE DATABASE {TEMPLATE}")
        env = {
            **os.environ,
            "DATABASE_URL": postgres.url(TEMPLATE),
            "SECRET_KEY": "test-only",
            "SMTPADMIN_VAR_DIR": tempfile.mkdtemp(prefix="ledger-migrate-"),
        }
        result = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            pytest.fail(f"migrate failed:\n{result.stdout}\n{result.stderr}")
        yield postgres
    finally:
        postgres.destroy()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    require_services()
    server = PrivateRedis().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def ledger_rig(
    private_postgres: PrivatePostgres,
    private_redis: PrivateRedis,
    sink: Callable[..., Sink],
    tmp_path: Path,
) -> Iterator[Callable[..., Rig]]:
    """``ledger_rig(drop=...)`` sets up a fresh database (a copy of the migrated template),
    the organization and the sink; the test starts the processes with ``rig.start_relay()``,
    ``rig.worker()`` and ``rig.beat()``. All of them stop afterwards."""
    dns = DnsServer().start()
    rigs: list[Rig] = []

    def build(drop: Path | None = None) -> Rig:
        database = f"ledger_{os.getpid()}_{next(_databases)}"
        private_postgres.execute(f"CREATE DATABASE {database} TEMPLATE {TEMPLATE}")
        env = environment(private_postgres, private_redis, database, tmp_path, dns.setting)
        rig = Rig(
            postgres=private_postgres,
            redis=private_redis,
            database=database,
            env=env,
            folder=tmp_path,
            drop=drop or tmp_path / "maildrop",
            sink=sink(),
            port=free_port(),
        )
        rigs.append(rig)
        world = rig.manage("world", str(rig.drop), str(rig.port), rig.sink.smart_host)
        rig.password = str(world["password"])
        return rig

    try:
        yield build
    finally:
        for rig in rigs:
            rig.stop_all()
            print(rig.logs())  # shown when the test failed
            try:
                private_postgres.execute(f"DROP DATABASE IF EXISTS {rig.database} WITH (FORCE)")
            except Exception as error:  # the cluster is gone already: nothing to keep clean
                print(f"could not drop {rig.database}: {error}")
        dns.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("ledger figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
