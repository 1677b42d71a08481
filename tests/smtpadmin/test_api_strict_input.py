"""/api/v1/ takes each value only in the JSON type its schema gives, refuses list filters it
cannot apply instead of ignoring them, and answers a path no resource has with JSON."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from servers.models import RoutingGroup, Server, SmtpCredential, VirtualServer
from smtpadmin.models import Organization

pytestmark = pytest.mark.django_db

API = "/api/v1/"


@pytest.fixture
def api(full_admin: User, api_as: Any) -> APIClient:
    return api_as(full_admin)


@pytest.fixture
def virtual_server() -> VirtualServer:
    server = Server.objects.create(name="node1", routing_group=RoutingGroup.first())
    return VirtualServer.objects.create(server=server, name="Inbound", port=2525)


def test_it_refuses_a_number_for_a_text_field(api: APIClient) -> None:
    response = api.post(f"{API}routing-groups/", {"name": 7}, format="json")

    assert response.status_code == 400
    assert response.json() == {"name": ["Not a valid string."]}
    assert not RoutingGroup.objects.filter(name="7").exists()


def test_it_refuses_text_for_a_number_and_a_number_for_a_yes_no(
    api: APIClient, virtual_server: VirtualServer
) -> None:
    response = api.patch(
        f"{API}virtual-servers/{virtual_server.pk}/",
        {"port": "25", "auth_anonymous": 0},
        format="json",
    )

    assert response.status_code == 400
    assert set(response.json()) == {"port", "auth_anonymous"}
    virtual_server.refresh_from_db()
    assert (virtual_server.port, virtual_server.auth_anonymous) == (2525, True)


def test_it_refuses_an_object_for_a_list_of_ids(
    api: APIClient, virtual_server: VirtualServer
) -> None:
    body = {"username": "scanner", "password": "long enough 1", "virtual_servers": {}}

    response = api.post(f"{API}smtp-credentials/", body, format="json")

    assert response.status_code == 400
    assert response.json() == {"virtual_servers": ["Expected a list."]}
    assert not SmtpCredential.objects.exists()


def test_it_refuses_a_list_item_of_the_wrong_type(api: APIClient) -> None:
    response = api.patch(
        f"{API}organization/", {"block_list_providers": ["zen.example.org", 5]}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"block_list_providers": ["Item 2: Not a valid string."]}
    assert Organization.get().block_list_providers == []


def test_null_is_still_taken_where_the_field_allows_it(
    api: APIClient, virtual_server: VirtualServer
) -> None:
    VirtualServer.objects.filter(pk=virtual_server.pk).update(ip_address="127.0.0.1")

    response = api.patch(
        f"{API}virtual-servers/{virtual_server.pk}/", {"ip_address": None}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["ip_address"] is None


@pytest.mark.parametrize("value", ["null", "yes", "maybe"])
def test_a_yes_no_filter_refuses_what_is_neither(api: APIClient, value: str) -> None:
    response = api.get(f"{API}users/", {"is_active": value})

    assert response.status_code == 400
    assert response.json() == {"is_active": ["Enter true or false."]}


@pytest.mark.parametrize(("value", "count"), [("true", 1), ("false", 0), ("", 1)])
def test_a_yes_no_filter_takes_true_false_or_nothing(
    api: APIClient, value: str, count: int
) -> None:
    response = api.get(f"{API}users/", {"is_active": value})

    assert response.status_code == 200
    assert response.json()["count"] == count


def test_a_number_filter_refuses_a_fraction(api: APIClient, virtual_server: VirtualServer) -> None:
    assert api.get(f"{API}virtual-servers/", {"port": "2525.5"}).status_code == 400
    assert api.get(f"{API}virtual-servers/", {"port": "2525"}).json()["count"] == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "virtual-servers/3.5e-7/"),
        ("delete", "mailboxes/abc/"),
        ("post", "virtual-servers/1e3/start/"),
        ("post", "queues/x/freeze/"),
        ("get", "no-such-resource/"),
        ("get", "messages/1%0A2/"),
    ],
)
def test_a_path_no_resource_has_is_a_json_404(api: APIClient, method: str, path: str) -> None:
    response = getattr(api, method)(f"{API}{path}")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_a_path_without_its_slash_is_still_redirected(api: APIClient) -> None:
    response = api.get(f"{API}virtual-servers")

    assert response.status_code == 301
    assert response["Location"].endswith("/api/v1/virtual-servers/")


def test_a_profile_is_refused_when_changing_a_virtual_server(
    api: APIClient, virtual_server: VirtualServer
) -> None:
    response = api.patch(
        f"{API}virtual-servers/{virtual_server.pk}/", {"profile": "iis6"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"profile": ["This field does not exist."]}


def test_a_new_virtual_server_still_takes_a_profile(api: APIClient) -> None:
    server = Server.objects.create(name="node2", routing_group=RoutingGroup.first())
    body = {"server": server.pk, "name": "Legacy", "port": 2526, "profile": "iis6"}

    response = api.post(f"{API}virtual-servers/", body, format="json")

    assert response.status_code == 201, response.json()
