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

from relay.management.commands.runrelay import Command
from servers.models import RoutingGroup, Server, VirtualServer

pytestmark = pytest.mark.django_db


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


def test_it_logs_the_bindings_and_says_it_does_not_listen_yet(
    node1: Server, caplog: pytest.LogCaptureFixture
) -> None:
    VirtualServer.objects.create(server=node1, ip_address="127.0.0.1", port=2525)
    VirtualServer.objects.create(
        server=node1, name="Paused", port=2526, desired_state=VirtualServer.DesiredState.PAUSED
    )

    with caplog.at_level(logging.INFO, logger="relay.runrelay"):
        call_command("runrelay", "--once", "--server", "node1")

    assert "'Default SMTP Virtual Server'" in caplog.text
    assert "on 127.0.0.1:2525: desired state running" in caplog.text
    assert "on (All Unassigned):2526: desired state paused" in caplog.text
    assert "listeners are not implemented yet; configuration loaded" in caplog.text


def test_it_ignores_the_virtual_servers_of_other_servers(
    node1: Server, caplog: pytest.LogCaptureFixture
) -> None:
    other = Server.objects.create(name="node2", routing_group=RoutingGroup.first())
    VirtualServer.objects.create(server=other, port=2600)

    with caplog.at_level(logging.INFO, logger="relay.runrelay"):
        call_command("runrelay", "--once", "--server", "node1")

    assert ":2600" not in caplog.text
    assert "(0 virtual servers of server 'node1')" in caplog.text


def test_it_reloads_the_configuration_only_when_it_changed(node1: Server) -> None:
    vs = VirtualServer.objects.create(server=node1, port=2525)
    command = Command()
    command.server_name, command.server, command.configuration = "node1", node1, None

    assert command.load_configuration() is True
    assert command.load_configuration() is False
    vs.pause()
    assert command.load_configuration() is True
    VirtualServer.objects.create(server=node1, name="Second", port=2526)
    assert command.load_configuration() is True
    assert command.load_configuration() is False


def test_a_bad_interval_is_refused_with_a_message() -> None:
    with pytest.raises(CommandError, match="--interval"):
        call_command("runrelay", "--once", "--interval", "0")


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
            while "configuration loaded" not in log_path.read_text():
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
