"""A configuration save (API or property sheet) never writes the state the relay worker and
delivery keep up to date: a heartbeat or a reported state written between reading and saving
the object survives."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from servers.models import RoutingGroup, Server, VirtualServer
from smtpadmin.audit import configuration_fields

pytestmark = pytest.mark.django_db


@pytest.fixture
def virtual_server() -> VirtualServer:
    server = Server.objects.create(name="node1", routing_group=RoutingGroup.first())
    return VirtualServer.objects.create(server=server, ip_address="127.0.0.1", port=2525)


def test_runtime_fields_are_not_configuration() -> None:
    fields = configuration_fields(VirtualServer)
    assert "state" not in fields and "state_reason" not in fields
    assert "port" in fields and "modified_at" in fields
    assert "last_seen" not in configuration_fields(Server)


def test_an_api_save_keeps_a_state_reported_meanwhile(virtual_server: VirtualServer) -> None:
    from servers.api import VirtualServerSerializer

    stale = VirtualServer.objects.get(pk=virtual_server.pk)  # what the API read
    serializer = VirtualServerSerializer(stale, data={"port": 2526}, partial=True)
    assert serializer.is_valid(), serializer.errors
    # The relay reports a state between the API's read and its save.
    VirtualServer.objects.filter(pk=virtual_server.pk).update(
        state="disabled", state_reason="address in use"
    )
    serializer.save()
    fresh = VirtualServer.objects.get(pk=virtual_server.pk)
    assert (fresh.port, fresh.state, fresh.state_reason) == (2526, "disabled", "address in use")


def test_the_api_shows_runtime_fields_but_never_writes_them(
    administrator: User, api_as: Any, virtual_server: VirtualServer
) -> None:
    VirtualServer.objects.filter(pk=virtual_server.pk).update(state="running")
    response = api_as(administrator).patch(
        f"/api/v1/virtual-servers/{virtual_server.pk}/",
        {"port": 2527, "state": "stopped", "state_reason": "forged"},
        format="json",
    )
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["state_reason"]) == ("running", "")
    fresh = VirtualServer.objects.get(pk=virtual_server.pk)
    assert (fresh.port, fresh.state, fresh.state_reason) == (2527, "running", "")


def test_a_sheet_save_keeps_the_heartbeat(administrator: User) -> None:
    from django.test import RequestFactory

    from servers.console.topology import ServerSheet

    server = Server.objects.create(name="node2", routing_group=RoutingGroup.first())
    request = RequestFactory().post(f"/servers/{server.pk}/")
    request.user = administrator
    view = ServerSheet()
    view.setup(request, pk=server.pk)
    view.can_write = True
    view.parts = {}
    form = view.form_class()(
        data={
            "name": "node2",
            "fqdn": "node2.example.com",
            "routing_group": server.routing_group_id,
        },
        instance=Server.objects.get(pk=server.pk),  # read before the heartbeat below
    )
    assert form.is_valid(), form.errors
    seen = timezone.now()
    Server.objects.filter(pk=server.pk).update(last_seen=seen, version="9.9")
    view.save(form)
    fresh = Server.objects.get(pk=server.pk)
    assert fresh.fqdn == "node2.example.com"
    assert (fresh.last_seen, fresh.version) == (seen, "9.9")


def test_the_server_sheet_saves_through_the_browser_form(administrator: User) -> None:
    server = Server.objects.create(name="node3", routing_group=RoutingGroup.first())
    client = Client()
    client.force_login(administrator)
    response = client.post(
        f"/servers/{server.pk}/",
        {"name": "node3", "fqdn": "node3.example.com", "routing_group": server.routing_group_id},
    )
    assert response.status_code == 302
    assert Server.objects.get(pk=server.pk).fqdn == "node3.example.com"
