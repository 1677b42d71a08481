"""The administration pages: the Audit Log for every role (filters, pages, newest first) and
Users and Roles for Full Administrators only (the last one cannot lock everyone out)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from smtpadmin.models import AuditEntry
from smtpadmin.roles import Role, role_of, set_role
from smtpadmin.users import LAST_FULL_ADMINISTRATOR
from tests.conftest import PASSWORD
from tests.html_forms import form_data

pytestmark = pytest.mark.django_db

ROLES = ["full_admin", "administrator", "view_only", "outsider", "anonymous"]
NEW_PASSWORD = "plum-Orchard-47-kettle"


def logged_in(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def pane(html: str) -> str:
    return html[html.index('<main class="pane"') :]


def entry(**fields: Any) -> AuditEntry:
    values = {"username": "adam-admin", "action": "update", "object_type": "Connector"}
    values.update(fields)
    at = values.pop("at", None)
    created = AuditEntry.objects.create(**values)
    if at is not None:
        AuditEntry.objects.filter(pk=created.pk).update(at=at)
    return created


# --- the audit log ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_the_audit_log_answers_each_role(request: pytest.FixtureRequest, role: str) -> None:
    user = None if role == "anonymous" else request.getfixturevalue(role)
    response = logged_in(user).get("/administration/audit-log/")
    assert response.status_code == {"anonymous": 302, "outsider": 403}.get(role, 200)


def test_the_audit_log_shows_who_what_and_old_to_new_newest_first(view_only: User) -> None:
    now = timezone.now()
    entry(
        object_repr="Internet",
        object_id="1",
        field="smart_hosts",
        old_value="a",
        new_value="b",
        at=now - datetime.timedelta(hours=2),
    )
    entry(
        object_repr="Partner",
        object_id="2",
        field="enabled",
        old_value="yes",
        new_value="no",
        at=now,
    )
    html = pane(logged_in(view_only).get("/administration/audit-log/").content.decode())
    assert html.index("Partner") < html.index("Internet")
    assert '<span class="old">a</span> → <span class="new">b</span>' in html
    assert "adam-admin" in html and "smart_hosts" in html and "Changed" in html
    assert "/administration/audit-log/?object_type=Connector&amp;object=1" in html


def test_the_audit_log_is_filtered_by_object_type(view_only: User) -> None:
    entry(object_type="Connector", object_repr="Internet", object_id="1")
    entry(object_type="Virtual Server", object_repr="Default SMTP Virtual Server", object_id="1")
    html = pane(
        logged_in(view_only)
        .get("/administration/audit-log/?object_type=Connector")
        .content.decode()
    )
    assert "Internet" in html and "Default SMTP Virtual Server" not in html.split("</form>")[1]
    assert '<option value="Virtual Server">' in html  # the types come from the log


@pytest.mark.parametrize("query", ["7", "inter", "INTERNET"])
def test_the_audit_log_is_filtered_by_object_id_or_name(view_only: User, query: str) -> None:
    entry(object_repr="Internet", object_id="7", field="name")
    entry(object_repr="Partner", object_id="8", field="name")
    body = pane(
        logged_in(view_only).get(f"/administration/audit-log/?object={query}").content.decode()
    )
    table = body.split("</form>")[1]
    assert "Internet" in table and "Partner" not in table


def test_the_audit_log_is_filtered_by_user(view_only: User) -> None:
    entry(username="adam-admin", object_repr="ByAdam")
    entry(username="fiona-full", object_repr="ByFiona")
    table = pane(logged_in(view_only).get("/administration/audit-log/?user=fiona").content.decode())
    table = table.split("</form>")[1]
    assert "ByFiona" in table and "ByAdam" not in table


def test_the_audit_log_is_filtered_by_time_range(view_only: User) -> None:
    base = timezone.make_aware(datetime.datetime(2026, 3, 1, 12, 0))
    entry(object_repr="Early", at=base - datetime.timedelta(days=2))
    entry(object_repr="Middle", at=base)
    entry(object_repr="Late", at=base + datetime.timedelta(days=2))
    url = "/administration/audit-log/?since=2026-02-28T00:00&until=2026-03-02T00:00"
    table = pane(logged_in(view_only).get(url).content.decode()).split("</form>")[1]
    assert "Middle" in table and "Early" not in table and "Late" not in table


@pytest.mark.parametrize(
    "query",
    ["since=yesterday", "until=2026-13-45T99:99", "since=2026-03-02T00:00&until=2026-03-01T00:00"],
)
def test_a_bad_filter_is_a_field_error_not_a_500(view_only: User, query: str) -> None:
    entry(object_repr="Anything")
    response = logged_in(view_only).get(f"/administration/audit-log/?{query}")
    assert response.status_code == 400
    assert 'class="errorlist"' in response.content.decode()


def test_the_audit_log_is_paginated(view_only: User) -> None:
    start = timezone.now() - datetime.timedelta(days=1)
    for n in range(60):
        entry(object_repr=f"Object {n:02}", at=start + datetime.timedelta(minutes=n))
    client = logged_in(view_only)
    first = pane(client.get("/administration/audit-log/").content.decode())
    assert "Object 59" in first and "Object 10" in first and "Object 09" not in first
    assert "Page 1 of 2" in first and "?page=2" in first
    second = pane(client.get("/administration/audit-log/?page=2").content.decode())
    assert "Object 09" in second and "Object 00" in second and "Object 10" not in second
    # A page out of range or not a number shows a page, never an error.
    assert client.get("/administration/audit-log/?page=99").status_code == 200
    assert client.get("/administration/audit-log/?page=x").status_code == 200


def test_pages_keep_the_filters(view_only: User) -> None:
    for n in range(55):
        entry(object_repr=f"Internet {n}", object_id="1")
    html = pane(logged_in(view_only).get("/administration/audit-log/?object=1").content.decode())
    assert "?object=1&amp;page=2" in html


# --- users and roles: who may see it ----------------------------------------------------------


def user_pages(full_admin: User) -> list[str]:
    return [
        "/administration/users/",
        "/administration/users/new/",
        f"/administration/users/{full_admin.pk}/",
        f"/administration/users/{full_admin.pk}/delete/",
    ]


@pytest.mark.parametrize("role", ROLES)
def test_users_pages_are_for_full_administrators_only(
    request: pytest.FixtureRequest, full_admin: User, role: str
) -> None:
    user = None if role == "anonymous" else request.getfixturevalue(role)
    client = logged_in(user)
    expected = {"full_admin": 200, "anonymous": 302}.get(role, 403)
    for url in user_pages(full_admin):
        assert client.get(url).status_code == expected, url


def test_the_users_node_is_in_the_tree_only_for_full_administrators(
    full_admin: User, administrator: User
) -> None:
    assert "Users and Roles" in logged_in(full_admin).get("/").content.decode()
    html = logged_in(administrator).get("/").content.decode()
    assert "Users and Roles" not in html and "Audit Log" in html


def test_an_administrator_cannot_change_users(
    full_admin: User, administrator: User, view_only: User
) -> None:
    client = logged_in(administrator)
    data = {"username": "vera-viewer", "is_active": "on", "role": "full_administrator"}
    assert client.post(f"/administration/users/{view_only.pk}/", data).status_code == 403
    assert client.post("/administration/users/new/", {**data, "username": "x"}).status_code == 403
    assert client.post(f"/administration/users/{view_only.pk}/delete/").status_code == 403
    assert role_of(User.objects.get(pk=view_only.pk)) is Role.VIEW_ONLY
    assert not User.objects.filter(username="x").exists()
    assert not AuditEntry.objects.exists()


def test_the_user_list_shows_roles_and_sorts(
    full_admin: User, administrator: User, view_only: User
) -> None:
    client = logged_in(full_admin)
    html = pane(client.get("/administration/users/?sort=username&dir=asc").content.decode())
    assert html.index("adam-admin") < html.index("fiona-full") < html.index("vera-viewer")
    assert "View Only Administrator" in html and "New User" in html
    html = pane(client.get("/administration/users/?sort=username&dir=desc").content.decode())
    assert html.index("vera-viewer") < html.index("fiona-full") < html.index("adam-admin")


# --- users and roles: changes -----------------------------------------------------------------


def new_user_form(client: Client, **changes: str) -> dict[str, Any]:
    data = form_data(client.get("/administration/users/new/").content)
    data.update(changes)
    return data


def test_a_full_administrator_creates_a_user_with_a_role_and_it_is_audited(
    full_admin: User,
) -> None:
    client = logged_in(full_admin)
    data = new_user_form(
        client,
        username="nina",
        email="nina@example.com",
        role="administrator",
        new_password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
    )
    response = client.post("/administration/users/new/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    nina = User.objects.get(username="nina")
    assert response["Location"] == f"/administration/users/{nina.pk}/"
    assert nina.check_password(NEW_PASSWORD)
    assert role_of(nina) is Role.ADMINISTRATOR
    entries = {
        e.field: e for e in AuditEntry.objects.filter(object_type="User", object_id=str(nina.pk))
    }
    assert entries["role"].new_value == "Administrator"
    assert entries["password"].new_value == "changed"
    assert all(
        NEW_PASSWORD not in e.new_value and "md5$" not in e.new_value for e in entries.values()
    )


def test_a_new_user_defaults_to_view_only(full_admin: User) -> None:
    data = new_user_form(logged_in(full_admin))
    assert data["role"] == "view_only"
    assert data["is_active"] == "on"


@pytest.mark.parametrize(
    ("password", "confirm", "message"),
    [
        ("", "", "A new user needs a password."),
        ("Zq9!x", "Zq9!x", "This password is too short."),
        ("password123", "password123", "This password is too common."),
        (NEW_PASSWORD, "something-else", "The two passwords differ."),
    ],
)
def test_a_new_user_needs_a_good_password(
    full_admin: User, password: str, confirm: str, message: str
) -> None:
    client = logged_in(full_admin)
    data = new_user_form(client, username="nina", new_password=password, confirm_password=confirm)
    response = client.post("/administration/users/new/", data)
    html = response.content.decode()
    assert response.status_code == 400
    assert message in html
    assert 'data-tab="tab-2"' in html.split('aria-selected="true"')[1][:80]  # the Password tab
    assert not User.objects.filter(username="nina").exists()
    if password:
        assert password not in html


def test_a_taken_user_name_is_refused(full_admin: User, view_only: User) -> None:
    client = logged_in(full_admin)
    data = new_user_form(
        client, username="vera-viewer", new_password=NEW_PASSWORD, confirm_password=NEW_PASSWORD
    )
    response = client.post("/administration/users/new/", data)
    assert response.status_code == 400
    assert "already exists" in response.content.decode()


def test_a_full_administrator_changes_a_role_and_a_password(
    full_admin: User, view_only: User
) -> None:
    client = logged_in(full_admin)
    url = f"/administration/users/{view_only.pk}/"
    html = client.get(url).content.decode()
    assert "md5$" not in html and "pbkdf2" not in html  # the hash is never shown
    data = form_data(html)
    data.update(role="administrator", new_password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    assert client.post(url, data).status_code == 302
    vera = User.objects.get(pk=view_only.pk)
    assert role_of(vera) is Role.ADMINISTRATOR and vera.check_password(NEW_PASSWORD)
    changes = {
        e.field: (e.old_value, e.new_value)
        for e in AuditEntry.objects.filter(object_id=str(vera.pk))
    }
    assert changes["role"] == ("View Only Administrator", "Administrator")
    assert changes["password"] == ("", "changed")


def test_a_blank_password_keeps_the_current_one(full_admin: User, view_only: User) -> None:
    client = logged_in(full_admin)
    url = f"/administration/users/{view_only.pk}/"
    data = form_data(client.get(url).content)
    data["email"] = "vera@example.com"
    assert client.post(url, data).status_code == 302
    vera = User.objects.get(pk=view_only.pk)
    assert vera.check_password(PASSWORD) and vera.email == "vera@example.com"
    assert list(AuditEntry.objects.values_list("field", flat=True)) == ["email"]


def test_changing_ones_own_password_keeps_one_logged_in(full_admin: User) -> None:
    client = logged_in(full_admin)
    url = f"/administration/users/{full_admin.pk}/"
    data = form_data(client.get(url).content)
    data.update(new_password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    assert client.post(url, data).status_code == 302
    assert client.get(url).status_code == 200


@pytest.mark.parametrize(
    ("change", "field"), [({"role": "administrator"}, "role"), ({"is_active": ""}, "is_active")]
)
def test_the_last_full_administrator_cannot_be_demoted_or_deactivated(
    full_admin: User, change: dict[str, str], field: str
) -> None:
    client = logged_in(full_admin)
    url = f"/administration/users/{full_admin.pk}/"
    data = form_data(client.get(url).content)
    data.update(change)
    if not change.get("is_active", "on"):
        data.pop("is_active")
    response = client.post(url, data)
    html = response.content.decode()
    assert response.status_code == 400
    assert LAST_FULL_ADMINISTRATOR in html
    at = html.index(f'name="{field}"')
    assert LAST_FULL_ADMINISTRATOR in html[at : html.index("</div>", html.index("</div>", at) + 1)]
    fiona = User.objects.get(pk=full_admin.pk)
    assert fiona.is_active and role_of(fiona) is Role.FULL
    assert not AuditEntry.objects.exists()


def test_a_full_administrator_may_be_demoted_when_another_remains(
    full_admin: User, administrator: User
) -> None:
    set_role(administrator, Role.FULL)
    client = logged_in(administrator)
    url = f"/administration/users/{full_admin.pk}/"
    data = form_data(client.get(url).content)
    data["role"] = "view_only"
    assert client.post(url, data).status_code == 302
    assert role_of(User.objects.get(pk=full_admin.pk)) is Role.VIEW_ONLY


def test_the_last_full_administrator_cannot_be_deleted(full_admin: User) -> None:
    client = logged_in(full_admin)
    url = f"/administration/users/{full_admin.pk}/delete/"
    html = client.get(url).content.decode()
    assert LAST_FULL_ADMINISTRATOR in html and ">Delete</button>" not in html
    assert client.post(url).status_code == 409
    assert User.objects.filter(pk=full_admin.pk).exists()


def test_a_full_administrator_deletes_a_user_and_it_is_audited(
    full_admin: User, view_only: User
) -> None:
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=view_only)
    client = logged_in(full_admin)
    url = f"/administration/users/{view_only.pk}/delete/"
    html = client.get(url).content.decode()
    assert token.key not in html and "API token" in html
    assert client.post(url).status_code == 302
    assert not User.objects.filter(pk=view_only.pk).exists()
    deleted = AuditEntry.objects.get(action="delete")
    assert (deleted.object_type, deleted.object_repr) == ("User", "vera-viewer")


def test_the_api_refuses_the_same_last_administrator_change(full_admin: User, api_as: Any) -> None:
    response = api_as(full_admin).patch(
        f"/api/v1/users/{full_admin.pk}/", {"role": "administrator"}, format="json"
    )
    assert response.status_code == 409
    assert LAST_FULL_ADMINISTRATOR in str(response.json())
