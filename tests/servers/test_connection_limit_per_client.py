"""The virtual server's limit of connections from one client address: the model's rule, the API
field (and its schema), the General tab of the property sheet and the relay's snapshot."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from relay.smtp.loader import listener_config
from servers.console.virtual_servers import VirtualServerSheet
from servers.models import VirtualServer
from smtpadmin.models import AuditEntry
from tests.conftest import client_for
from tests.servers.console_world import World, build_world, form_data, html_of, logged_in

pytestmark = pytest.mark.django_db

API = "/api/v1/virtual-servers/"
SHEET_FIELDS = [
    f
    for tab in VirtualServerSheet.tabs
    for f in tab.all_fields
    if f not in {"outbound_password", "clear_outbound_password"}
]


@pytest.fixture
def world(db: Any) -> World:
    return build_world()


def vs_of(world: World) -> VirtualServer:
    return VirtualServer.objects.get(pk=world.virtual_server.pk)


# --- the model -----------------------------------------------------------------------------


def test_a_new_virtual_server_allows_20_connections_per_client(world: World) -> None:
    assert vs_of(world).connection_limit_per_client == 20


@pytest.mark.parametrize("value", [None, 0, 1, 20, 5000])
def test_blank_zero_and_positive_limits_are_valid(world: World, value: int | None) -> None:
    vs = vs_of(world)
    vs.connection_limit_per_client = value
    vs.full_clean()


@pytest.mark.parametrize("value", [-1, 2_000_000_001, "many"])
def test_a_negative_huge_or_garbage_limit_is_refused(world: World, value: Any) -> None:
    vs = vs_of(world)
    vs.connection_limit_per_client = value
    with pytest.raises(ValidationError) as caught:
        vs.full_clean()
    assert "connection_limit_per_client" in caught.value.message_dict


@pytest.mark.parametrize(("stored", "snapshot"), [(20, 20), (3, 3), (0, None), (None, None)])
def test_the_relay_snapshot_reads_zero_and_blank_as_unlimited(
    world: World, stored: int | None, snapshot: int | None
) -> None:
    VirtualServer.objects.filter(pk=world.virtual_server.pk).update(
        connection_limit_per_client=stored
    )
    assert listener_config(vs_of(world)).connection_limit_per_client == snapshot


# --- the API -------------------------------------------------------------------------------


def test_the_api_shows_and_changes_the_limit(full_admin: User, world: World) -> None:
    api = client_for(full_admin)
    url = f"{API}{world.virtual_server.pk}/"
    assert api.get(url).json()["connection_limit_per_client"] == 20
    answer = api.patch(url, {"connection_limit_per_client": 5}, format="json")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["connection_limit_per_client"] == 5
    assert vs_of(world).connection_limit_per_client == 5
    assert api.patch(url, {"connection_limit_per_client": None}, format="json").status_code == 200
    assert vs_of(world).connection_limit_per_client is None


@pytest.mark.parametrize("value", [-1, 2_000_000_001, "many"])
def test_the_api_answers_400_with_the_field_for_a_bad_limit(
    full_admin: User, world: World, value: Any
) -> None:
    answer = client_for(full_admin).patch(
        f"{API}{world.virtual_server.pk}/", {"connection_limit_per_client": value}, format="json"
    )
    assert answer.status_code == 400
    assert "connection_limit_per_client" in answer.json()
    assert vs_of(world).connection_limit_per_client == 20


def test_a_view_only_administrator_cannot_change_the_limit(view_only: User, world: World) -> None:
    answer = client_for(view_only).patch(
        f"{API}{world.virtual_server.pk}/", {"connection_limit_per_client": 0}, format="json"
    )
    assert answer.status_code == 403
    assert vs_of(world).connection_limit_per_client == 20


def test_the_schema_shows_the_limit(full_admin: User) -> None:
    schema = client_for(full_admin).get("/api/schema/", {"format": "json"}).json()
    field = schema["components"]["schemas"]["VirtualServer"]["properties"][
        "connection_limit_per_client"
    ]
    assert field["type"] == "integer" and field.get("nullable") is True


# --- the property sheet --------------------------------------------------------------------


def test_the_general_tab_has_the_limit_next_to_the_connection_limit() -> None:
    general = next(tab for tab in VirtualServerSheet.tabs if tab.title == "General")
    fields = list(general.all_fields)
    assert fields.index("connection_limit_per_client") == fields.index("connection_limit") + 1


def test_the_sheet_shows_saves_and_audits_the_limit(administrator: User, world: World) -> None:
    url = f"/servers/virtual-servers/{world.virtual_server.pk}/"
    html = html_of(logged_in(administrator).get(url))
    assert "Limit number of connections from one address to" in html
    assert 'name="connection_limit_per_client"' in html
    response = logged_in(administrator).post(
        url, form_data(vs_of(world), SHEET_FIELDS, connection_limit_per_client="4")
    )
    assert response.status_code == 302
    assert vs_of(world).connection_limit_per_client == 4
    entry = AuditEntry.objects.get(field="connection_limit_per_client")
    assert (entry.old_value, entry.new_value) == ("20", "4")


def test_the_sheet_refuses_a_negative_limit_on_the_general_tab(
    administrator: User, world: World
) -> None:
    url = f"/servers/virtual-servers/{world.virtual_server.pk}/"
    response = logged_in(administrator).post(
        url, form_data(vs_of(world), SHEET_FIELDS, connection_limit_per_client="-3")
    )
    assert response.status_code == 400
    html = html_of(response)
    opened = html.index('aria-selected="true"')
    assert html[html.index(">", opened) + 1 :].startswith("General</button>")
    field = html[html.index('name="connection_limit_per_client"') :]
    assert field.index('class="errorlist"') < field.index('name="connection_timeout_minutes"')
    assert vs_of(world).connection_limit_per_client == 20
