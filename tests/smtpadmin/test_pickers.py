"""Pickers with many options search instead of listing them all (the bridgeheads of a
connector, the simulator's virtual server, the wizard's server, a credential's virtual
servers); with few they are the plain widgets they always were. The server validates the
submitted ids against all objects, whatever the page showed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from connectors.models import Connector
from servers.models import RoutingGroup, Server, SmtpCredential, VirtualServer
from smtpadmin.pickers import PICKER_LIMIT, RESULTS
from tests.html_forms import form_data, values

pytestmark = pytest.mark.django_db


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_virtual_servers(count: int, prefix: str = "node") -> list[VirtualServer]:
    """``count`` virtual servers "vs-0000".. on servers "node-00".. (ten a server)."""
    group = RoutingGroup.first()
    servers = Server.objects.bulk_create(
        Server(name=f"{prefix}-{n:02d}", routing_group=group) for n in range((count + 9) // 10)
    )
    VirtualServer.objects.bulk_create(
        VirtualServer(server=servers[n // 10], name=f"vs-{n:04d}", port=2000 + n % 10)
        for n in range(count)
    )
    return list(VirtualServer.objects.order_by("name"))


@pytest.fixture
def many(db: Any) -> list[VirtualServer]:
    return make_virtual_servers(PICKER_LIMIT + 20)


@pytest.fixture
def connector(many: list[VirtualServer]) -> Connector:
    connector = Connector.objects.create(name="Partner", routing_group=RoutingGroup.first())
    connector.bridgeheads.set(many[:2])
    connector.address_spaces.create(domain="partner.example", cost=1)
    return connector


def bridgehead_boxes(html: str) -> list[str]:
    return re.findall(r'<input type="checkbox" name="bridgeheads" value="(\d+)"', html)


def test_few_virtual_servers_are_listed_as_before(administrator: User) -> None:
    vss = make_virtual_servers(3)
    html = logged_in(administrator).get("/connectors/new/").content.decode()
    assert sorted(bridgehead_boxes(html)) == sorted(str(vs.pk) for vs in vss)
    assert "data-picker" not in html


def test_many_virtual_servers_show_only_the_chosen_ones_and_a_search(
    administrator: User, connector: Connector, many: list[VirtualServer]
) -> None:
    html = logged_in(administrator).get(f"/connectors/{connector.pk}/").content.decode()
    assert sorted(bridgehead_boxes(html)) == sorted(str(vs.pk) for vs in many[:2])
    assert 'hx-get="/pickers/virtual-servers/?name=bridgeheads&amp;kind=checkbox"' in html
    # A new connector has none chosen: no box at all, just the search.
    html = logged_in(administrator).get("/connectors/new/").content.decode()
    assert bridgehead_boxes(html) == []
    assert "data-picker-search" in html


def test_a_bridgehead_found_by_search_is_saved(
    administrator: User, connector: Connector, many: list[VirtualServer]
) -> None:
    client = logged_in(administrator)
    url = f"/connectors/{connector.pk}/"
    data = form_data(client.get(url).content)
    assert len(values(data, "bridgeheads")) == 2
    data["bridgeheads"] = [*values(data, "bridgeheads"), str(many[-1].pk)]
    assert client.post(url, data).status_code == 302
    assert set(connector.bridgeheads.all()) == {*many[:2], many[-1]}


def test_an_id_that_is_no_virtual_server_is_refused(
    administrator: User, connector: Connector
) -> None:
    client = logged_in(administrator)
    url = f"/connectors/{connector.pk}/"
    data = form_data(client.get(url).content)
    for wrong in (["999999"], ["not-a-number"]):
        data["bridgeheads"] = wrong
        response = client.post(url, data)
        assert response.status_code == 400  # the sheet again, with the field's error
        assert "is not a valid" in response.content.decode() or "valid choice" in (
            response.content.decode()
        )
    assert set(connector.bridgeheads.all()) == set(VirtualServer.objects.order_by("name")[:2])


def test_the_search_answers_matching_checkboxes_without_the_chosen_ones(
    view_only: User, many: list[VirtualServer]
) -> None:
    client = logged_in(view_only)
    chosen = many[0]
    response = client.get(
        "/pickers/virtual-servers/",
        {"name": "bridgeheads", "kind": "checkbox", "q": "VS-000", "bridgeheads": str(chosen.pk)},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert bridgehead_boxes(html) == [str(vs.pk) for vs in many[1:10]]
    assert f"{many[1].name} ({many[1].server.name})" in html


def test_the_search_is_bounded_and_says_there_is_more(
    view_only: User, many: list[VirtualServer]
) -> None:
    html = logged_in(view_only).get(
        "/pickers/virtual-servers/", {"name": "bridgeheads", "kind": "checkbox"}
    )
    assert len(bridgehead_boxes(html.content.decode())) == RESULTS
    assert "More match" in html.content.decode()


def test_the_search_finds_by_server_name(view_only: User, many: list[VirtualServer]) -> None:
    html = logged_in(view_only).get(
        "/pickers/virtual-servers/", {"name": "b", "kind": "checkbox", "q": "node-03"}
    )
    assert len(re.findall(r'name="b"', html.content.decode())) == 10


def test_the_search_as_options_keeps_the_selected_one(
    view_only: User, many: list[VirtualServer]
) -> None:
    chosen = many[-1]
    html = logged_in(view_only).get(
        "/pickers/virtual-servers/",
        {"name": "virtual_server", "q": "vs-0001", "virtual_server": str(chosen.pk), "blank": "1"},
    )
    text = html.content.decode()
    assert text.startswith('<option value="">—</option>')
    assert f'<option value="{chosen.pk}" selected>' in text
    assert f'<option value="{many[1].pk}">' in text


def test_the_simulator_and_the_wizard_search_servers_and_virtual_servers(
    administrator: User, many: list[VirtualServer]
) -> None:
    client = logged_in(administrator)
    html = client.get("/connectors/simulator/").content.decode()
    assert "/pickers/virtual-servers/?name=virtual_server&amp;kind=option&amp;blank=1" in html
    assert html.count("<option") < 5
    make_virtual_servers(PICKER_LIMIT * 10, prefix="more")  # more than PICKER_LIMIT servers too
    html = client.get("/connectors/internet-mail-wizard/").content.decode()
    assert "/pickers/servers/?name=" in html
    assert html.count("<option") < 10


@pytest.mark.parametrize("name", ["", "1abc", "a b", "x" * 101, "<script>"])
def test_a_bad_field_name_is_a_400(view_only: User, name: str) -> None:
    response = logged_in(view_only).get("/pickers/virtual-servers/", {"name": name})
    assert response.status_code == 400


def test_bad_ids_and_queries_are_ignored(view_only: User, many: list[VirtualServer]) -> None:
    response = logged_in(view_only).get(
        "/pickers/virtual-servers/",
        {"name": "b", "b": ["x", "-1", "9" * 40], "q": "z" * 5000, "kind": "nonsense"},
    )
    assert response.status_code == 200


def test_an_unknown_picker_is_a_404(view_only: User) -> None:
    assert logged_in(view_only).get("/pickers/passwords/?name=a").status_code == 404


def test_the_search_needs_a_role(outsider: User) -> None:
    assert logged_in(outsider).get("/pickers/servers/?name=a").status_code == 403
    response = Client().get("/pickers/servers/?name=a")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_credential_with_many_virtual_servers_searches_them(
    administrator: User, many: list[VirtualServer]
) -> None:
    credential = SmtpCredential(username="app")
    credential.set_password("app secret 1")
    credential.save()
    credential.virtual_servers.set([many[3]])
    client = logged_in(administrator)
    url = f"/servers/smtp-credentials/{credential.pk}/"
    html = client.get(url).content.decode()
    assert "/pickers/virtual-servers/?name=virtual_servers&amp;kind=option" in html
    assert re.findall(r'<option value="(\d+)"', html) == [str(many[3].pk)]
    data = form_data(html)
    data["virtual_servers"] = [str(many[3].pk), str(many[-1].pk)]
    assert client.post(url, data).status_code == 302
    assert set(credential.virtual_servers.all()) == {many[3], many[-1]}
