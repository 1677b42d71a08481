"""``manage.py importconfig``: the plan a dry run shows, applying it in one audited
transaction, a round trip through an empty database, refusal of invalid files."""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from connectors.models import AddressSpace, Connector
from connectors.routing import resolve
from connectors.snapshot import MessageFacts
from connectors.topology import build_topology
from relay.queue.rules import ReplyRule
from servers.models import AcceptedDomain, VirtualServer
from smtpadmin import configio
from smtpadmin.models import AuditEntry
from smtpadmin.roles import Role
from tests.conftest import make_person
from tests.smtpadmin.config_world import (
    PASSPHRASE,
    document,
    export,
    make_world,
    row,
    rows,
    run_import,
    wipe,
    write,
)

pytestmark = pytest.mark.django_db

SENDERS = ["someone@example.com", "", "bob@partner.example"]
RECIPIENTS = [
    "alice@example.com",
    "nobody@example.com",
    "carol@sales.corp.example.com",
    "dave@partner.example",
    "erin@eu.partner.example",
    "frank@elsewhere.example.org",
    "not an address",
]


def routes() -> list[tuple[Any, ...]]:
    """The routing simulator's answer for every sender x recipient, by names (ids change)."""
    source = VirtualServer.objects.select_related("server").get(name="Front")
    topology = build_topology(source)
    names = {vs.pk: (vs.server.name, vs.name) for vs in VirtualServer.objects.all()}
    answers = []
    for sender in SENDERS:
        for recipient in RECIPIENTS:
            route = resolve(recipient, sender, MessageFacts(), topology)
            answers.append(
                (
                    sender,
                    recipient,
                    route.kind,
                    route.connector_name,
                    route.address_space.pattern if route.address_space else None,
                    names[route.bridgehead.virtual_server_id] if route.bridgehead else None,
                    route.next_hops,
                    route.status,
                )
            )
    return answers


@pytest.fixture
def full() -> User:
    return make_person("fiona", Role.FULL)


def test_round_trip_through_an_empty_configuration(
    tmp_path: Any, full: User, monkeypatch: Any
) -> None:
    make_world()
    monkeypatch.setenv(configio.PASSPHRASE_ENV, PASSPHRASE)
    with_secrets = export("--secrets")
    first = export()
    before = routes()
    assert {r[2] for r in before} >= {"local", "connector", "reject"}
    wipe()
    assert json.loads(export())["sections"]["connectors"] == []
    out, _ = run_import(write(tmp_path, with_secrets), "--as", "fiona")
    assert "Applied:" in out
    assert export() == first
    assert routes() == before


def test_the_plan_shows_exactly_the_changes_and_apply_makes_them(tmp_path: Any, full: User) -> None:
    make_world()
    data = document()
    original = copy.deepcopy(data)
    row(data, "connectors", "name", "Partner")["smart_hosts"] = "[127.0.0.6]"
    rows(data, "routing_groups").insert(0, {"name": "Asia"})
    data["sections"]["reply_rules"] = [
        r for r in rows(data, "reply_rules") if r["pattern"] != "no such user"
    ]
    path = write(tmp_path, data)

    out, _ = run_import(path, "--dry-run")
    assert out == (
        "routing_groups:\n"
        "  + create Asia\n"
        '      name: "Asia"\n'
        "connectors:\n"
        "  ~ change Partner\n"
        '      smart_hosts: "[127.0.0.5]" -> "[127.0.0.6]"\n'
        "reply_rules:\n"
        "  - delete 50, 550, , no such user\n"
        "Plan: 1 to create, 1 to change, 1 to delete.\n"
        "Dry run: the file is valid; nothing was changed.\n"
    )
    assert document() == original  # the dry run changed nothing
    assert not AuditEntry.objects.exists()

    out, _ = run_import(path, "--as", "fiona")
    assert "Applied: 1 create, 1 change, 1 delete" in out
    assert Connector.objects.get(name="Partner").smart_hosts == "[127.0.0.6]"
    assert not ReplyRule.objects.filter(pattern="no such user").exists()
    entries = {
        (e.action, e.object_repr, e.field, e.old_value, e.new_value, e.username)
        for e in AuditEntry.objects.all()
    }
    assert entries == {
        ("create", "Asia", "", "", "", "fiona"),
        ("create", "Asia", "name", "", "Asia", "fiona"),
        ("update", "Partner", "smart_hosts", "[127.0.0.5]", "[127.0.0.6]", "fiona"),
        ("delete", "code 550 and text ~ /no such user/ -> fail", "", "", "", "fiona"),
    }
    assert document() == data
    # Applying the same file again changes nothing.
    out, _ = run_import(path, "--as", "fiona")
    assert "Plan: 0 to create, 0 to change, 0 to delete." in out


