"""The virtual server's property sheet, its write-only outbound password, Start / Stop / Pause,
the New SMTP Virtual Server page with its profiles, and deletion."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from connectors.models import Connector
from servers.console.virtual_servers import VirtualServerSheet
from servers.models import RoutingGroup, SmtpCredential, VirtualServer
from smtpadmin.models import AuditEntry
from tests.servers.console_world import (
    OUTBOUND_PASSWORD,
    World,
    build_world,
    form_data,
    html_of,
    logged_in,
)

pytestmark = pytest.mark.django_db

WRITE_ONLY = {"outbound_password", "clear_outbound_password"}
FIELDS = [f for tab in VirtualServerSheet.tabs for f in tab.all_fields if f not in WRITE_ONLY]


@pytest.fixture
def world(db: object) -> World:
    return build_world()


def sheet_url(world: World) -> str:
    return f"/servers/virtual-servers/{world.virtual_server.pk}/"


def post_sheet(user: User, world: World, **changes: Any) -> Any:
    vs = VirtualServer.objects.get(pk=world.virtual_server.pk)
    return logged_in(user).post(sheet_url(world), form_data(vs, FIELDS, **changes))


def open_tab(html: str) -> str:
    """The title of the tab the page opens with."""
    marker = 'aria-selected="true"'
    start = html.index(marker)
    return html[html.index(">", start) + 1 : html.index("</button>", start)]


def test_the_sheet_has_the_four_tabs_and_esm_groups(view_only: User, world: World) -> None:
    html = html_of(logged_in(view_only).get(sheet_url(world)))
    for tab in ("General", "Access", "Messages", "Delivery"):
        assert (
            f'data-tab="tab-{["General", "Access", "Messages", "Delivery"].index(tab)}">{tab}'
            in html
        )
    for legend in (
        "Authentication",
        "Secure communication",
        "Connection control",
        "Relay restrictions",
        "Outbound Security",
        "Outbound connections",
        "Advanced",
    ):
        assert f"<legend>{legend}</legend>" in html
    assert "Desired state" in html and "Actual state" in html


def test_an_administrator_saves_the_sheet_and_it_is_audited(
    administrator: User, world: World
) -> None:
    response = post_sheet(
        administrator,
        world,
        relay_list="192.0.2.0/24\n198.51.100.7",
        message_size_limit_kb="8192",
        smart_hosts="relay.example.net:587",
    )
    assert response.status_code == 302
    vs = VirtualServer.objects.get(pk=world.virtual_server.pk)
    assert vs.relay_list == ["192.0.2.0/24", "198.51.100.7"]
    assert vs.message_size_limit_kb == 8192
    assert vs.outbound_password == OUTBOUND_PASSWORD  # blank keeps the stored one
    entry = AuditEntry.objects.get(field="message_size_limit_kb")
    assert (entry.username, entry.old_value, entry.new_value) == (
        administrator.username,
        "4096",
        "8192",
    )
    assert AuditEntry.objects.get(field="relay_list").new_value == "192.0.2.0/24, 198.51.100.7"
    assert not AuditEntry.objects.filter(field="outbound_password").exists()


def test_a_view_only_administrator_cannot_post_the_sheet(view_only: User, world: World) -> None:
    response = post_sheet(view_only, world, name="Hijacked", relay_list="0.0.0.0/0")
    assert response.status_code == 403
    vs = VirtualServer.objects.get(pk=world.virtual_server.pk)
    assert vs.name == "Default SMTP Virtual Server" and vs.relay_list == []
    assert not AuditEntry.objects.exists()


def test_a_session_limit_below_the_message_limit_opens_the_messages_tab(
    administrator: User, world: World
) -> None:
    response = post_sheet(
        administrator, world, message_size_limit_kb="4096", session_size_limit_kb="1024"
    )
    assert response.status_code == 400
    html = html_of(response)
    assert open_tab(html) == "Messages"
    assert "The session size limit must be at least the message size limit." in html
    assert VirtualServer.objects.get(pk=world.virtual_server.pk).session_size_limit_kb is None


def test_a_garbage_relay_list_opens_the_access_tab_at_the_field(
    administrator: User, world: World
) -> None:
    response = post_sheet(administrator, world, relay_list="not an address!")
    assert response.status_code == 400
    html = html_of(response)
    assert open_tab(html) == "Access"
    relay_field = html[html.index('name="relay_list"') :]
    assert relay_field.index('class="errorlist"') < relay_field.index('name="relay_allow')
    assert VirtualServer.objects.get(pk=world.virtual_server.pk).relay_list == []


def test_the_first_tab_with_an_error_opens(administrator: User, world: World) -> None:
    response = post_sheet(administrator, world, relay_list="garbage!", max_hop_count="0")
    assert open_tab(html_of(response)) == "Access"
    response = post_sheet(administrator, world, port="0", max_hop_count="0")
    assert open_tab(html_of(response)) == "General"


def test_requiring_tls_without_a_certificate_is_refused(administrator: User, world: World) -> None:
    response = post_sheet(administrator, world, require_tls=True)
    assert response.status_code == 400
    assert "TLS can only be required once a certificate is assigned." in html_of(response)
    response = post_sheet(
        administrator, world, require_tls=True, certificate=str(world.certificate.pk)
    )
    assert response.status_code == 302
    assert VirtualServer.objects.get(pk=world.virtual_server.pk).require_tls


def test_two_virtual_servers_cannot_share_a_binding(administrator: User, world: World) -> None:
    VirtualServer.objects.create(server=world.server, name="Other", port=2600)
    response = post_sheet(administrator, world, port="2600")
    assert response.status_code == 400
    html = html_of(response)
    assert open_tab(html) == "General"
    assert "already listens on (All Unassigned):2600" in html


def test_the_outbound_password_is_never_shown(administrator: User, world: World) -> None:
    client = logged_in(administrator)
    pages = [
        sheet_url(world),
        f"/servers/{world.server.pk}/smtp/",
        f"/servers/virtual-servers/{world.virtual_server.pk}/delete/",
        "/servers/",
    ]
    for url in pages:
        html = html_of(client.get(url))
        assert OUTBOUND_PASSWORD not in html, url
    assert "A password is stored; leave blank to keep it." in html_of(client.get(pages[0]))
    # Nor is a newly typed one echoed back when the sheet has an error.
    response = post_sheet(
        administrator, world, outbound_password="typed-New-secret", relay_list="garbage!"
    )
    assert response.status_code == 400
    assert "typed-New-secret" not in html_of(response)
    assert OUTBOUND_PASSWORD not in html_of(response)


def test_a_new_outbound_password_replaces_the_old_and_is_audited_as_changed(
    administrator: User, world: World
) -> None:
    response = post_sheet(
        administrator,
        world,
        outbound_auth="basic",
        outbound_username="relayuser",
        outbound_password="brand-new-pass",
    )
    assert response.status_code == 302
    vs = VirtualServer.objects.get(pk=world.virtual_server.pk)
    assert vs.outbound_password == "brand-new-pass"
    entry = AuditEntry.objects.get(field="outbound_password")
    assert (entry.old_value, entry.new_value) == ("", "changed")
    assert "brand-new-pass" not in "".join(AuditEntry.objects.values_list("new_value", flat=True))


def test_the_clear_box_removes_the_stored_password(administrator: User, world: World) -> None:
    response = post_sheet(administrator, world, clear_outbound_password=True)
    assert response.status_code == 302
    assert VirtualServer.objects.get(pk=world.virtual_server.pk).outbound_password == ""
    html = html_of(logged_in(administrator).get(sheet_url(world)))
    assert "No password is stored." in html


def test_typing_a_password_and_clearing_it_at_once_is_refused(
    administrator: User, world: World
) -> None:
    response = post_sheet(
        administrator, world, clear_outbound_password=True, outbound_password="something-new"
    )
    assert response.status_code == 400
    assert open_tab(html_of(response)) == "Delivery"
    assert VirtualServer.objects.get(pk=world.virtual_server.pk).outbound_password == (
        OUTBOUND_PASSWORD
    )


@pytest.mark.parametrize(
    ("verb", "state"), [("pause", "paused"), ("stop", "stopped"), ("start", "running")]
)
def test_an_administrator_starts_stops_and_pauses_and_it_is_audited(
    administrator: User, world: World, verb: str, state: str
) -> None:
    if verb == "start":
        VirtualServer.objects.filter(pk=world.virtual_server.pk).update(desired_state="stopped")
    smtp = f"/servers/{world.server.pk}/smtp/"
    response = logged_in(administrator).post(
        f"/servers/virtual-servers/{world.virtual_server.pk}/{verb}/", {"next": smtp}
    )
    assert response.status_code == 302
    assert response["Location"] == smtp
    assert VirtualServer.objects.get(pk=world.virtual_server.pk).desired_state == state
    entry = AuditEntry.objects.get(field="desired_state")
    assert entry.username == administrator.username
    assert entry.new_value == state


def test_a_state_change_goes_back_only_to_a_local_page(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        f"/servers/virtual-servers/{world.virtual_server.pk}/pause/",
        {"next": "https://evil.example/"},
    )
    assert response["Location"] == sheet_url(world)


@pytest.mark.parametrize("verb", ["start", "stop", "pause"])
def test_a_view_only_administrator_cannot_change_the_state(
    view_only: User, world: World, verb: str
) -> None:
    VirtualServer.objects.filter(pk=world.virtual_server.pk).update(desired_state="paused")
    response = logged_in(view_only).post(
        f"/servers/virtual-servers/{world.virtual_server.pk}/{verb}/"
    )
    assert response.status_code == 403
    assert VirtualServer.objects.get(pk=world.virtual_server.pk).desired_state == "paused"
    assert not AuditEntry.objects.exists()


def test_state_buttons_need_a_post(administrator: User, world: World) -> None:
    response = logged_in(administrator).get(
        f"/servers/virtual-servers/{world.virtual_server.pk}/stop/"
    )
    assert response.status_code == 405
    assert VirtualServer.objects.get(pk=world.virtual_server.pk).desired_state == "running"


def test_the_sheet_shows_desired_and_actual_state(administrator: User, world: World) -> None:
    VirtualServer.objects.filter(pk=world.virtual_server.pk).update(
        desired_state="paused", state="running"
    )
    html = html_of(logged_in(administrator).get(sheet_url(world)))
    assert "<dt>Desired state</dt><dd>Paused</dd>" in html
    assert "<dt>Actual state</dt><dd>running → paused</dd>" in html
    assert ">Start</button>" in html and ">Pause</button>" not in html


def test_a_new_virtual_server_starts_from_the_iis6_profile(
    administrator: User, world: World
) -> None:
    response = logged_in(administrator).post(
        f"/servers/{world.server.pk}/smtp/new/",
        {"profile": "iis6", "name": "Legacy", "ip_address": "192.0.2.25", "port": "25"},
    )
    assert response.status_code == 302
    vs = VirtualServer.objects.get(name="Legacy")
    assert response["Location"] == f"/servers/virtual-servers/{vs.pk}/"
    assert vs.server == world.server
    assert (vs.message_size_limit_kb, vs.session_size_limit_kb) == (2048, 10240)
    assert (vs.auth_basic, vs.recipients_per_message, vs.retry_subsequent_minutes) == (
        False,
        100,
        240,
    )
    created = AuditEntry.objects.filter(object_id=str(vs.pk), action="create")
    assert created.filter(field="").exists()
    assert created.get(field="message_size_limit_kb").new_value == "2048"


def test_a_new_virtual_server_by_default_is_exchange_2003(
    administrator: User, world: World
) -> None:
    response = logged_in(administrator).post(
        f"/servers/{world.server.pk}/smtp/new/",
        {"profile": "exchange2003", "name": "Modern", "ip_address": "", "port": "2526"},
    )
    assert response.status_code == 302
    vs = VirtualServer.objects.get(name="Modern")
    assert vs.ip_address is None and vs.auth_basic and vs.message_size_limit_kb == 4096


def test_a_new_virtual_server_on_a_taken_binding_is_refused(
    administrator: User, world: World
) -> None:
    response = logged_in(administrator).post(
        f"/servers/{world.server.pk}/smtp/new/",
        {"profile": "exchange2003", "name": "Clash", "ip_address": "", "port": "2525"},
    )
    assert response.status_code == 400
    assert "already listens on" in html_of(response)
    assert not VirtualServer.objects.filter(name="Clash").exists()


def test_an_unknown_profile_is_refused(administrator: User, world: World) -> None:
    response = logged_in(administrator).post(
        f"/servers/{world.server.pk}/smtp/new/",
        {"profile": "sendmail", "name": "X", "ip_address": "", "port": "2999"},
    )
    assert response.status_code == 400
    assert not VirtualServer.objects.filter(name="X").exists()


def test_a_view_only_administrator_cannot_create_one(view_only: User, world: World) -> None:
    response = logged_in(view_only).post(
        f"/servers/{world.server.pk}/smtp/new/",
        {"profile": "iis6", "name": "Sneaky", "ip_address": "", "port": "2999"},
    )
    assert response.status_code == 403
    assert not VirtualServer.objects.filter(name="Sneaky").exists()


def _connector(name: str, *bridgeheads: VirtualServer) -> Connector:
    connector = Connector.objects.create(name=name, routing_group=RoutingGroup.first())
    connector.bridgeheads.set(bridgeheads)
    return connector


def test_the_only_bridgehead_of_a_connector_cannot_be_deleted(
    administrator: User, world: World
) -> None:
    _connector("Internet", world.virtual_server)
    url = f"/servers/virtual-servers/{world.virtual_server.pk}/delete/"
    html = html_of(logged_in(administrator).get(url))
    assert "is the only bridgehead of: Internet" in html
    assert ">Delete</button>" not in html
    response = logged_in(administrator).post(url)
    assert response.status_code == 409
    assert VirtualServer.objects.filter(pk=world.virtual_server.pk).exists()


def test_deleting_a_shared_bridgehead_lists_its_links_and_is_audited(
    administrator: User, world: World
) -> None:
    other = VirtualServer.objects.create(server=world.server, name="Second", port=2600)
    _connector("Partner", world.virtual_server, other)
    limited = SmtpCredential.objects.get(username="app")
    limited.virtual_servers.set([world.virtual_server])
    url = f"/servers/virtual-servers/{world.virtual_server.pk}/delete/"
    html = html_of(logged_in(administrator).get(url))
    assert "Connector: Partner (bridgehead)" in html
    assert "SMTP credential: app (then accepted by every virtual server)" in html
    assert ">Delete</button>" in html
    response = logged_in(administrator).post(url)
    assert response.status_code == 302
    assert response["Location"] == f"/servers/{world.server.pk}/smtp/"
    assert not VirtualServer.objects.filter(pk=world.virtual_server.pk).exists()
    assert list(Connector.objects.get(name="Partner").bridgeheads.all()) == [other]
    assert AuditEntry.objects.filter(action="delete", object_type="Virtual Server").exists()


def test_a_view_only_administrator_cannot_delete_one(view_only: User, world: World) -> None:
    url = f"/servers/virtual-servers/{world.virtual_server.pk}/delete/"
    assert "Your role cannot delete objects." in html_of(logged_in(view_only).get(url))
    assert logged_in(view_only).post(url).status_code == 403
    assert VirtualServer.objects.filter(pk=world.virtual_server.pk).exists()
