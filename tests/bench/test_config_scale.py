"""bench/config_scale.py: ``fill`` builds the configuration it promises (other benchmarks import
it), routes as intended, grows by the difference, and the script runs with tiny numbers. As
with every benchmark, nothing here looks at the speed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.config_scale import (
    CONNECTOR_PREFIX,
    SERVER_PREFIX,
    connector_recipient,
    fill,
    mailbox_address,
)
from connectors.models import AddressSpace, Connector
from connectors.routing import resolve
from connectors.snapshot import MessageFacts
from connectors.topology import build_topology
from servers.models import Mailbox, VirtualServer
from tests.connectors.test_topology import make_server, make_virtual_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_fill_builds_the_configuration_and_routes_each_connector_domain() -> None:
    relay_vs = make_virtual_server(make_server("relay"))

    fill(connectors=7, mailboxes=9, virtual_servers=13)

    scale = Connector.objects.filter(name__startswith=CONNECTOR_PREFIX)
    assert scale.count() == 7
    assert AddressSpace.objects.filter(connector__in=scale).count() == 7
    assert all(list(c.bridgeheads.all()) == [relay_vs] for c in scale)
    assert scale.filter(use_dns=False).exclude(smart_hosts="").count() == 3  # every third
    assert Mailbox.objects.count() == 9
    assert VirtualServer.objects.count() == 13
    # The relay's server keeps its one listener; the others are elsewhere, ten a server.
    assert VirtualServer.objects.filter(server=relay_vs.server).count() == 1
    assert VirtualServer.objects.filter(server__name__startswith=SERVER_PREFIX).count() == 12

    topology = build_topology(VirtualServer.objects.get(pk=relay_vs.pk))
    for number, connector in enumerate(scale.order_by("name")):
        route = resolve(connector_recipient(number), "a@b.test", MessageFacts(), topology)
        assert route.connector_name == connector.name
        assert route.bridgehead_virtual_server_id == relay_vs.pk
    assert resolve(mailbox_address(8), "a@b.test", MessageFacts(), topology).kind == "local"


@pytest.mark.django_db
def test_fill_again_adds_only_the_difference() -> None:
    make_virtual_server(make_server("relay"))
    fill(connectors=4, mailboxes=5, virtual_servers=3)

    fill(connectors=6, mailboxes=8, virtual_servers=25)
    fill(connectors=6, mailboxes=8, virtual_servers=25)

    assert Connector.objects.filter(name__startswith=CONNECTOR_PREFIX).count() == 6
    assert Mailbox.objects.count() == 8
    assert VirtualServer.objects.count() == 25
    assert len(set(Mailbox.objects.values_list("address", flat=True))) == 8


def run_script(name: str, *args: str, timeout: float) -> tuple[str, str]:
    """Runs ``bench/<name>`` on a throw-away SQLite database; its stdout, and the whole
    output for assertion messages (the script must exit 0)."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args, "--quick", "--database-url", ""],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    assert completed.returncode == 0, output
    return completed.stdout, output


def test_the_config_scale_bench_runs_and_reports_ratios() -> None:
    stdout, output = run_script(
        "config_scale.py",
        *["--levels", "2,20", "--mailboxes", "30", "--virtual-servers", "4"],
        timeout=180,
    )

    assert re.search(
        r"^ratio to 2 connectors at 20: resolve \d+\.\d+, API \d+\.\d+, loader pass \d+\.\d+",
        stdout,
        re.M,
    ), output


def test_the_console_scale_bench_times_every_console_page(tmp_path: Path) -> None:
    figures = tmp_path / "console.json"
    stdout, output = run_script(
        "console_scale.py", "--levels", "2,12", "--json", str(figures), timeout=300
    )
    assert re.search(r"^ratio 12 / 2 connectors: median over pages x\d+\.\d+", stdout, re.M), output
    result = json.loads(figures.read_text())
    assert result["levels"] == [2, 12]
    # The tree's branch, the connector's sheet (a sample object), a list, the organization.
    for page in ("smtpadmin:tree-children", "connectors:connector", "connectors:connectors"):
        assert page in result["pages"], sorted(result["pages"])
    sheet = result["pages"]["connectors:connector"]["levels"]["12"]
    assert sheet["status"] == 200 and sheet["size_bytes"] > 0 and sheet["median_ms"] > 0
    assert re.fullmatch(r"/connectors/\d+/", sheet["url"])