def test_nested_and_referenced_changes(tmp_path: Any, full: User) -> None:
    make_world()
    data = document()
    internet = row(data, "connectors", "name", "Internet")
    internet["bridgeheads"] = [["venus", "Back"]]
    internet["address_spaces"].append({"cost": 1, "domain": "example.net", "type": "SMTP"})
    row(data, "accepted_domains", "domain", "partner.example")["is_default"] = True
    row(data, "accepted_domains", "domain", "example.com")["is_default"] = False
    run_import(write(tmp_path, data), "--as", "fiona")
    connector = Connector.objects.get(name="Internet")
    assert [(v.server.name, v.name) for v in connector.bridgeheads.all()] == [("venus", "Back")]
    assert sorted(a.domain for a in connector.address_spaces.all()) == ["*", "example.net"]
    assert AcceptedDomain.objects.get(is_default=True).domain == "partner.example"
    assert document() == data


def test_a_renamed_virtual_server_keeps_its_binding(tmp_path: Any, full: User) -> None:
    """The new name is created where the old one listens: it waits for the old one's
    deletion, which comes after it in dependency order."""
    make_world()
    data = document()
    row(data, "virtual_servers", "name", "Front")["name"] = "Front Door"
    row(data, "connectors", "name", "Internet")["bridgeheads"] = [
        ["mercury", "Front Door"],
        ["venus", "Back"],
    ]
    data["sections"]["smtp_credentials"][0]["virtual_servers"] = [["mercury", "Front Door"]]
    data["sections"]["virtual_servers"].sort(key=lambda v: (v["server"], v["name"]))
    run_import(write(tmp_path, data), "--as", "fiona")
    door = VirtualServer.objects.get(name="Front Door")
    assert door.certificate is not None and door.certificate.name == "mail"
    assert (door.ip_address, door.port) == ("127.0.0.1", 2525)
    assert not VirtualServer.objects.filter(name="Front").exists()
    assert document() == data


def test_an_invalid_file_is_refused_with_field_errors_and_nothing_changes(
    tmp_path: Any, full: User, capsys: Any
) -> None:
    make_world()
    data = document()
    # A valid change first, so that a half-applied import would show.
    row(data, "servers", "name", "mercury")["fqdn"] = "changed.example.com"
    row(data, "connectors", "name", "Partner")["smart_hosts"] = "not a host!"
    row(data, "virtual_servers", "name", "Back")["port"] = 70000
    row(data, "connectors", "name", "Internet")["bridgeheads"] = [["pluto", "Gone"]]
    rows(data, "mailboxes").append({"address": "zed@nowhere.example", "domain": "example.com"})
    data["sections"]["routing_groups"] = [{"name": "First Routing Group"}]  # Branch in use
    before = export()
    err = io.StringIO()
    with pytest.raises(CommandError, match="refused; nothing was changed"):
        call_command("importconfig", write(tmp_path, data), "--as", "fiona", stderr=err)
    messages = err.getvalue()
    assert "connectors[Partner].smart_hosts: " in messages
    assert "virtual_servers[venus, Back].port: " in messages
    assert "connectors[Internet].bridgeheads: refers to virtual_servers[pluto, Gone]" in messages
    assert "mailboxes[zed@nowhere.example].address: " in messages
    assert "routing_groups[Branch Offices]: cannot be deleted, it is in use by" in messages
    assert export() == before
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "This is not a JSON file"),
        ('{"format": "something else", "version": 1}', "This is not a configuration file"),
        (json.dumps({"format": configio.FORMAT, "version": 99, "sections": {}}), "version 99"),
        (
            json.dumps({"format": configio.FORMAT, "version": 1, "sections": {"wombats": []}}),
            "wombats: unknown section",
        ),
        (
            json.dumps(
                {
                    "format": configio.FORMAT,
                    "version": 1,
                    "sections": {"servers": [{"name": "x", "colour": "red"}]},
                }
            ),
            "servers[x].colour: unknown field",
        ),
        (
            json.dumps(
                {
                    "format": configio.FORMAT,
                    "version": 1,
                    "sections": {"servers": [{"name": {"x": 1}}]},
                }
            ),
            "servers[#1]: a key is made of text and numbers.",
        ),
        (
            json.dumps({"format": configio.FORMAT, "version": 1, "sections": {"servers": {}}}),
            "servers: a list of objects is expected.",
        ),
    ],
)
def test_malformed_files_are_refused(tmp_path: Any, text: str, message: str) -> None:
    with pytest.raises(configio.ConfigError, match=re.escape(message)):
        configio.read(text)
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("importconfig", write(tmp_path, text), "--dry-run", stderr=err)
    assert message in err.getvalue()


@pytest.mark.e2e  # starts manage.py
def test_the_exit_code_is_1(tmp_path: Any) -> None:
    path = write(tmp_path, "{not json")
    result = subprocess.run(
        [sys.executable, "manage.py", "importconfig", path, "--dry-run"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "This is not a JSON file" in result.stderr
    assert "Traceback" not in result.stderr


def test_applying_needs_a_full_administrator(tmp_path: Any, full: User) -> None:
    make_world()
    path = write(tmp_path, document())
    with pytest.raises(CommandError, match="--as"):
        run_import(path)
    make_person("adam", Role.ADMINISTRATOR)
    with pytest.raises(CommandError, match="not a Full Administrator"):
        run_import(path, "--as", "adam")
    with pytest.raises(CommandError, match="No active user"):
        run_import(path, "--as", "nobody")
    assert run_import(path, "--dry-run")[0].endswith("nothing was changed.\n")
    assert AddressSpace.objects.count() == 3
