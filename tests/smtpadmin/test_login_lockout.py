"""Console login and API token lockout: per (user name, client address) pair, a short per-name
back-off that never keeps the right password out, unlock by Full Administrators (audited),
unlock by a password change, and parallel guesses that never check more than the limit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.db import connections
from django.test import Client
from rest_framework.test import APIClient

from smtpadmin import throttle
from smtpadmin.models import AuditEntry, LoginThrottle
from smtpadmin.roles import Role
from tests.conftest import PASSWORD, make_person
from tests.counting_hasher import HASHER, CountingHasher
from tests.html_forms import form_data

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a-brand-new-passphrase-81"
TOKEN_URL = "/api/v1/auth/token/"


@pytest.fixture(autouse=True)
def fresh_rate_limit() -> Any:
    """The token endpoint's per-address request rate lives in the cache."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The back-off's waits, recorded instead of slept, so that the tests stay fast."""
    waits: list[float] = []
    monkeypatch.setattr("time.sleep", waits.append)
    return waits


def browser(ip: str, forwarded_for: str | None = None) -> Client:
    if forwarded_for is None:
        return Client(REMOTE_ADDR=ip)
    return Client(REMOTE_ADDR=ip, HTTP_X_FORWARDED_FOR=forwarded_for)


def console_login(client: Client, username: str, password: str) -> int:
    return client.post("/login/", {"username": username, "password": password}).status_code


def fail(
    username: str, ip: str, times: int = throttle.MAX_FAILURES, forwarded_for: str | None = None
) -> None:
    client = browser(ip, forwarded_for)
    for n in range(times):
        assert console_login(client, username, f"guess-{n}") == 200


def token(username: str, password: str, ip: str) -> int:
    client = APIClient(REMOTE_ADDR=ip)
    data = {"username": username, "password": password}
    return int(client.post(TOKEN_URL, data, format="json").status_code)


# --- pairs ------------------------------------------------------------------------------------


def test_a_lock_from_one_address_does_not_lock_the_name_from_another(full_admin: User) -> None:
    fail(full_admin.username, "198.51.100.1")
    assert console_login(browser("198.51.100.1"), full_admin.username, PASSWORD) == 429

    assert console_login(browser("198.51.100.2"), full_admin.username, PASSWORD) == 302


def test_a_lock_from_one_address_does_not_lock_other_names_from_it(
    full_admin: User, view_only: User
) -> None:
    fail(full_admin.username, "198.51.100.1")

    assert console_login(browser("198.51.100.1"), view_only.username, PASSWORD) == 302


def test_the_lock_message_says_how_long(full_admin: User) -> None:
    fail(full_admin.username, "198.51.100.1")

    response = browser("198.51.100.1").post(
        "/login/", {"username": full_admin.username, "password": PASSWORD}
    )

    assert "Too many failed logins. Try again in 15 minutes." in response.content.decode()


def test_a_name_counts_without_case(full_admin: User) -> None:
    fail(full_admin.username.upper(), "198.51.100.1")

    assert console_login(browser("198.51.100.1"), full_admin.username, PASSWORD) == 429


def test_the_right_password_from_a_new_address_gets_in_while_the_name_is_under_attack(
    full_admin: User, slept: list[float]
) -> None:
    for n in range(1, 5):
        fail(full_admin.username, f"198.51.100.{n}")

    assert console_login(browser("192.0.2.77"), full_admin.username, PASSWORD) == 302
    assert slept and 0 < max(slept) <= throttle.NAME_BACKOFF_MAX == 3.0


def test_the_name_back_off_waits_before_the_password_is_checked(
    full_admin: User, slept: list[float], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PASSWORD_HASHERS = [HASHER]
    full_admin.set_password(PASSWORD)
    full_admin.save()
    for n in range(1, 3):
        fail(full_admin.username, f"198.51.100.{n}")
    CountingHasher.reset()
    waits_seen: list[int] = []

    def wait(seconds: float) -> None:
        waits_seen.append(len(CountingHasher.checks))
        slept.append(seconds)

    monkeypatch.setattr("time.sleep", wait)
    console_login(browser("192.0.2.77"), full_admin.username, "wrong")

    assert waits_seen == [0]  # the wait came before any password check
    assert CountingHasher.checks == [full_admin.password]


def test_the_api_token_locks_the_pair_only(administrator: User) -> None:
    for n in range(throttle.MAX_FAILURES):
        assert token(administrator.username, f"guess-{n}", "198.51.100.1") == 400
    assert token(administrator.username, PASSWORD, "198.51.100.1") == 429

    assert token(administrator.username, PASSWORD, "198.51.100.2") == 200


def test_the_console_and_the_api_share_the_count_of_a_pair(administrator: User) -> None:
    fail(administrator.username, "198.51.100.1", times=throttle.MAX_FAILURES - 1)
    assert token(administrator.username, "one more guess", "198.51.100.1") == 400

    assert token(administrator.username, PASSWORD, "198.51.100.1") == 429


# --- unlock -----------------------------------------------------------------------------------


def test_a_full_administrator_unlocks_a_user_in_the_console_and_it_is_audited(
    full_admin: User, view_only: User
) -> None:
    fail(view_only.username, "198.51.100.1")
    admin = Client()
    admin.force_login(full_admin)
    sheet = admin.get(f"/administration/users/{view_only.pk}/").content.decode()
    assert "198.51.100.1: 5 failed, locked until" in sheet
    assert f'action="/administration/users/{view_only.pk}/unlock/"' in sheet

    response = admin.post(f"/administration/users/{view_only.pk}/unlock/")

    assert response.status_code == 302
    assert console_login(browser("198.51.100.1"), view_only.username, PASSWORD) == 302
    entry = AuditEntry.objects.get(action=AuditEntry.Action.ACTION, object_id=str(view_only.pk))
    assert entry.username == full_admin.username and entry.object_type == "User"
    assert (entry.field, entry.old_value, entry.new_value) == (
        "login lock",
        "1 locked, 5 failed logins",
        "unlocked",
    )


def test_a_full_administrator_unlocks_a_user_through_the_api_and_it_is_audited(
    full_admin: User, view_only: User, api_as: Callable[[User], APIClient]
) -> None:
    fail(view_only.username, "198.51.100.1")

    response = api_as(full_admin).post(f"/api/v1/users/{view_only.pk}/unlock/")

    assert response.status_code == 200
    assert response.json() == {"unlocked_addresses": 1}
    assert console_login(browser("198.51.100.1"), view_only.username, PASSWORD) == 302
    assert AuditEntry.objects.filter(field="login lock", object_id=str(view_only.pk)).exists()


@pytest.mark.parametrize("role", [Role.ADMINISTRATOR, Role.VIEW_ONLY, Role.NONE])
def test_only_full_administrators_may_unlock_a_user(
    role: Role, view_only: User, api_as: Callable[[User], APIClient]
) -> None:
    someone = make_person("someone", role)
    fail(view_only.username, "198.51.100.1")
    console = Client()
    console.force_login(someone)

    assert console.post(f"/administration/users/{view_only.pk}/unlock/").status_code == 403
    assert api_as(someone).post(f"/api/v1/users/{view_only.pk}/unlock/").status_code == 403
    assert console_login(browser("198.51.100.1"), view_only.username, PASSWORD) == 429
    assert not AuditEntry.objects.filter(field="login lock").exists()


def test_unlocking_an_unknown_user_is_a_404(
    full_admin: User, api_as: Callable[[User], APIClient]
) -> None:
    assert api_as(full_admin).post("/api/v1/users/99999/unlock/").status_code == 404


# --- a new password unlocks -------------------------------------------------------------------


def test_a_password_change_in_the_console_unlocks_the_name(
    full_admin: User, view_only: User
) -> None:
    fail(view_only.username, "198.51.100.1")
    admin = Client()
    admin.force_login(full_admin)
    url = f"/administration/users/{view_only.pk}/"
    data = form_data(admin.get(url).content)
    data.update(new_password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)

    assert admin.post(url, data).status_code == 302

    assert console_login(browser("198.51.100.1"), view_only.username, NEW_PASSWORD) == 302


def test_a_password_change_through_the_api_unlocks_the_name(
    full_admin: User, view_only: User, api_as: Callable[[User], APIClient]
) -> None:
    fail(view_only.username, "198.51.100.1")

    response = api_as(full_admin).patch(
        f"/api/v1/users/{view_only.pk}/", {"password": NEW_PASSWORD}, format="json"
    )

    assert response.status_code == 200
    assert console_login(browser("198.51.100.1"), view_only.username, NEW_PASSWORD) == 302


def test_other_changes_through_the_api_leave_the_lock(
    full_admin: User, view_only: User, api_as: Callable[[User], APIClient]
) -> None:
    fail(view_only.username, "198.51.100.1")

    api_as(full_admin).patch(
        f"/api/v1/users/{view_only.pk}/", {"email": "v@example.com"}, format="json"
    )

    assert console_login(browser("198.51.100.1"), view_only.username, PASSWORD) == 429


@pytest.mark.parametrize("option", [["--reset-password"], ["--password", NEW_PASSWORD]])
def test_a_password_set_by_createadmin_unlocks_the_name(
    view_only: User, option: list[str], settings: Any
) -> None:
    settings.SMTPADMIN_ADMIN_PASSWORD = ""
    fail(view_only.username, "198.51.100.1")
    assert LoginThrottle.objects.exists()

    call_command(
        "createadmin",
        "--username",
        view_only.username,
        "--role",
        "view_only",
        *option,
        stdout=StringIO(),
    )

    assert not LoginThrottle.objects.filter(username=view_only.username).exists()


# --- parallel guesses -------------------------------------------------------------------------


def test_parallel_console_guesses_check_no_more_than_the_limit(
    transactional_db: Any, settings: Any
) -> None:
    settings.PASSWORD_HASHERS = [HASHER]
    victim = make_person("victim", Role.FULL)
    CountingHasher.reset()
    start = threading.Barrier(20)
    codes: list[int] = []

    def guess(n: int) -> None:
        try:
            client = browser("198.51.100.1")
            start.wait()
            codes.append(console_login(client, "victim", f"guess-{n}"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(codes) == 20
    assert 1 <= CountingHasher.checks.count(victim.password) <= throttle.MAX_FAILURES
    assert codes.count(200) == CountingHasher.checks.count(victim.password)
    assert codes.count(429) == 20 - codes.count(200)
