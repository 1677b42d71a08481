"""An SMTP credential's failed logins and locks on its sheet, and their end: Unlock (Full
Administrators only, in the console and the API, audited) or a new password."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from relay.smtp.auth import LOCKED, check_credentials
from servers.models import SmtpCredential
from smtpadmin import throttle
from smtpadmin.models import AuditEntry
from smtpadmin.roles import Role
from tests.conftest import make_person
from tests.servers.console_world import CREDENTIAL_PASSWORD, World, build_world, logged_in

pytestmark = pytest.mark.django_db

ATTACKER = "198.51.100.1"


@pytest.fixture
def world(db: object) -> World:
    return build_world()


def smtp_login(world: World, password: str = CREDENTIAL_PASSWORD, ip: str = ATTACKER) -> str:
    outcome = check_credentials(
        "app", password, virtual_server_id=world.virtual_server.pk, client_ip=ip
    )
    return outcome.reply


def lock_out(world: World) -> None:
    for n in range(throttle.MAX_FAILURES):
        smtp_login(world, f"guess-{n}")
    assert smtp_login(world) == LOCKED


def sheet(user: User, world: World) -> str:
    return logged_in(user).get(f"/servers/smtp-credentials/{world.credential.pk}/").content.decode()


def test_the_sheet_shows_the_failed_logins_and_the_locked_address(
    full_admin: User, world: World
) -> None:
    lock_out(world)

    html = sheet(full_admin, world)

    assert f"{ATTACKER}: 5 failed, locked until" in html
    assert f'action="/servers/smtp-credentials/{world.credential.pk}/unlock/"' in html


def test_only_a_full_administrator_sees_the_unlock_button(
    administrator: User, world: World
) -> None:
    lock_out(world)

    html = sheet(administrator, world)

    assert f"{ATTACKER}: 5 failed, locked until" in html
    assert "/unlock/" not in html


def test_a_full_administrator_unlocks_a_credential_in_the_console_and_it_is_audited(
    full_admin: User, world: World
) -> None:
    lock_out(world)

    response = logged_in(full_admin).post(
        f"/servers/smtp-credentials/{world.credential.pk}/unlock/"
    )

    assert response.status_code == 302
    assert smtp_login(world).startswith("235")
    credential = SmtpCredential.objects.get(pk=world.credential.pk)
    assert credential.failed_logins == 0 and credential.locked_until is None
    entry = AuditEntry.objects.get(action=AuditEntry.Action.ACTION)
    assert (entry.object_type, entry.object_id) == ("Smtp Credential", str(credential.pk))
    assert (entry.username, entry.field, entry.new_value) == (
        full_admin.username,
        "login lock",
        "unlocked",
    )
    assert entry.old_value == "1 locked, 5 failed logins"


def test_a_full_administrator_unlocks_a_credential_through_the_api(
    full_admin: User, world: World, api_as: Callable[[User], APIClient]
) -> None:
    lock_out(world)

    response = api_as(full_admin).post(f"/api/v1/smtp-credentials/{world.credential.pk}/unlock/")

    assert response.status_code == 200
    assert response.json()["failed_logins"] == 0 and response.json()["locked_until"] is None
    assert smtp_login(world).startswith("235")
    assert AuditEntry.objects.filter(field="login lock", new_value="unlocked").count() == 1


@pytest.mark.parametrize("role", [Role.ADMINISTRATOR, Role.VIEW_ONLY, Role.NONE])
def test_only_full_administrators_may_unlock_a_credential(
    role: Role, world: World, api_as: Callable[[User], APIClient]
) -> None:
    someone = make_person("someone", role)
    lock_out(world)
    pk = world.credential.pk

    assert logged_in(someone).post(f"/servers/smtp-credentials/{pk}/unlock/").status_code == 403
    assert api_as(someone).post(f"/api/v1/smtp-credentials/{pk}/unlock/").status_code == 403
    assert smtp_login(world) == LOCKED
    assert not AuditEntry.objects.filter(field="login lock").exists()


def test_unlock_is_post_only(full_admin: User, world: World) -> None:
    url = f"/servers/smtp-credentials/{world.credential.pk}/unlock/"
    assert logged_in(full_admin).get(url).status_code == 405


def test_a_new_password_set_in_the_console_unlocks_the_credential(
    administrator: User, world: World
) -> None:
    lock_out(world)

    response = logged_in(administrator).post(
        f"/servers/smtp-credentials/{world.credential.pk}/",
        {"username": "app", "password": "another-pass-2", "enabled": "on"},
    )

    assert response.status_code == 302
    assert smtp_login(world, "another-pass-2").startswith("235")


def test_a_new_password_set_through_the_api_unlocks_the_credential(
    administrator: User, world: World, api_as: Callable[[User], APIClient]
) -> None:
    lock_out(world)

    response = api_as(administrator).patch(
        f"/api/v1/smtp-credentials/{world.credential.pk}/",
        {"password": "another-pass-2"},
        format="json",
    )

    assert response.status_code == 200
    assert smtp_login(world, "another-pass-2").startswith("235")


def test_a_change_without_a_new_password_keeps_the_lock(
    administrator: User, world: World, api_as: Callable[[User], APIClient]
) -> None:
    lock_out(world)

    api_as(administrator).patch(
        f"/api/v1/smtp-credentials/{world.credential.pk}/",
        {"send_limit_per_hour": 10},
        format="json",
    )

    assert smtp_login(world) == LOCKED
