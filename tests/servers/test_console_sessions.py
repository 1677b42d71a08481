"""The Current Sessions page: the live sessions with Terminate per row and Terminate All for
those who may change things (POST forms with CSRF; refused when forged by a view-only
administrator), a "terminating" note, and a list that refreshes itself with htmx but works
without JavaScript."""

from __future__ import annotations

import datetime
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from servers.models import SessionFacts, SmtpSession, VirtualServer, sync_live_sessions
from smtpadmin.models import AuditEntry
from tests.servers.console_world import World, build_world, html_of, logged_in

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 11, 27, 9, 30, tzinfo=datetime.UTC)
HTMX = {"HX-Request": "true"}


@pytest.fixture
def world(db: object) -> World:
    world = build_world()
    other = VirtualServer.objects.create(server=world.server, name="Submission", port=2587)
    sync_live_sessions(
        world.server.pk,
        [
            SessionFacts(
                virtual_server_id=world.virtual_server.pk,
                key="mx1/1/1",
                client_address="192.0.2.7",
                client_port=51234,
                connected_at=T0,
                client_name="client.example.net",
                helo="helo.example.net",
                auth_user="alice",
                tls=True,
                messages=4,
            ),
            SessionFacts(
                virtual_server_id=world.virtual_server.pk,
                key="mx1/1/2",
                client_address="2001:db8::9",
                client_port=40000,
                connected_at=T0 + datetime.timedelta(minutes=5),
                helo="<script>alert(1)</script>",
            ),
            SessionFacts(
                virtual_server_id=other.pk,
                key="mx1/1/3",
                client_address="198.51.100.1",
                client_port=40001,
                connected_at=T0,
            ),
        ],
    )
    return world


def page(world: World) -> str:
    return f"/servers/virtual-servers/{world.virtual_server.pk}/sessions/"


def terminate_url(world: World, key: str) -> str:
    return f"{page(world)}{SmtpSession.objects.get(key=key).pk}/terminate/"


def all_url(world: World) -> str:
    return f"{page(world)}terminate-all/"


def rows(html: str) -> list[str]:
    body = html[html.index("<tbody>") : html.index("</tbody>")]
    return re.findall(r"<tr.*?</tr>", body, flags=re.S)


def test_the_page_lists_the_sessions_of_this_virtual_server(view_only: User, world: World) -> None:
    html = html_of(logged_in(view_only).get(page(world)))
    for header in (
        "Connected client",
        "From (HELO)",
        "Authenticated user",
        "Since",
        "Messages",
        "TLS",
    ):
        assert f">{header}" in html
    first, second = rows(html)
    for text in ("192.0.2.7:51234 (client.example.net)", "helo.example.net", "alice", ">4<"):
        assert text in first
    assert ">yes<" in first
    assert "[2001:db8::9]:40000" in second and ">no<" in second
    assert "198.51.100.1" not in html  # Submission's session


def test_what_a_client_sent_is_shown_as_text(view_only: User, world: World) -> None:
    html = html_of(logged_in(view_only).get(page(world)))
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_an_administrator_gets_terminate_buttons_as_post_forms_with_csrf(
    administrator: User, world: World
) -> None:
    html = html_of(logged_in(administrator).get(page(world)))
    for action in (
        terminate_url(world, "mx1/1/1"),
        terminate_url(world, "mx1/1/2"),
        all_url(world),
    ):
        form = re.search(rf'<form method="post" action="{re.escape(action)}".*?</form>', html)
        assert form, action
        assert 'name="csrfmiddlewaretoken"' in form.group(0)
    assert html.count(">Terminate</button>") == 2
    assert html.count(">Terminate All</button>") == 1


def test_a_view_only_administrator_sees_no_buttons(view_only: User, world: World) -> None:
    html = html_of(logged_in(view_only).get(page(world)))
    assert "Terminate" not in html
    assert 'method="post" action="/servers/' not in html


@pytest.mark.parametrize("target", ["one", "all"])
def test_a_forged_terminate_from_a_view_only_administrator_is_refused(
    view_only: User, world: World, target: str
) -> None:
    url = terminate_url(world, "mx1/1/1") if target == "one" else all_url(world)
    response = logged_in(view_only).post(url)
    assert response.status_code == 403
    assert not SmtpSession.objects.filter(terminate_requested_at__isnull=False).exists()
    assert not AuditEntry.objects.exists()


def test_outsiders_and_anonymous_visitors_cannot_terminate(outsider: User, world: World) -> None:
    assert logged_in(outsider).post(all_url(world)).status_code == 403
    anonymous = logged_in(None).post(all_url(world))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    assert not SmtpSession.objects.filter(terminate_requested_at__isnull=False).exists()


def test_a_post_without_the_csrf_token_is_refused(administrator: User, world: World) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(administrator)
    assert client.post(all_url(world)).status_code == 403
    assert not SmtpSession.objects.filter(terminate_requested_at__isnull=False).exists()


