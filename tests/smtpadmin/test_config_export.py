"""``manage.py exportconfig``: the whole configuration, stable, by natural keys, no runtime
data, every configuration field of every registered model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.utils import timezone

from servers.models import Server, SmtpCredential, VirtualServer
from smtpadmin import configio
from smtpadmin.registry import config_sections
from tests.smtpadmin.config_world import document, export, make_world

pytestmark = pytest.mark.django_db


def test_two_exports_are_equal_and_sorted() -> None:
    make_world()
    first, second = export(), export()
    assert first == second
    data = json.loads(first)
    # Keys sorted at every level below the section list, indent 2.
    assert first == json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    for section in config_sections.sections:
        rows = data["sections"][section.name]
        for row in rows if isinstance(rows, list) else [rows]:
            assert list(row) == sorted(row)
    names = [row["name"] for row in data["sections"]["servers"]]
    assert names == sorted(names) == ["mercury", "venus"]
    rules = [row["order"] for row in data["sections"]["reply_rules"]]
    assert rules == sorted(rules)  # numerically: 10, 15, ... 900, 910
    # Sections in dependency order: what is referred to comes first.
    assert list(data["sections"]) == [s.name for s in config_sections.sections]
    assert list(data["sections"])[:3] == ["organization", "routing_groups", "servers"]


def test_header_and_natural_keys() -> None:
    make_world()
    data = document()
    assert (data["format"], data["version"], data["encryption"]) == (configio.FORMAT, 1, None)
    sections = data["sections"]
    front = next(v for v in sections["virtual_servers"] if v["name"] == "Front")
    assert front["server"] == "mercury" and front["certificate"] == "mail"
    internet = next(c for c in sections["connectors"] if c["name"] == "Internet")
    assert internet["bridgeheads"] == [["mercury", "Front"], ["venus", "Back"]]
    assert internet["routing_group"] == "First Routing Group"
    assert internet["address_spaces"] == [{"cost": 5, "domain": "*", "type": "SMTP"}]
    assert sections["mailboxes"][0]["domain"] == "example.com"
    assert sections["smtp_credentials"][0]["virtual_servers"] == [["mercury", "Front"]]
    assert sections["organization"]["name"] == "Contoso"
    # No database id anywhere.
    text = json.dumps(sections)
    assert '"id"' not in text and '"pk"' not in text


def test_runtime_data_timestamps_and_secrets_are_left_out() -> None:
    world = make_world()
    Server.objects.filter(name="mercury").update(version="9.9", last_seen=timezone.now())
    VirtualServer.objects.filter(pk=world["front"].pk).update(state="running")
    SmtpCredential.objects.update(failed_logins=3)
    text = export()
    sections = json.loads(text)["sections"]
    server = sections["servers"][0]
    assert {"version", "address", "last_seen", "created_at"}.isdisjoint(server)
    front = next(v for v in sections["virtual_servers"] if v["name"] == "Front")
    assert {"state", "state_reason", "state_changed_at", "modified_at"}.isdisjoint(front)
    assert "outbound_password" not in front
    assert "password_hash" not in sections["smtp_credentials"][0]
    assert "private_key_pem" not in sections["certificates"][0]
    assert "created_at" not in sections["reply_rules"][0]
    for secret in ("outbound secret", "partner secret", "PRIVATE KEY", "pbkdf2"):
        assert secret not in text


def _left_out(section: Any) -> set[str]:
    model = section.model
    automatic = {
        f.name
        for f in model._meta.concrete_fields
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    }
    return {
        "id",
        *getattr(model, "runtime_fields", ()),
        *getattr(model, "audit_secret_fields", ()),
        *section.skip,
        *automatic,
    }


def test_every_configuration_field_of_every_model_is_exported() -> None:
    """A field added to a model is exported without touching the engine: every field of every
    registered model is in its rows unless it is runtime, secret, automatic or skipped."""
    make_world()
    sections = document()["sections"]
    for section in config_sections.sections:
        model = section.model
        every = {f.name for f in [*model._meta.concrete_fields, *model._meta.many_to_many]}
        rows = sections[section.name]
        row = rows if isinstance(rows, dict) else rows[0]
        missing = every - _left_out(section) - set(row)
        assert not missing, f"{section.name} does not export {sorted(missing)}"
        for child in section.children:
            child_every = {f.name for f in child.model._meta.concrete_fields}
            child_missing = child_every - {"id", child.parent_field} - set(row[child.name][0])
            assert not child_missing, f"{section.name}.{child.name}: {sorted(child_missing)}"


def test_every_model_a_section_refers_to_is_exported() -> None:
    assert configio.check_references() == []
    names = {s.name for s in config_sections.sections}
    assert {
        "organization",
        "routing_groups",
        "servers",
        "certificates",
        "virtual_servers",
        "accepted_domains",
        "mailboxes",
        "smtp_credentials",
        "connectors",
        "reply_rules",
    } <= names


def test_exportconfig_secrets_need_a_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.management.base import CommandError

    monkeypatch.delenv(configio.PASSPHRASE_ENV, raising=False)
    with pytest.raises(CommandError, match="passphrase"):
        export("--secrets")
