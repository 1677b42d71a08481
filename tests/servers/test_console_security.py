"""SMTP credentials (password set, never shown) and certificates (upload PEM, generate
self-signed; the key never shown again) in the console."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from servers.models import Certificate, SmtpCredential, VirtualServer
from smtpadmin.models import AuditEntry
from tests.servers.console_world import (
    CREDENTIAL_PASSWORD,
    World,
    build_world,
    html_of,
    logged_in,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db: object) -> World:
    return build_world()


def credential_pages(world: World) -> list[str]:
    return [
        "/servers/smtp-credentials/",
        f"/servers/smtp-credentials/{world.credential.pk}/",
        f"/servers/smtp-credentials/{world.credential.pk}/delete/",
    ]


def test_an_administrator_creates_a_credential_with_a_password(
    administrator: User, world: World
) -> None:
    response = logged_in(administrator).post(
        "/servers/smtp-credentials/new/",
        {
            "username": "scanner",
            "password": "scanner-pass-1",
            "enabled": "on",
            "send_limit_per_hour": "50",
            "virtual_servers": [str(world.virtual_server.pk)],
        },
    )
    assert response.status_code == 302
    credential = SmtpCredential.objects.get(username="scanner")
    assert credential.check_password("scanner-pass-1")
    assert list(credential.virtual_servers.all()) == [world.virtual_server]
    entries = AuditEntry.objects.filter(object_id=str(credential.pk))
    assert entries.get(field="password_hash").new_value == "changed"
    assert entries.get(field="virtual_servers").new_value == str(world.virtual_server.pk)
    assert "scanner-pass-1" not in "".join(entries.values_list("new_value", flat=True))


def test_a_new_credential_needs_a_password(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        "/servers/smtp-credentials/new/", {"username": "nopass", "enabled": "on"}
    )
    assert response.status_code == 400
    html = html_of(response)
    field = html[html.index('name="password"') :]
    assert field.index("Set a password.") < field.index('name="enabled"')
    assert not SmtpCredential.objects.filter(username="nopass").exists()


def test_a_short_password_is_refused_like_the_api_does(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        "/servers/smtp-credentials/new/",
        {"username": "shorty", "password": "short", "enabled": "on"},
    )
    assert response.status_code == 400
    assert "at least 8 characters" in html_of(response)


def test_a_blank_password_keeps_the_old_one(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        f"/servers/smtp-credentials/{world.credential.pk}/",
        {"username": "app", "password": "", "send_limit_per_hour": "10"},
    )
    assert response.status_code == 302
    credential = SmtpCredential.objects.get(pk=world.credential.pk)
    assert credential.check_password(CREDENTIAL_PASSWORD)
    assert not credential.enabled and credential.send_limit_per_hour == 10
    assert not AuditEntry.objects.filter(field="password_hash").exists()
    limit = AuditEntry.objects.get(field="send_limit_per_hour")
    assert (limit.old_value, limit.new_value) == ("", "10")


def test_setting_a_password_replaces_it_and_is_audited_as_changed(
    administrator: User, world: World
) -> None:
    response = logged_in(administrator).post(
        f"/servers/smtp-credentials/{world.credential.pk}/",
        {"username": "app", "password": "another-pass-2", "enabled": "on"},
    )
    assert response.status_code == 302
    assert SmtpCredential.objects.get(pk=world.credential.pk).check_password("another-pass-2")
    entry = AuditEntry.objects.get(field="password_hash")
    assert (entry.old_value, entry.new_value) == ("", "changed")


def test_the_password_and_its_hash_never_reach_a_page(administrator: User, world: World) -> None:
    client = logged_in(administrator)
    stored_hash = SmtpCredential.objects.get(pk=world.credential.pk).password_hash
    for url in credential_pages(world):
        html = html_of(client.get(url))
        assert stored_hash not in html and CREDENTIAL_PASSWORD not in html, url
        assert stored_hash.split("$")[-1] not in html, url
    response = client.post(
        f"/servers/smtp-credentials/{world.credential.pk}/",
        {"username": "bad name", "password": "typed-pass-99", "enabled": "on"},
    )
    assert response.status_code == 400
    assert "typed-pass-99" not in html_of(response)


def test_a_view_only_administrator_cannot_change_credentials(view_only: User, world: World) -> None:
    client = logged_in(view_only)
    before = SmtpCredential.objects.get(pk=world.credential.pk).password_hash
    response = client.post(
        f"/servers/smtp-credentials/{world.credential.pk}/",
        {"username": "app", "password": "hijacked-pass", "enabled": "on"},
    )
    assert response.status_code == 403
    assert (
        client.post(
            "/servers/smtp-credentials/new/", {"username": "evil", "password": "evil-pass-1"}
        ).status_code
        == 403
    )
    assert (
        client.post(f"/servers/smtp-credentials/{world.credential.pk}/delete/").status_code == 403
    )
    assert SmtpCredential.objects.get().password_hash == before
    assert not AuditEntry.objects.exists()


def test_a_credential_is_deleted_and_audited(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        f"/servers/smtp-credentials/{world.credential.pk}/delete/"
    )
    assert response.status_code == 302
    assert not SmtpCredential.objects.exists()
    assert AuditEntry.objects.get(action="delete").object_repr == "app"


def test_the_credential_list_says_which_virtual_servers_accept_it(
    view_only: User, world: World
) -> None:
    html = html_of(logged_in(view_only).get("/servers/smtp-credentials/"))
    assert "all virtual servers" in html
    world.credential.virtual_servers.set([world.virtual_server])
    html = html_of(logged_in(view_only).get("/servers/smtp-credentials/"))
    assert "Default SMTP Virtual Server (mx1)" in html


def test_generating_a_self_signed_certificate(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        "/servers/certificates/generate/",
        {"name": "relay", "common_name": "relay.example.com", "alt_names": "smtp.example.com"},
    )
    assert response.status_code == 302
    certificate = Certificate.objects.get(name="relay")
    assert certificate.subject == "CN=relay.example.com"
    assert certificate.sans == ["relay.example.com", "smtp.example.com"]
    assert AuditEntry.objects.get(
        object_id=str(certificate.pk), field="private_key_pem"
    ).new_value == ("changed")
    html = html_of(logged_in(administrator).get(response["Location"]))
    assert "CN=relay.example.com" in html and certificate.fingerprint_sha256 in html
    assert "PRIVATE KEY" not in html


def test_a_bad_common_name_is_shown_at_its_field(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        "/servers/certificates/generate/", {"name": "bad", "common_name": "not a host!"}
    )
    assert response.status_code == 400
    html = html_of(response)
    field = html[html.index('name="common_name"') :]
    assert field.index('class="errorlist"') < field.index('name="alt_names"')
    assert "This is not a PEM certificate" not in html
    assert not Certificate.objects.filter(name="bad").exists()


def test_a_generated_certificate_needs_a_unique_name(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        "/servers/certificates/generate/", {"name": "mail", "common_name": "x.example.com"}
    )
    assert response.status_code == 400
    assert "already exists" in html_of(response)


def test_uploading_pem_and_the_key_is_never_shown_again(administrator: User, world: World) -> None:
    source = Certificate.generate_self_signed("x", "upload.example.com", ["alt.example.com"])
    client = logged_in(administrator)
    response = client.post(
        "/servers/certificates/upload/",
        {
            "name": "uploaded",
            "certificate_pem": source.certificate_pem,
            "private_key_pem": source.private_key_pem,
        },
    )
    assert response.status_code == 302
    certificate = Certificate.objects.get(name="uploaded")
    assert certificate.sans == ["upload.example.com", "alt.example.com"]
    key_body = source.private_key_pem.splitlines()[1]
    for url in (
        "/servers/certificates/",
        f"/servers/certificates/{certificate.pk}/",
        f"/servers/certificates/{certificate.pk}/delete/",
    ):
        html = html_of(client.get(url))
        assert key_body not in html and "PRIVATE KEY" not in html, url
    assert key_body not in "".join(AuditEntry.objects.values_list("new_value", flat=True))


def test_a_failed_upload_does_not_echo_the_key(administrator: User, world: World) -> None:
    source = Certificate.generate_self_signed("x", "upload.example.com")
    other = Certificate.generate_self_signed("y", "other.example.com")
    response = logged_in(administrator).post(
        "/servers/certificates/upload/",
        {
            "name": "mismatch",
            "certificate_pem": source.certificate_pem,
            "private_key_pem": other.private_key_pem,
        },
    )
    assert response.status_code == 400
    html = html_of(response)
    assert "This private key does not belong to the certificate." in html
    assert other.private_key_pem.splitlines()[1] not in html
    assert not Certificate.objects.filter(name="mismatch").exists()


def test_garbage_pem_is_refused_at_the_field(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        "/servers/certificates/upload/",
        {"name": "junk", "certificate_pem": "hello", "private_key_pem": "world"},
    )
    assert response.status_code == 400
    assert "This is not a PEM certificate." in html_of(response)


def test_renaming_a_certificate_keeps_its_key(administrator: User, world: World) -> None:
    key = world.certificate.private_key_pem
    response = logged_in(administrator).post(
        f"/servers/certificates/{world.certificate.pk}/", {"name": "mail-2026"}
    )
    assert response.status_code == 302
    certificate = Certificate.objects.get(pk=world.certificate.pk)
    assert (certificate.name, certificate.private_key_pem) == ("mail-2026", key)
    entry = AuditEntry.objects.get(field="name")
    assert (entry.old_value, entry.new_value) == ("mail", "mail-2026")


def test_the_certificate_list_shows_expiry(view_only: User, world: World) -> None:
    html = html_of(logged_in(view_only).get("/servers/certificates/?sort=not_after&dir=asc"))
    assert "CN=mail.example.com" in html and "mail.example.com" in html
    assert "<td>no</td>" in html


def test_a_certificate_in_use_cannot_be_deleted(administrator: User, world: World) -> None:
    VirtualServer.objects.filter(pk=world.virtual_server.pk).update(certificate=world.certificate)
    url = f"/servers/certificates/{world.certificate.pk}/delete/"
    html = html_of(logged_in(administrator).get(url))
    assert "Virtual Server: Default SMTP Virtual Server (mx1)" in html
    assert ">Delete</button>" not in html
    assert logged_in(administrator).post(url).status_code == 409
    assert Certificate.objects.filter(pk=world.certificate.pk).exists()


def test_an_unused_certificate_is_deleted_and_audited(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        f"/servers/certificates/{world.certificate.pk}/delete/"
    )
    assert response.status_code == 302
    assert not Certificate.objects.exists()
    assert AuditEntry.objects.get(action="delete").object_repr == "mail"


def test_a_view_only_administrator_cannot_change_certificates(
    view_only: User, world: World
) -> None:
    client = logged_in(view_only)
    assert (
        client.post(
            "/servers/certificates/generate/", {"name": "v", "common_name": "v.example.com"}
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/servers/certificates/upload/",
            {"name": "v", "certificate_pem": "x", "private_key_pem": "y"},
        ).status_code
        == 403
    )
    assert (
        client.post(f"/servers/certificates/{world.certificate.pk}/", {"name": "v"}).status_code
        == 403
    )
    assert client.post(f"/servers/certificates/{world.certificate.pk}/delete/").status_code == 403
    assert list(Certificate.objects.values_list("name", flat=True)) == ["mail"]
    assert not AuditEntry.objects.exists()