def test_terminate_marks_the_session_audits_it_and_shows_terminating(
    administrator: User, world: World
) -> None:
    client = logged_in(administrator)
    response = client.post(terminate_url(world, "mx1/1/1"), {"next": page(world)}, follow=True)
    assert response.redirect_chain[-1] == (page(world), 302)
    html = html_of(response)
    assert "Terminating the session of 192.0.2.7:51234 (client.example.net)." in html
    first, second = rows(html)
    assert "terminating" in first and ">Terminate</button>" not in first
    assert "terminating" not in second and ">Terminate</button>" in second
    ending = SmtpSession.objects.get(key="mx1/1/1")
    assert ending.terminate_requested_by == "adam-admin"
    entry = AuditEntry.objects.get()
    assert entry.object_id == str(world.virtual_server.pk) and entry.new_value == "terminate"


def test_view_only_administrators_see_which_sessions_are_ending(
    administrator: User, view_only: User, world: World
) -> None:
    logged_in(administrator).post(terminate_url(world, "mx1/1/2"))
    first, second = rows(html_of(logged_in(view_only).get(page(world))))
    assert "terminating" not in first and "terminating" in second


def test_terminate_all_ends_every_session_of_this_virtual_server_only(
    full_admin: User, world: World
) -> None:
    response = logged_in(full_admin).post(all_url(world), follow=True)
    assert "Terminating 2 sessions of" in html_of(response)
    ending = SmtpSession.objects.filter(terminate_requested_at__isnull=False)
    assert {s.key for s in ending} == {"mx1/1/1", "mx1/1/2"}
    assert all("terminating" in row for row in rows(html_of(response)))


def test_terminating_a_session_that_just_ended_says_so(administrator: User, world: World) -> None:
    url = terminate_url(world, "mx1/1/1")
    sync_live_sessions(world.server.pk, [])  # the client hung up meanwhile
    response = logged_in(administrator).post(url, follow=True)
    assert response.status_code == 200
    assert "That session has already ended." in html_of(response)
    assert not AuditEntry.objects.exists()


def test_a_session_of_another_virtual_server_is_not_terminated_through_this_one(
    administrator: User, world: World
) -> None:
    other = SmtpSession.objects.get(key="mx1/1/3")
    logged_in(administrator).post(f"{page(world)}{other.pk}/terminate/")
    other.refresh_from_db()
    assert other.terminate_requested_at is None


def test_an_unknown_virtual_server_is_a_404(administrator: User, world: World) -> None:
    client = logged_in(administrator)
    assert client.get("/servers/virtual-servers/999999/sessions/").status_code == 404
    assert client.post("/servers/virtual-servers/999999/sessions/terminate-all/").status_code == 404
    assert client.post("/servers/virtual-servers/999999/sessions/1/terminate/").status_code == 404


def test_terminate_needs_a_post(administrator: User, world: World) -> None:
    assert logged_in(administrator).get(all_url(world)).status_code == 405


def test_without_sessions_the_page_says_so_and_offers_no_terminate_all(
    administrator: User, world: World
) -> None:
    sync_live_sessions(world.server.pk, [])
    html = html_of(logged_in(administrator).get(page(world)))
    assert "No client is connected to this virtual server." in html
    assert "Terminate All" not in html


def test_the_columns_sort(view_only: User, world: World) -> None:
    html = html_of(logged_in(view_only).get(page(world), {"sort": "connected_at", "dir": "desc"}))
    first, _second = rows(html)
    assert "2001:db8::9" in first


# --- refreshing --------------------------------------------------------------------------------


def test_the_list_asks_htmx_to_refresh_it_every_few_seconds(view_only: User, world: World) -> None:
    html = html_of(logged_in(view_only).get(page(world)))
    assert re.search(r'<script src="/static/vendor/htmx-[\d.]+\.min\.js" defer>', html)
    region = re.search(r'<div id="sessions" hx-get="([^"]+)" hx-trigger="every (\d+)s"', html)
    assert region and region.group(1) == page(world) and 1 <= int(region.group(2)) <= 10
    # Without JavaScript: a plain link reloads the page.
    assert f'<a class="button" href="{page(world)}">Refresh</a>' in html


def test_a_refresh_answers_the_list_alone_with_live_forms(
    administrator: User, world: World
) -> None:
    client = logged_in(administrator)
    client.get(page(world))  # warm the session and the role cache
    response = client.get(page(world), headers=HTMX)
    html = html_of(response)
    assert html.lstrip().startswith('<div id="sessions"')
    assert "<html" not in html and 'id="tree"' not in html
    assert "192.0.2.7:51234" in html
    assert html.count('name="csrfmiddlewaretoken"') == 3  # two rows and Terminate All
    assert "HX-Request" in response["Vary"]  # a cached table is never shown as the page
    # The refreshed region refreshes itself again, keeping the sort order.
    sorted_refresh = html_of(client.get(page(world), {"sort": "messages"}, headers=HTMX))
    assert 'hx-get="/servers/virtual-servers/' in sorted_refresh
    assert "sort=messages" in sorted_refresh


def test_a_refresh_after_the_login_expired_sends_the_browser_to_the_login_page(
    world: World,
) -> None:
    response = logged_in(None).get(page(world), headers=HTMX)
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login/?next=")


def test_a_refresh_shows_that_a_session_ended(view_only: User, world: World) -> None:
    client = logged_in(view_only)
    assert "192.0.2.7" in html_of(client.get(page(world), headers=HTMX))
    sync_live_sessions(world.server.pk, [])
    html = html_of(client.get(page(world), headers=HTMX))
    assert "192.0.2.7" not in html and "No client is connected" in html
