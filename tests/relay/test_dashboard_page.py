"""The Dashboard page: the console opens on it after logging in, every role may read it (no role:
403, anonymous: the login page), the tree has a Dashboard node at the top, and the organization
sheet keeps a URL of its own."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import PASSWORD
from tests.relay.queue_world import html_of, logged_in

pytestmark = pytest.mark.django_db

PAGE = "/"


@pytest.mark.parametrize("who", ["view_only", "administrator", "full_admin"])
def test_every_role_reads_the_dashboard(who: str, request: pytest.FixtureRequest) -> None:
    response = logged_in(request.getfixturevalue(who)).get(PAGE)
    assert response.status_code == 200
    html = html_of(response)
    assert "<h1>Dashboard</h1>" in html
    assert '<svg class="chart-svg"' in html
    assert 'id="dashboard-figures"' in html


def test_a_user_without_a_role_is_refused(outsider: User) -> None:
    assert logged_in(outsider).get(PAGE).status_code == 403


def test_an_anonymous_visitor_is_sent_to_the_login_page() -> None:
    response = Client().get(PAGE)
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_logging_in_lands_on_the_dashboard(view_only: User) -> None:
    client = Client()
    response = client.post(
        "/login/", {"username": view_only.username, "password": PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/"
    assert "<h1>Dashboard</h1>" in html_of(response)


def test_the_tree_has_the_dashboard_at_the_top_and_marks_it(view_only: User) -> None:
    html = html_of(logged_in(view_only).get(PAGE))
    keys = re.findall(r'data-key="([^"]+)"', html)
    assert keys[:2] == ["organization", "dashboard"]
    assert 'class="node selected" data-key="dashboard"' in html
    assert '<a href="/" aria-current="page">Dashboard</a>' in html


def test_the_organization_sheet_keeps_its_own_url(view_only: User) -> None:
    client = logged_in(view_only)
    sheet = html_of(client.get("/organization/"))
    assert "Message Delivery Properties" in sheet
    assert 'data-key="dashboard"' in sheet
    assert '<a href="/organization/">First Organization</a>' in html_of(client.get(PAGE))


def test_the_page_refreshes_its_figures_from_the_fragment_url_at_the_setting(
    view_only: User, settings: object
) -> None:
    settings.SMTPADMIN_DASHBOARD_REFRESH_SECONDS = 45  # type: ignore[attr-defined]
    html = html_of(logged_in(view_only).get(PAGE + "?hours=6"))
    assert 'hx-get="/dashboard/figures/?hours=6"' in html
    assert 'hx-trigger="every 45s"' in html
    assert "<script" not in html.split('id="pane"', 1)[1]  # the CSP allows no inline script
