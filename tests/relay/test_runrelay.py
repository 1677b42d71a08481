"""The relay worker skeleton: registration, heartbeat, configuration log, clean stop."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from servers.models import RoutingGroup, Server, VirtualServer
from tests.relay.harness import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def node1() -> Server:
    return Server.objects.create(name="node1", routing_group=RoutingGroup.first())


def test_it_registers_its_server_and_writes_a_heartbeat() -> None:
    call_command("runrelay", "--once", "--server", "node1")

    server = Server.objects.get(name="node1")
    assert server.routing_group == RoutingGroup.first()
    assert server.last_seen is not None
    assert server.version
    assert server.status == Server.Status.RUNNING


def test_it_runs_as_the_configured_server_by_default(settings: Any) -> None:
    settings.SMTPADMIN_SERVER_NAME = "from-settings"

    call_command("runrelay", "--once")

    assert Server.objects.filter(name="from-settings", last_seen__isnull=False).exists()


def test_it_binds_the_virtual_servers_of_its_server_once(
    node1: Server, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    VirtualServer.objects.create(server=node1, ip_address="127.0.0.1", port=port)
    other = Server.objects.create(name="node2", routing_group=RoutingGroup.first())
    elsewhere = VirtualServer.objects.create(server=other, ip_address="127.0.0.1", port=free_port())

    with caplog.at_level(logging.INFO, logger="relay.smtp"):
        call_command("runrelay", "--once", "--server", "node1")

    assert f"'Default SMTP Virtual Server' listening on 127.0.0.1:{port}" in caplog.text
    assert str(elsewhere.port) not in caplog.text
    elsewhere.refresh_from_db()
    assert elsewhere.state == VirtualServer.State.UNKNOWN


def test_a_bad_interval_is_refused_with_a_message() -> None:
    with pytest.raises(CommandError, match="--interval"):
        call_command("runrelay", "--once", "--interval", "0")


def test_a_negative_process_count_is_refused_with_a_message() -> None:
    with pytest.raises(CommandError, match="--processes"):
        call_command("runrelay", "--once", "--processes", "-1")


def test_once_is_one_pass_in_this_process_whatever_the_process_count(
    node1: Server, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    VirtualServer.objects.create(server=node1, ip_address="127.0.0.1", port=port)

    with caplog.at_level(logging.INFO):
        call_command("runrelay", "--once", "--server", "node1", "--processes", "2")

    assert f"listening on 127.0.0.1:{port}" in caplog.text
    assert "intake process" not in caplog.text


def test_it_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """A real process: it starts, loads the configuration, and exits 0 on SIGTERM."""
    environ = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.sqlite3'}",
        "SMTPADMIN_VAR_DIR": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
    }
    manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
    subprocess.run(
        [*manage, "migrate", "--noinput", "-v", "0"], env=environ, check=True, timeout=120
    )
    log_path = tmp_path / "runrelay.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*manage, "runrelay", "--server", "node9", "--interval", "1"],
            env=environ,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while "runrelay" not in log_path.read_text() or "started" not in log_path.read_text():
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "received SIGTERM; stopping" in log_path.read_text()
