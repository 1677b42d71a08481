"""The console's core pages: login with throttling, logout, the organization sheet by role."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from smtpadmin import throttle
from smtpadmin.models import AuditEntry, Organization
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_anonymous_visitor_is_sent_to_the_login_page() -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_a_full_administrator_logs_in_and_sees_the_tree(full_admin: User) -> None:
    client = Client()
    response = client.post("/login/", {"username": full_admin.username, "password": PASSWORD})
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Message Delivery" in html and "Global Settings" in html
    assert "Full Administrator" in html


def test_a_wrong_password_is_refused_with_a_message(full_admin: User) -> None:
    response = Client().post("/login/", {"username": full_admin.username, "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_repeated_failures_lock_the_account_even_for_the_right_password(full_admin: User) -> None:
    client = Client()
    for _ in range(throttle.MAX_FAILURES):
        client.post("/login/", {"username": full_admin.username, "password": "guess"})
    response = client.post("/login/", {"username": full_admin.username, "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_failures_for_other_names_from_one_address_do_not_lock_a_name_out(
    full_admin: User,
) -> None:
    client = Client()
    for n in range(throttle.MAX_FAILURES):
        client.post("/login/", {"username": f"someone{n}", "password": "guess"})
    response = client.post("/login/", {"username": full_admin.username, "password": PASSWORD})
    assert response.status_code == 302


def test_a_success_before_the_limit_resets_the_count_of_that_address(full_admin: User) -> None:
    client = Client()
    for _ in range(throttle.MAX_FAILURES - 1):
        client.post("/login/", {"username": full_admin.username, "password": "guess"})
    good = client.post("/login/", {"username": full_admin.username, "password": PASSWORD})
    assert good.status_code == 302
    client = Client()
    for _ in range(throttle.MAX_FAILURES - 1):
        client.post("/login/", {"username": full_admin.username, "password": "guess"})
    response = client.post("/login/", {"username": full_admin.username, "password": PASSWORD})
    assert response.status_code == 302


def test_logout_needs_a_post(full_admin: User) -> None:
    client = logged_in(full_admin)
    assert client.get("/logout/").status_code == 200
    assert "_auth_user_id" in client.session
    response = client.post("/logout/")
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session


def test_login_form_enforces_csrf(full_admin: User) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": full_admin.username, "password": PASSWORD})
    assert response.status_code == 403


def test_a_user_without_a_role_sees_no_console(outsider: User) -> None:
    response = logged_in(outsider).get("/")
    assert response.status_code == 403
    assert "Message Delivery" not in response.content.decode()


def test_a_view_only_administrator_sees_the_sheet_read_only(view_only: User) -> None:
    response = logged_in(view_only).get("/organization/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "your role cannot change them" in html
    assert 'type="submit" class="primary">OK' not in html
    assert "disabled" in html


def test_a_view_only_administrator_cannot_post_the_sheet(view_only: User) -> None:
    response = logged_in(view_only).post("/organization/", {"name": "Hijacked"})
    assert response.status_code == 403
    assert Organization.get().name != "Hijacked"


def _organization_form(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Contoso",
        "sending_size_limit_kb": "10240",
        "receiving_size_limit_kb": "10240",
        "recipients_limit": "5000",
        "blocked_senders": "",
        "blocked_recipients": "",
        "filter_unknown_recipients": "on",
        "global_accept_list": "",
        "global_deny_list": "",
        "block_list_providers": "",
        "message_tracking_enabled": "on",
        "tracking_retention_days": "7",
    }
    data.update(changes)
    return data


def test_an_administrator_saves_the_sheet_and_it_is_audited(administrator: User) -> None:
    response = logged_in(administrator).post(
        "/organization/", _organization_form(global_deny_list="192.0.2.7\n198.51.100.0/24")
    )
    assert response.status_code == 302
    organization = Organization.get()
    assert organization.name == "Contoso"
    assert organization.global_deny_list == ["192.0.2.7", "198.51.100.0/24"]
    entry = AuditEntry.objects.get(field="name")
    assert (entry.username, entry.old_value, entry.new_value) == (
        administrator.username,
        "First Organization",
        "Contoso",
    )


def test_an_error_opens_the_tab_that_has_it(administrator: User) -> None:
    response = logged_in(administrator).post(
        "/organization/", _organization_form(global_deny_list="not-an-ip")
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "is not an IP address or subnet" in html
    # The Connection Filtering tab (index 4) is the one shown; General is hidden.
    assert 'aria-selected="true" class="tab has-error" data-tab="tab-4"' in html
    assert Organization.get().global_deny_list == []
