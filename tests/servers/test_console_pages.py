"""Every page of the servers console for every role; the tree with its status badges; lists
that sort; view-only pages without buttons."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from servers.models import RoutingGroup, Server, VirtualServer
from tests.servers.console_world import World, build_world, html_of, logged_in

pytestmark = pytest.mark.django_db

PAGES: dict[str, Callable[[World], str]] = {
    "servers": lambda w: "/servers/",
    "new server": lambda w: "/servers/new/",
    "server": lambda w: f"/servers/{w.server.pk}/",
    "delete server": lambda w: f"/servers/{w.server.pk}/delete/",
    "protocols": lambda w: f"/servers/{w.server.pk}/protocols/",
    "smtp": lambda w: f"/servers/{w.server.pk}/smtp/",
    "new virtual server": lambda w: f"/servers/{w.server.pk}/smtp/new/",
    "virtual server": lambda w: f"/servers/virtual-servers/{w.virtual_server.pk}/",
    "delete virtual server": lambda w: f"/servers/virtual-servers/{w.virtual_server.pk}/delete/",
    "current sessions": lambda w: f"/servers/virtual-servers/{w.virtual_server.pk}/sessions/",
    "accepted domains": lambda w: "/servers/accepted-domains/",
    "new accepted domain": lambda w: "/servers/accepted-domains/new/",
    "accepted domain": lambda w: f"/servers/accepted-domains/{w.domain.pk}/",
    "delete accepted domain": lambda w: f"/servers/accepted-domains/{w.domain.pk}/delete/",
    "mailboxes": lambda w: "/servers/mailboxes/",
    "new mailbox": lambda w: "/servers/mailboxes/new/",
    "mailbox": lambda w: f"/servers/mailboxes/{w.mailbox.pk}/",
    "delete mailbox": lambda w: f"/servers/mailboxes/{w.mailbox.pk}/delete/",
    "smtp credentials": lambda w: "/servers/smtp-credentials/",
    "new smtp credential": lambda w: "/servers/smtp-credentials/new/",
    "smtp credential": lambda w: f"/servers/smtp-credentials/{w.credential.pk}/",
    "delete smtp credential": lambda w: f"/servers/smtp-credentials/{w.credential.pk}/delete/",
    "certificates": lambda w: "/servers/certificates/",
    "upload certificate": lambda w: "/servers/certificates/upload/",
    "generate certificate": lambda w: "/servers/certificates/generate/",
    "certificate": lambda w: f"/servers/certificates/{w.certificate.pk}/",
    "delete certificate": lambda w: f"/servers/certificates/{w.certificate.pk}/delete/",
}

# What each role gets on GET: a page, a refusal, or the login page.
ROLES = {
    "full_admin": 200,
    "administrator": 200,
    "view_only": 200,
    "outsider": 403,
    "anonymous": 302,
}


@pytest.fixture
def world(db: object) -> World:
    return build_world()


def person(request: pytest.FixtureRequest, role: str) -> User | None:
    return None if role == "anonymous" else request.getfixturevalue(role)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", PAGES)
def test_every_page_answers_each_role_as_its_rights_allow(
    request: pytest.FixtureRequest, world: World, page: str, role: str
) -> None:
    url = PAGES[page](world)
    response = logged_in(person(request, role)).get(url)
    assert response.status_code == ROLES[role], (page, role)
    if role == "anonymous":
        assert response["Location"].startswith("/login/?next=")
    if role == "outsider":
        assert "mx1" not in html_of(response)


def test_an_unknown_object_is_not_found(administrator: User) -> None:
    assert logged_in(administrator).get("/servers/virtual-servers/999/").status_code == 404
    assert logged_in(administrator).get("/servers/999/smtp/").status_code == 404


@pytest.mark.parametrize(
    "page",
    ["virtual server", "server", "accepted domain", "mailbox", "smtp credential", "certificate"],
)
def test_a_view_only_administrator_sees_sheets_read_only_without_buttons(
    view_only: User, world: World, page: str
) -> None:
    html = html_of(logged_in(view_only).get(PAGES[page](world)))
    assert "your role cannot change them" in html
    assert ">OK</button>" not in html
    assert "disabled" in html
    for button in (">Delete<", ">Start<", ">Stop<", ">Pause<"):
        assert button not in html


@pytest.mark.parametrize(
    "page", ["servers", "smtp", "accepted domains", "mailboxes", "smtp credentials", "certificates"]
)
def test_a_view_only_administrator_sees_lists_without_new_or_state_buttons(
    view_only: User, world: World, page: str
) -> None:
    html = html_of(logged_in(view_only).get(PAGES[page](world)))
    assert ">New " not in html and "Upload PEM" not in html
    assert ">Stop<" not in html and ">Pause<" not in html


def test_an_administrator_sees_the_buttons(administrator: User, world: World) -> None:
    client = logged_in(administrator)
    smtp = html_of(client.get(PAGES["smtp"](world)))
    assert "New SMTP Virtual Server" in smtp
    assert ">Stop</button>" in smtp and ">Pause</button>" in smtp
    # The button for the state it is already in is not offered.
    assert ">Start</button>" not in smtp
    sheet = html_of(client.get(PAGES["virtual server"](world)))
    assert ">Pause</button>" in sheet and ">Delete</a>" in sheet


def test_the_tree_shows_servers_and_virtual_servers_with_their_status(
    administrator: User, world: World
) -> None:
    Server.objects.filter(pk=world.server.pk).update(last_seen=timezone.now())
    stale = Server.objects.create(
        name="mx2",
        routing_group=world.server.routing_group,
        last_seen=timezone.now() - timedelta(hours=1),
    )
    Server.objects.create(name="mx3", routing_group=world.server.routing_group)
    VirtualServer.objects.filter(pk=world.virtual_server.pk).update(state="running")
    VirtualServer.objects.create(
        server=stale, name="Paused VS", port=25, desired_state="paused", state="paused"
    )
    VirtualServer.objects.create(
        server=stale,
        name="Broken VS",
        port=26,
        state="disabled",
        state_reason="address already in use",
    )
    VirtualServer.objects.create(
        server=stale, name="Pausing VS", port=27, desired_state="paused", state="running"
    )
    html = html_of(logged_in(administrator).get("/servers/"))
    assert f'data-key="server-{world.server.pk}"' in html
    assert 'class="status status-running" title="Running"' in html
    assert 'class="status status-not_responding" title="Not responding"' in html
    assert 'class="status status-never_seen" title="Never seen"' in html
    assert ">Protocols</a>" in html and ">SMTP</a>" in html
    # A server's SMTP container is a branch: open on its own page, and on request.
    html = html_of(logged_in(administrator).get(f"/servers/{stale.pk}/smtp/"))
    assert ">Current Sessions</a>" in html
    assert "status-paused" in html
    assert "disabled: address already in use" in html
    assert "running → paused" in html
    fragment = html_of(logged_in(administrator).get(f"/tree/server-{world.server.pk}-smtp/"))
    assert f'data-key="vs-{world.virtual_server.pk}"' in fragment


def test_the_tree_costs_the_same_queries_however_many_servers(
    administrator: User, world: World
) -> None:
    client = logged_in(administrator)
    client.get("/servers/accepted-domains/")  # warm the session and the role cache

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/servers/accepted-domains/").status_code == 200
        return len(captured)

    before = queries()
    group = RoutingGroup.first()
    for n in range(4):
        server = Server.objects.create(name=f"extra{n}", routing_group=group)
        VirtualServer.objects.create(server=server, port=25)
        VirtualServer.objects.create(server=server, port=26)
    assert queries() == before


def test_the_servers_section_opens_the_servers_list(administrator: User, world: World) -> None:
    html = html_of(logged_in(administrator).get("/servers/"))
    assert '<a href="/servers/" aria-current="page">Servers</a>' in html
    assert "mx1.example.com" in html and "First Routing Group" in html
    assert "New Server" in html


def test_a_list_sorts_by_a_column_both_ways(administrator: User, world: World) -> None:
    for name in ("alpha", "zulu"):
        Server.objects.create(name=name, routing_group=world.server.routing_group)
    client = logged_in(administrator)
    ascending = html_of(client.get("/servers/?sort=name&dir=asc"))
    descending = html_of(client.get("/servers/?sort=name&dir=desc"))
    pane = ascending.split('<main class="pane"')[1]
    assert pane.index(">alpha<") < pane.index(">mx1<") < pane.index(">zulu<")
    pane = descending.split('<main class="pane"')[1]
    assert pane.index(">zulu<") < pane.index(">mx1<") < pane.index(">alpha<")
    assert 'aria-sort="descending"' in descending


def test_the_smtp_container_lists_bindings_and_states(administrator: User, world: World) -> None:
    VirtualServer.objects.create(
        server=world.server,
        name="Submission",
        ip_address="192.0.2.10",
        port=587,
        state="disabled",
        state_reason="address not available",
    )
    html = html_of(logged_in(administrator).get(PAGES["smtp"](world)))
    assert "(All Unassigned):2525" in html
    assert "192.0.2.10:587" in html
    assert "address not available" in html


def test_current_sessions_wait_for_the_relay_worker(view_only: User, world: World) -> None:
    html = html_of(logged_in(view_only).get(PAGES["current sessions"](world)))
    assert "Sessions appear here when the relay worker reports them." in html
    assert "Connected client" in html and "Authenticated user" in html


def test_protocols_lead_to_smtp(view_only: User, world: World) -> None:
    html = html_of(logged_in(view_only).get(PAGES["protocols"](world)))
    assert f'href="/servers/{world.server.pk}/smtp/"' in html
