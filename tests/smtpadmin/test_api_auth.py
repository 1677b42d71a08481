"""Signing in to /api/v1/: a token per user from /api/v1/auth/token/, or the console's session
(with CSRF on unsafe methods); users managed through the API keep at least one active Full
Administrator and pass Django's password validators."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from smtpadmin.roles import Role, role_of
from tests.conftest import PASSWORD
from tests.smtpadmin.test_api_permissions import (
    API,
    STRONG_PASSWORD,
    make_user,
)

pytestmark = pytest.mark.django_db
TOKEN_URL = f"{API}auth/token/"


@pytest.fixture(autouse=True)
def fresh_throttle() -> Any:
    """The token endpoint is rate limited per client address; each test starts afresh."""
    cache.clear()
    yield
    cache.clear()


def _token(username: str, password: str) -> Any:
    return APIClient().post(TOKEN_URL, {"username": username, "password": password}, format="json")


# --- tokens ----------------------------------------------------------------------------------


def test_a_user_exchanges_name_and_password_for_a_token(administrator: User) -> None:
    response = _token("adam-admin", PASSWORD)
    assert response.status_code == 200
    assert set(response.json()) == {"token"}
    assert response.json()["token"] == Token.objects.get(user=administrator).key
    assert _token("adam-admin", PASSWORD).json()["token"] == response.json()["token"]


def test_each_user_has_their_own_token(administrator: User, view_only: User) -> None:
    assert _token("adam-admin", PASSWORD).json() != _token("vera-viewer", PASSWORD).json()


def test_the_token_authenticates_with_the_users_role(administrator: User, view_only: User) -> None:
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {_token('vera-viewer', PASSWORD).json()['token']}"
    )
    assert client.get(f"{API}servers/").status_code == 200
    assert client.post(f"{API}routing-groups/", {"name": "x"}, format="json").status_code == 403
    client.credentials(HTTP_AUTHORIZATION=f"Token {_token('adam-admin', PASSWORD).json()['token']}")
    assert client.post(f"{API}routing-groups/", {"name": "x"}, format="json").status_code == 201


@pytest.mark.parametrize(
    "header", ["Token not-a-real-token", "Token", "Token a b", "Bearer abc", "Token \x7f"]
)
def test_a_bad_token_is_401(header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(f"{API}servers/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "adam-admin", "password": "wrong"},
        {"username": "nobody", "password": PASSWORD},
        {"username": "adam-admin", "password": ""},
        {"username": "adam-admin"},
        {},
        {"username": ["adam-admin"], "password": PASSWORD},
        {"username": "adam-admin\x00", "password": PASSWORD},
    ],
)
def test_wrong_credentials_are_a_400_without_a_token(
    administrator: User, credentials: dict[str, Any]
) -> None:
    response = APIClient().post(TOKEN_URL, credentials, format="json")
    assert response.status_code == 400
    assert "token" not in response.json()


def test_an_inactive_user_gets_no_token(administrator: User) -> None:
    administrator.is_active = False
    administrator.save()
    assert _token("adam-admin", PASSWORD).status_code == 400


def test_guessing_passwords_locks_the_name_from_that_address_even_for_the_right_password(
    administrator: User,
) -> None:
    answers = [_token("adam-admin", f"guess {i}").status_code for i in range(5)]
    assert answers == [400] * 5
    assert _token("adam-admin", PASSWORD).status_code == 429


def test_a_correct_password_resets_the_count(administrator: User) -> None:
    for i in range(4):
        assert _token("adam-admin", f"guess {i}").status_code == 400
    assert _token("adam-admin", PASSWORD).status_code == 200
    for i in range(4):
        assert _token("adam-admin", f"again {i}").status_code == 400
    assert _token("adam-admin", PASSWORD).status_code == 200


def test_requests_beyond_the_rate_are_refused(administrator: User) -> None:
    answers = [_token("adam-admin", PASSWORD).status_code for _ in range(21)]
    assert answers[:20] == [200] * 20
    assert answers[20] == 429


def test_without_credentials_the_api_answers_401(administrator: User) -> None:
    response = APIClient().get(f"{API}servers/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


# --- sessions --------------------------------------------------------------------------------


def test_a_console_session_reads_the_api(administrator: User) -> None:
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="adam-admin", password=PASSWORD)
    assert client.get(f"{API}servers/").status_code == 200


def test_a_session_needs_the_csrf_token_to_change_anything(administrator: User) -> None:
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="adam-admin", password=PASSWORD)
    refused = client.post(f"{API}routing-groups/", {"name": "Branch"}, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    for method in ("put", "patch", "delete"):
        assert getattr(client, method)(f"{API}organization/", {}).status_code == 403

    secret = "a" * 32
    client.cookies["csrftoken"] = secret
    accepted = client.post(
        f"{API}routing-groups/", {"name": "Branch"}, format="json", HTTP_X_CSRFTOKEN=secret
    )
    assert accepted.status_code == 201


def test_a_token_needs_no_csrf_token(administrator: User) -> None:
    token = _token("adam-admin", PASSWORD).json()["token"]
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.post(f"{API}routing-groups/", {"name": "B"}, format="json").status_code == 201


def test_after_logout_the_session_is_gone(administrator: User) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="adam-admin", password=PASSWORD)
    client.logout()
    assert client.get(f"{API}servers/").status_code == 401


# --- the last Full Administrator -------------------------------------------------------------


@pytest.fixture
def api(full_admin: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(full_admin)
    return client


@pytest.mark.parametrize(
    "change", [{"role": "administrator"}, {"role": "none"}, {"is_active": False}]
)
def test_the_last_active_full_administrator_cannot_be_demoted_or_deactivated(
    api: APIClient, full_admin: User, change: dict[str, Any]
) -> None:
    response = api.patch(f"{API}users/{full_admin.pk}/", change, format="json")
    assert response.status_code == 409
    assert "last active Full Administrator" in response.json()["detail"]
    stored = User.objects.get(pk=full_admin.pk)
    assert stored.is_active
    assert role_of(stored) is Role.FULL


def test_the_last_active_full_administrator_cannot_be_deleted(
    api: APIClient, full_admin: User
) -> None:
    response = api.delete(f"{API}users/{full_admin.pk}/")
    assert response.status_code == 409
    assert User.objects.filter(pk=full_admin.pk).exists()


def test_an_inactive_full_administrator_does_not_count(api: APIClient, full_admin: User) -> None:
    sleeping = make_user("sleeping-beauty", Role.FULL)
    sleeping.is_active = False
    sleeping.save()
    assert api.patch(f"{API}users/{full_admin.pk}/", {"role": "none"}).status_code == 409


def test_with_two_full_administrators_one_may_go(api: APIClient, full_admin: User) -> None:
    other = make_user("felix-full", Role.FULL)
    response = api.patch(f"{API}users/{other.pk}/", {"role": "view_only"}, format="json")
    assert response.status_code == 200
    assert response.json()["role"] == "view_only"
    make_user("felix-2", Role.FULL)
    assert api.delete(f"{API}users/{full_admin.pk}/").status_code == 204


def test_a_superuser_counts_as_a_full_administrator(api: APIClient, full_admin: User) -> None:
    User.objects.create_superuser("root", password=STRONG_PASSWORD)
    response = api.patch(f"{API}users/{full_admin.pk}/", {"role": "administrator"}, format="json")
    assert response.status_code == 200


def test_keeping_the_full_role_on_the_last_full_administrator_is_fine(
    api: APIClient, full_admin: User
) -> None:
    response = api.put(
        f"{API}users/{full_admin.pk}/",
        {"username": full_admin.username, "role": "full_administrator", "is_active": True},
        format="json",
    )
    assert response.status_code == 200, response.json()


# --- passwords of users ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short1!", "too short"),
        ("password123", "too common"),
        ("8412093547621", "entirely numeric"),
        ("newbie-newbie", "too similar to the username"),
    ],
)
def test_user_passwords_pass_djangos_validators(api: APIClient, password: str, why: str) -> None:
    response = api.post(
        f"{API}users/", {"username": "newbie-newbie", "password": password, "role": "none"}
    )
    assert response.status_code == 400, why
    assert why.split()[-1] in " ".join(response.json()["password"]), response.json()
    user = make_user("newbie-newbie")
    response = api.patch(f"{API}users/{user.pk}/", {"password": password})
    assert response.status_code == 400
    assert "password" in response.json()


def test_a_new_user_needs_a_password_and_can_then_sign_in(api: APIClient) -> None:
    refused = api.post(f"{API}users/", {"username": "newbie", "role": "view_only"})
    assert refused.status_code == 400
    assert "password" in refused.json()
    created = api.post(
        f"{API}users/", {"username": "newbie", "password": STRONG_PASSWORD, "role": "view_only"}
    )
    assert created.status_code == 201, created.json()
    assert created.json()["role"] == "view_only"
    assert _token("newbie", STRONG_PASSWORD).status_code == 200


def test_a_changed_password_works_and_the_old_one_does_not(api: APIClient) -> None:
    user = make_user("ursula")
    new = "another long passphrase 42"
    assert api.patch(f"{API}users/{user.pk}/", {"password": new}).status_code == 200
    assert _token("ursula", new).status_code == 200
    assert _token("ursula", STRONG_PASSWORD).status_code == 400
