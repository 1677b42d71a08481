"""Secrets in a configuration file: absent unless asked for, then encrypted with a
passphrase; a wrong passphrase is refused; an absent secret leaves the stored one alone."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from connectors.models import Connector
from servers.models import Certificate, SmtpCredential, VirtualServer
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
SECRET_TEXTS = ("outbound secret", "partner secret", "PRIVATE KEY", "pbkdf2_sha256", "md5$")


@pytest.fixture
def full() -> User:
    return make_person("fiona", Role.FULL)


@pytest.fixture
def passphrase_file(tmp_path: Any) -> str:
    path = tmp_path / "passphrase"
    path.write_text(PASSPHRASE + "\n")
    return str(path)


def _secrets() -> dict[str, str]:
    return {
        "credential": SmtpCredential.objects.get(username="scanner").password_hash,
        "front": VirtualServer.objects.get(name="Front").outbound_password,
        "partner": Connector.objects.get(name="Partner").outbound_password,
        "key": Certificate.objects.get(name="mail").private_key_pem,
    }


def test_absent_by_default_and_encrypted_when_asked(passphrase_file: str) -> None:
    make_world()
    plain = export()
    assert not any(s in plain for s in SECRET_TEXTS)
    text = export("--secrets", "--passphrase-file", passphrase_file)
    assert not any(s in text for s in SECRET_TEXTS)
    data = json.loads(text)
    header = data["encryption"]
    assert (header["cipher"], header["kdf"]) == ("fernet", "scrypt") and header["salt"]
    token = row(data, "connectors", "name", "Partner")["outbound_password"]["encrypted"]
    fernet = configio._opened(header, PASSPHRASE)
    assert fernet.decrypt(token.encode()).decode() == "partner secret"
    assert "private_key_pem" in rows(data, "certificates")[0]
    assert "password_hash" in rows(data, "smtp_credentials")[0]


def test_round_trip_with_the_right_passphrase(
    tmp_path: Any, full: User, passphrase_file: str
) -> None:
    make_world()
    before = _secrets()
    path = write(tmp_path, export("--secrets", "--passphrase-file", passphrase_file))
    wipe()
    run_import(path, "--as", "fiona", "--passphrase-file", passphrase_file)
    assert _secrets() == before
    assert SmtpCredential.objects.get(username="scanner").check_password("scanner secret 1")


def test_a_wrong_or_missing_passphrase_is_refused(
    tmp_path: Any, full: User, passphrase_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_world()
    path = write(tmp_path, export("--secrets", "--passphrase-file", passphrase_file))
    before, entries = export(), AuditEntry.objects.count()
    monkeypatch.delenv(configio.PASSPHRASE_ENV, raising=False)
    for args, message in (
        (("--passphrase-file", write(tmp_path, "guess\n", "wrong")), "Wrong passphrase"),
        ((), "give the passphrase"),
    ):
        err = io.StringIO()
        with pytest.raises(CommandError, match="refused"):
            call_command("importconfig", path, "--as", "fiona", *args, stderr=err)
        assert message in err.getvalue()
    monkeypatch.setenv(configio.PASSPHRASE_ENV, "another guess")
    with pytest.raises(configio.ConfigError, match="Wrong passphrase"):
        configio.read(Path(path).read_bytes(), configio.passphrase_from(None))
    assert export() == before and AuditEntry.objects.count() == entries


def test_an_absent_secret_leaves_the_stored_one(tmp_path: Any, full: User) -> None:
    make_world()
    before = _secrets()
    data = document()
    row(data, "connectors", "name", "Partner")["outbound_username"] = "partner2"
    run_import(write(tmp_path, data), "--as", "fiona")
    assert Connector.objects.get(name="Partner").outbound_username == "partner2"
    assert _secrets() == before


def test_a_changed_secret_is_shown_and_audited_as_changed(
    tmp_path: Any, full: User, passphrase_file: str
) -> None:
    make_world()
    path = write(tmp_path, export("--secrets", "--passphrase-file", passphrase_file))
    Connector.objects.filter(name="Partner").update(outbound_password="typed since")
    out, _ = run_import(path, "--as", "fiona", "--passphrase-file", passphrase_file)
    assert "  ~ change Partner\n      outbound_password: changed\n" in out
    assert "partner secret" not in out and "typed since" not in out
    assert Connector.objects.get(name="Partner").outbound_password == "partner secret"
    entry = AuditEntry.objects.get(field="outbound_password")
    assert (entry.old_value, entry.new_value) == ("", "changed")


def test_a_new_object_without_its_secret_is_refused(tmp_path: Any, full: User) -> None:
    make_world()
    data = document()
    rows(data, "smtp_credentials").append(
        {"enabled": True, "send_limit_per_hour": None, "username": "printer", "virtual_servers": []}
    )
    err = io.StringIO()
    with pytest.raises(CommandError, match="refused"):
        call_command("importconfig", write(tmp_path, data), "--as", "fiona", stderr=err)
    assert (
        "smtp_credentials[printer].password_hash: a new object needs its secret; "
        "export with --secrets." in err.getvalue()
    )
    assert not SmtpCredential.objects.filter(username="printer").exists()
    # The plan says which secrets a new object would lack.
    plan = configio.plan(configio.read(json.dumps(data))).text()
    assert "  + create printer\n      password_hash: not in the file\n" in plan
    # A plain (unencrypted) secret is not read either.
    rows(data, "smtp_credentials")[-1]["password_hash"] = "pbkdf2_sha256$1$salt$hash"
    with pytest.raises(configio.ConfigError, match="secrets are read only encrypted"):
        configio.read(json.dumps(data))
