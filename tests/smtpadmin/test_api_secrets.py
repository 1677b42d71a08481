"""Write-only secrets (SMTP credential and user passwords, certificate private keys, outbound
passwords of virtual servers and connectors) go in and never come out: not in lists, details,
create or update answers, error messages or the audit log, and the schema says writeOnly."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from servers.models import Certificate, SmtpCredential
from smtpadmin.models import AuditEntry
from tests.smtpadmin.test_api_permissions import (
    API,
    STRONG_PASSWORD,
    connector_payload,
    make_connector,
    make_server,
    make_virtual_server,
)

pytestmark = pytest.mark.django_db

SECRET = "Tr0ub4dor&3-never-shown"


class Recorder:
    """An API client that keeps every answer, so a test can search all of them at once."""

    def __init__(self, user: User) -> None:
        self.client = APIClient()
        self.client.force_authenticate(user)
        self.answers: list[bytes] = []

    def __getattr__(self, method: str) -> Any:
        send = getattr(self.client, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            if method != "get":
                kwargs.setdefault("format", "json")
            response = send(*args, **kwargs)
            self.answers.append(response.content)
            return response

        return call

    def read_everything(self) -> None:
        """Every list, every detail, the audit log, in JSON and in the browsable API."""
        for path in (
            "smtp-credentials",
            "certificates",
            "virtual-servers",
            "connectors",
            "users",
            "audit-log",
        ):
            listed = self.get(f"{API}{path}/")
            assert listed.status_code == 200
            for row in listed.json()["results"]:
                self.get(f"{API}{path}/{row['id']}/")
                self.get(f"{API}{path}/{row['id']}/", {"format": "api"})

    def assert_never_shown(self, *secrets: str) -> None:
        assert self.answers
        for secret in secrets:
            assert secret
            for answer in self.answers:
                assert secret.encode() not in answer, secret


@pytest.fixture
def api(full_admin: User) -> Recorder:
    return Recorder(full_admin)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _audit_values() -> str:
    return " ".join(
        f"{e.old_value} {e.new_value} {e.object_repr}" for e in AuditEntry.objects.all()
    )


def test_an_smtp_credential_password_is_never_shown(api: Recorder) -> None:
    created = api.post(f"{API}smtp-credentials/", {"username": "app", "password": SECRET})
    assert created.status_code == 201
    assert "password" not in created.json()
    assert "password_hash" not in created.json()
    pk = created.json()["id"]
    api.put(f"{API}smtp-credentials/{pk}/", {"username": "app", "password": SECRET + "2"})
    api.patch(f"{API}smtp-credentials/{pk}/", {"enabled": False})
    api.read_everything()
    stored = SmtpCredential.objects.get(pk=pk).password_hash
    api.assert_never_shown(SECRET, stored, stored.split("$")[-1], _digest(stored))
    audit = _audit_values()
    assert SECRET not in audit
    assert stored not in audit
    assert _digest(stored) not in audit
    changes = AuditEntry.objects.filter(object_id=str(pk), field="password_hash")
    assert {e.new_value for e in changes} == {"changed"}
    assert {e.old_value for e in changes} == {""}


def test_a_patch_without_the_password_keeps_it_and_a_patch_with_one_changes_it(
    api: Recorder,
) -> None:
    pk = api.post(f"{API}smtp-credentials/", {"username": "app", "password": SECRET}).json()["id"]
    api.patch(f"{API}smtp-credentials/{pk}/", {"username": "app-2", "send_limit_per_hour": 10})
    credential = SmtpCredential.objects.get(pk=pk)
    assert credential.username == "app-2"
    assert credential.check_password(SECRET)

    assert api.patch(f"{API}smtp-credentials/{pk}/", {"password": "a brand new one"}).status_code
    credential.refresh_from_db()
    assert credential.check_password("a brand new one")
    assert not credential.check_password(SECRET)

    refused = api.patch(f"{API}smtp-credentials/{pk}/", {"password": ""})
    assert refused.status_code == 400
    credential.refresh_from_db()
    assert credential.check_password("a brand new one")


def test_a_new_credential_needs_a_password(api: Recorder) -> None:
    refused = api.post(f"{API}smtp-credentials/", {"username": "app"})
    assert refused.status_code == 400
    assert "password" in refused.json()


def test_a_rejected_secret_is_not_echoed_in_the_error(api: Recorder) -> None:
    api.post(f"{API}smtp-credentials/", {"username": "has space", "password": "short!"})
    api.post(f"{API}users/", {"username": "x", "password": "x" + SECRET[:3], "role": "none"})
    api.post(
        f"{API}certificates/",
        {"name": "bad", "certificate_pem": "nope", "private_key_pem": SECRET},
    )
    api.assert_never_shown("short!", "x" + SECRET[:3], SECRET)


def test_a_certificate_private_key_is_never_shown(api: Recorder) -> None:
    pem = Certificate.generate_self_signed(name="x", common_name="mail.example.com")
    key_body = pem.private_key_pem.splitlines()[1]
    created = api.post(
        f"{API}certificates/",
        {
            "name": "mail",
            "certificate_pem": pem.certificate_pem,
            "private_key_pem": pem.private_key_pem,
        },
    )
    assert created.status_code == 201, created.json()
    assert "private_key_pem" not in created.json()
    assert created.json()["subject"] == "CN=mail.example.com"
    generated = api.post(
        f"{API}certificates/",
        {"name": "gen", "generate_self_signed": True, "common_name": "gen.example.com"},
    )
    assert generated.status_code == 201
    assert "private_key_pem" not in generated.json()
    api.patch(f"{API}certificates/{created.json()['id']}/", {"name": "mail-2"})
    api.read_everything()
    generated_key = Certificate.objects.get(name="gen").private_key_pem.splitlines()[1]
    api.assert_never_shown(key_body, generated_key, "PRIVATE KEY")
    assert key_body not in _audit_values()
    entry = AuditEntry.objects.get(
        object_id=str(created.json()["id"]), field="private_key_pem", action="create"
    )
    assert entry.new_value == "changed"


@pytest.mark.parametrize("path", ["virtual-servers", "connectors"])
def test_an_outbound_password_is_never_shown(api: Recorder, path: str) -> None:
    obj = make_virtual_server() if path == "virtual-servers" else make_connector()
    url = f"{API}{path}/{obj.pk}/"
    assert api.get(url).json()["has_outbound_password"] is False
    changed = api.patch(
        url, {"outbound_auth": "basic", "outbound_username": "relay", "outbound_password": SECRET}
    )
    assert changed.status_code == 200, changed.json()
    assert changed.json()["has_outbound_password"] is True
    assert "outbound_password" not in changed.json()
    api.patch(url, {"outbound_username": "relay-2"})
    assert type(obj).objects.get(pk=obj.pk).outbound_password == SECRET
    api.read_everything()
    api.assert_never_shown(SECRET, _digest(SECRET))
    assert SECRET not in _audit_values()
    assert _digest(SECRET) not in _audit_values()
    entry = AuditEntry.objects.get(object_id=str(obj.pk), field="outbound_password")
    assert (entry.old_value, entry.new_value) == ("", "changed")


def test_outbound_passwords_set_on_create_are_never_shown(api: Recorder) -> None:
    vs = api.post(
        f"{API}virtual-servers/",
        {"server": make_server().pk, "port": 25, "outbound_password": SECRET},
    )
    assert vs.status_code == 201
    connector = api.post(f"{API}connectors/", connector_payload(outbound_password=SECRET))
    assert connector.status_code == 201, connector.json()
    api.read_everything()
    api.assert_never_shown(SECRET, _digest(SECRET))
    assert set(
        AuditEntry.objects.filter(field="outbound_password").values_list("new_value", flat=True)
    ) == {"changed"}


def test_a_user_password_is_never_shown(api: Recorder) -> None:
    created = api.post(
        f"{API}users/", {"username": "newbie", "password": STRONG_PASSWORD, "role": "view_only"}
    )
    assert created.status_code == 201, created.json()
    assert "password" not in created.json()
    pk = created.json()["id"]
    api.patch(f"{API}users/{pk}/", {"password": SECRET})
    api.put(f"{API}users/{pk}/", {"username": "newbie", "role": "administrator"})
    user = User.objects.get(pk=pk)
    assert user.check_password(SECRET)
    api.read_everything()
    api.assert_never_shown(SECRET, STRONG_PASSWORD, user.password, _digest(user.password))
    audit = _audit_values()
    assert user.password not in audit
    assert SECRET not in audit
    passwords = AuditEntry.objects.filter(object_type="User", object_id=str(pk), field="password")
    assert passwords.count() == 2  # set on create, changed by the PATCH; not by the PUT
    assert {e.new_value for e in passwords} == {"changed"}
    assert {e.old_value for e in passwords} == {""}


def test_the_schema_marks_every_secret_write_only(api: Recorder) -> None:
    schema = api.get("/api/schema/", {"format": "json"}).json()["components"]["schemas"]
    for component, field in [
        ("SmtpCredential", "password"),
        ("Certificate", "private_key_pem"),
        ("VirtualServer", "outbound_password"),
        ("Connector", "outbound_password"),
        ("User", "password"),
    ]:
        assert field not in schema[component]["properties"], component
        # Certificates and virtual servers are changed with their own request bodies (no
        # create-only fields).
        update = {"Certificate": "CertificateUpdate", "VirtualServer": "VirtualServerUpdate"}
        changed = update.get(component, component)
        for request in (f"{component}Request", f"{changed}Request", f"Patched{changed}Request"):
            assert schema[request]["properties"][field]["writeOnly"] is True, request
    for component in ("SmtpCredential", "SmtpCredentialRequest"):
        assert "password_hash" not in schema[component]["properties"]
