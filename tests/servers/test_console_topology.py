"""Servers in the console: the New Server page, the server's sheet and its deletion."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from servers.models import RoutingGroup, Server, VirtualServer
from smtpadmin.models import AuditEntry
from tests.servers.console_world import World, build_world, html_of, logged_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db: object) -> World:
    return build_world()


def test_an_administrator_adds_a_server(administrator: User, world: World) -> None:
    group = RoutingGroup.first()
    response = logged_in(administrator).post(
        "/servers/new/",
        {"name": "mx2", "fqdn": "MX2.Example.com.", "routing_group": str(group.pk)},
    )
    assert response.status_code == 302
    server = Server.objects.get(name="mx2")
    assert response["Location"] == f"/servers/{server.pk}/"
    assert server.fqdn == "mx2.example.com"
    assert AuditEntry.objects.filter(object_id=str(server.pk), action="create").exists()


def test_the_new_server_page_proposes_the_first_routing_group(
    administrator: User, world: World
) -> None:
    html = html_of(logged_in(administrator).get("/servers/new/"))
    assert f'<option value="{world.server.routing_group_id}" selected>' in html


def test_an_administrator_renames_a_server_and_it_is_audited(
    administrator: User, world: World
) -> None:
    response = logged_in(administrator).post(
        f"/servers/{world.server.pk}/",
        {
            "name": "mx1",
            "fqdn": "relay1.example.com",
            "routing_group": str(world.server.routing_group_id),
            "drop_directory": "/srv/maildrop",
        },
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(field="fqdn")
    assert (entry.username, entry.old_value, entry.new_value) == (
        administrator.username,
        "mx1.example.com",
        "relay1.example.com",
    )


def test_a_bad_fqdn_is_shown_at_its_field(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        f"/servers/{world.server.pk}/",
        {"name": "mx1", "fqdn": "not a name", "routing_group": str(world.server.routing_group_id)},
    )
    assert response.status_code == 400
    html = html_of(response)
    field = html[html.index('name="fqdn"') :]
    assert field.index('class="errorlist"') < field.index('name="routing_group"')
    assert Server.objects.get(pk=world.server.pk).fqdn == "mx1.example.com"


def test_the_server_sheet_shows_its_heartbeat(view_only: User, world: World) -> None:
    Server.objects.filter(pk=world.server.pk).update(version="0.1.0", address="192.0.2.1")
    html = html_of(logged_in(view_only).get(f"/servers/{world.server.pk}/"))
    assert "<dt>Status</dt><dd>Never seen</dd>" in html
    assert "<dt>Version</dt><dd>0.1.0</dd>" in html


def test_a_view_only_administrator_cannot_change_servers(view_only: User, world: World) -> None:
    client = logged_in(view_only)
    group = str(world.server.routing_group_id)
    assert client.post("/servers/new/", {"name": "x", "routing_group": group}).status_code == 403
    assert (
        client.post(
            f"/servers/{world.server.pk}/", {"name": "hijack", "routing_group": group}
        ).status_code
        == 403
    )
    assert client.post(f"/servers/{world.server.pk}/delete/").status_code == 403
    assert list(Server.objects.values_list("name", flat=True)) == ["mx1"]
    assert not AuditEntry.objects.exists()


def test_a_server_with_virtual_servers_cannot_be_deleted(administrator: User, world: World) -> None:
    url = f"/servers/{world.server.pk}/delete/"
    html = html_of(logged_in(administrator).get(url))
    assert "It cannot be deleted while these depend on it" in html
    assert "Virtual Server: Default SMTP Virtual Server (mx1)" in html
    assert ">Delete</button>" not in html
    assert "Your role cannot delete" not in html
    assert logged_in(administrator).post(url).status_code == 409
    assert Server.objects.filter(pk=world.server.pk).exists()


def test_an_empty_server_is_deleted_and_audited(administrator: User, world: World) -> None:
    VirtualServer.objects.all().delete()
    response = logged_in(administrator).post(f"/servers/{world.server.pk}/delete/")
    assert response.status_code == 302
    assert response["Location"] == "/servers/"
    assert not Server.objects.exists()
    assert AuditEntry.objects.get(action="delete").object_repr == "mx1"


def test_the_outsider_and_the_anonymous_cannot_post(outsider: User, world: World) -> None:
    url = f"/servers/virtual-servers/{world.virtual_server.pk}/pause/"
    assert logged_in(outsider).post(url).status_code == 403
    anonymous = logged_in(None).post(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    assert VirtualServer.objects.get().desired_state == "running"
