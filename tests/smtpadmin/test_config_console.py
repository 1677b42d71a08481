"""The console's Import Configuration page (upload -> plan -> Apply -> result) for a Full
Administrator, 403 for every other role; the export download and the API export."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from connectors.models import Connector
from smtpadmin import configio
from smtpadmin.models import AuditEntry
from smtpadmin.roles import Role
from tests.conftest import make_person
from tests.smtpadmin.config_world import PASSPHRASE, document, export, make_world, row

pytestmark = pytest.mark.django_db
IMPORT = "/administration/configuration/import/"
EXPORT = "/administration/configuration/export/"


def browser(user: User) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf(client: Client) -> str:
    return str(client.cookies["csrftoken"].value)


def upload(client: Client, data: dict[str, Any] | str, passphrase: str = "") -> Any:
    page = client.get(IMPORT)
    assert page.status_code == 200
    text = data if isinstance(data, str) else json.dumps(data)
    return client.post(
        IMPORT,
        {
            "file": SimpleUploadedFile("org.json", text.encode(), "application/json"),
            "passphrase": passphrase,
            "csrfmiddlewaretoken": csrf(client),
        },
    )


def test_upload_preview_apply_for_a_full_administrator() -> None:
    make_world()
    client = browser(make_person("fiona", Role.FULL))
    data = document()
    row(data, "connectors", "name", "Partner")["smart_hosts"] = "[127.0.0.6]"
    preview = upload(client, data)
    assert preview.status_code == 200
    html = preview.content.decode()
    assert "Plan: 0 to create, 1 to change, 0 to delete" in html
    assert "connectors[Partner]" in html and "smart_hosts" in html
    assert '&quot;[127.0.0.5]&quot;</span> → <span class="new">&quot;[127.0.0.6]&quot;' in html
    assert Connector.objects.get(name="Partner").smart_hosts == "[127.0.0.5]"  # not yet
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html)
    assert digest is not None

    # Apply without the CSRF token is refused; with it, the previewed file is applied.
    assert client.post(IMPORT, {"digest": digest[1]}).status_code == 403
    done = client.post(IMPORT, {"digest": digest[1], "csrfmiddlewaretoken": csrf(client)})
    assert done.status_code == 200
    text = done.content.decode()
    assert "Applied: 0 to create, 1 to change, 0 to delete; 1 audit entry." in text
    assert 'href="/administration/audit-log/"' in text
    assert Connector.objects.get(name="Partner").smart_hosts == "[127.0.0.6]"
    entry = AuditEntry.objects.get()
    assert (entry.username, entry.field, entry.new_value) == ("fiona", "smart_hosts", "[127.0.0.6]")

    # The digest applied once is not pending any more: a second Apply is refused.
    again = client.post(IMPORT, {"digest": digest[1], "csrfmiddlewaretoken": csrf(client)})
    assert again.status_code == 400 and b"upload it again" in again.content
    assert AuditEntry.objects.count() == 1


def test_the_preview_shows_created_and_deleted_objects() -> None:
    make_world()
    client = browser(make_person("fiona", Role.FULL))
    data = document()
    data["sections"]["routing_groups"].insert(0, {"name": "Asia"})
    data["sections"]["reply_rules"] = [
        r for r in data["sections"]["reply_rules"] if r["pattern"] != "no such user"
    ]
    html = upload(client, data).content.decode()
    assert "Plan: 1 to create, 0 to change, 1 to delete" in html
    assert '<tr class="create">' in html and "routing_groups[Asia]" in html
    assert '<tr class="delete">' in html and "reply_rules[50, 550, , no such user]" in html


def test_apply_uses_the_previewed_file_only() -> None:
    make_world()
    client = browser(make_person("fiona", Role.FULL))
    data = document()
    row(data, "connectors", "name", "Partner")["smart_hosts"] = "[127.0.0.6]"
    assert upload(client, data).status_code == 200
    forged = client.post(IMPORT, {"digest": "0" * 64, "csrfmiddlewaretoken": csrf(client)})
    assert forged.status_code == 400
    assert Connector.objects.get(name="Partner").smart_hosts == "[127.0.0.5]"


def test_an_invalid_file_shows_its_errors_and_changes_nothing() -> None:
    make_world()
    client = browser(make_person("fiona", Role.FULL))
    data = document()
    row(data, "connectors", "name", "Partner")["smart_hosts"] = "not a host!"
    response = upload(client, data)
    assert response.status_code == 400
    assert b"connectors[Partner].smart_hosts: " in response.content
    assert b"nothing was changed" in response.content
    assert upload(client, "{broken").status_code == 400
    assert not AuditEntry.objects.exists()


def test_an_encrypted_file_needs_its_passphrase_again_to_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_world()
    monkeypatch.setenv(configio.PASSPHRASE_ENV, PASSPHRASE)
    text = export("--secrets")
    Connector.objects.filter(name="Partner").update(outbound_password="typed since")
    client = browser(make_person("fiona", Role.FULL))
    assert b"Wrong passphrase" in upload(client, text, "guess").content
    preview = upload(client, text, PASSPHRASE)
    html = preview.content.decode()
    assert "outbound_password" in html and "typed since" not in html
    assert "partner secret" not in html
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html)
    assert digest is not None
    refused = client.post(IMPORT, {"digest": digest[1], "csrfmiddlewaretoken": csrf(client)})
    assert refused.status_code == 400 and b"give the passphrase" in refused.content
    done = client.post(
        IMPORT,
        {"digest": digest[1], "passphrase": PASSPHRASE, "csrfmiddlewaretoken": csrf(client)},
    )
    assert done.status_code == 200
    assert Connector.objects.get(name="Partner").outbound_password == "partner secret"


@pytest.mark.parametrize("role", [Role.VIEW_ONLY, Role.ADMINISTRATOR, Role.NONE])
def test_other_roles_get_403(role: Role) -> None:
    make_world()
    client = browser(make_person("someone", role))
    assert client.get(IMPORT).status_code == 403
    client_no_csrf = Client()
    client_no_csrf.force_login(make_person("other", role))
    response = client_no_csrf.post(
        IMPORT, {"file": SimpleUploadedFile("org.json", export().encode())}
    )
    assert response.status_code == 403


def test_every_role_downloads_the_export_without_secrets() -> None:
    make_world()
    client = browser(make_person("vera", Role.VIEW_ONLY))
    response = client.get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert response.content.decode() == export()
    assert b"outbound_password" not in response.content


def test_the_api_export(api_as: Any) -> None:
    make_world()
    viewer = make_person("vera", Role.VIEW_ONLY)
    response = api_as(viewer).get("/api/v1/config/export")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.content.decode() == export()
    assert json.loads(response.content)["encryption"] is None
    assert api_as(make_person("nora", Role.NONE)).get("/api/v1/config/export").status_code == 403
    assert APIClient().get("/api/v1/config/export").status_code == 401
