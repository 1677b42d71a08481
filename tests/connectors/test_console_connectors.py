"""The connectors' console pages: routing groups, the Connectors container, the connector's
property sheet with its seven tabs (address-space rows and the weekly schedule grid in the
same POST), New and Delete; by role, validated like the API, audited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from connectors.models import AddressSpace, Connector, ScheduleMode
from servers.models import RoutingGroup, Server, VirtualServer
from smtpadmin.models import AuditEntry
from smtpadmin.validators import SCHEDULE_SLOTS
from tests.html_forms import form_data, values

pytestmark = pytest.mark.django_db

ROLES = ["full_admin", "administrator", "view_only", "outsider", "anonymous"]


@dataclass
class Topology:
    group: RoutingGroup
    server: Server
    virtual_server: VirtualServer
    internet: Connector


@pytest.fixture
def topology(db: Any) -> Topology:
    group = RoutingGroup.first()
    server = Server.objects.create(name="ex1", routing_group=group)
    virtual_server = VirtualServer.objects.create(
        server=server, name="Default SMTP Virtual Server", port=25
    )
    internet = Connector.objects.create(name="Internet", routing_group=group)
    internet.bridgeheads.set([virtual_server])
    AddressSpace.objects.create(connector=internet, domain="*", cost=1)
    return Topology(group, server, virtual_server, internet)


def logged_in(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def person(request: pytest.FixtureRequest, role: str) -> User | None:
    return None if role == "anonymous" else request.getfixturevalue(role)


def sheet_url(connector: Connector) -> str:
    return f"/connectors/{connector.pk}/"


def pane(html: str) -> str:
    return html[html.index('<main class="pane"') :]


def page_form(client: Client, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200
    return form_data(response.content)


# --- every page, every role -------------------------------------------------------------------

PAGES = {
    "all connectors": lambda t: "/connectors/",
    "connector sheet": lambda t: f"/connectors/{t.internet.pk}/",
    "connector delete": lambda t: f"/connectors/{t.internet.pk}/delete/",
    "routing groups": lambda t: "/connectors/routing-groups/",
    "routing group sheet": lambda t: f"/connectors/routing-groups/{t.group.pk}/",
    "routing group delete": lambda t: f"/connectors/routing-groups/{t.group.pk}/delete/",
    "group connectors": lambda t: f"/connectors/routing-groups/{t.group.pk}/connectors/",
}
NEW_PAGES = {
    "new connector": lambda t: "/connectors/new/",
    "new connector in group": lambda t: f"/connectors/routing-groups/{t.group.pk}/connectors/new/",
    "new routing group": lambda t: "/connectors/routing-groups/new/",
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_page_answers_each_role(
    request: pytest.FixtureRequest, topology: Topology, page: str, role: str
) -> None:
    response = logged_in(person(request, role)).get(PAGES[page](topology))
    expected = {"anonymous": 302, "outsider": 403}.get(role, 200)
    assert response.status_code == expected
    if expected == 302:
        assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", sorted(NEW_PAGES))
def test_new_pages_are_for_roles_that_may_create(
    request: pytest.FixtureRequest, topology: Topology, page: str, role: str
) -> None:
    response = logged_in(person(request, role)).get(NEW_PAGES[page](topology))
    expected = {"anonymous": 302, "outsider": 403, "view_only": 403}.get(role, 200)
    assert response.status_code == expected


def test_an_unknown_connector_is_a_404(administrator: User, topology: Topology) -> None:
    assert logged_in(administrator).get("/connectors/9999/").status_code == 404


# --- the tree and the Connectors container ---------------------------------------------------


def test_the_tree_shows_each_routing_group_its_connectors_and_the_simulator(
    view_only: User, topology: Topology
) -> None:
    # The Connectors container opens (its connectors listed) on its own page.
    container = f"/connectors/routing-groups/{topology.group.pk}/connectors/"
    html = logged_in(view_only).get(container).content.decode()
    assert f'data-key="routing-group-{topology.group.pk}"' in html
    assert f'data-key="routing-group-{topology.group.pk}-connectors"' in html
    assert f'data-key="connector-{topology.internet.pk}"' in html
    assert 'href="/connectors/simulator/"' in html
    assert 'href="/connectors/routing-groups/"' in html  # the Routing Groups container


def test_a_disabled_connector_has_a_badge_in_the_tree(view_only: User, topology: Topology) -> None:
    Connector.objects.filter(pk=topology.internet.pk).update(enabled=False)
    html = logged_in(view_only).get(f"/connectors/{topology.internet.pk}/").content.decode()
    assert 'class="status status-disabled"' in html


def test_the_connectors_container_lists_spaces_route_bridgeheads_and_state(
    view_only: User, topology: Topology
) -> None:
    backup = Connector.objects.create(
        name="Backup", routing_group=topology.group, use_dns=False, smart_hosts="relay.example.net"
    )
    AddressSpace.objects.create(connector=backup, domain="example.com", cost=5)
    response = logged_in(view_only).get(
        f"/connectors/routing-groups/{topology.group.pk}/connectors/"
    )
    html = response.content.decode()
    assert "example.com (5)" in html and "* (1)" in html
    assert "Smart hosts: relay.example.net" in html
    assert "Default SMTP Virtual Server (ex1)" in html
    assert "New SMTP Connector" not in html  # no actions for a view-only administrator


def test_the_connector_list_sorts_by_a_column_both_ways(
    administrator: User, topology: Topology
) -> None:
    Connector.objects.create(name="Archive", routing_group=topology.group)
    Connector.objects.create(name="Zulu", routing_group=topology.group)
    client = logged_in(administrator)
    # Only the right pane: the tree lists the connectors too.
    ascending = pane(client.get("/connectors/?sort=name&dir=asc").content.decode())
    descending = pane(client.get("/connectors/?sort=name&dir=desc").content.decode())
    assert ascending.index("Archive") < ascending.index("Internet") < ascending.index("Zulu")
    assert descending.index("Zulu") < descending.index("Internet") < descending.index("Archive")
    assert 'aria-sort="descending"' in descending


def test_an_unknown_sort_column_is_ignored(administrator: User, topology: Topology) -> None:
    response = logged_in(administrator).get("/connectors/?sort=outbound_password")
    assert response.status_code == 200


# --- the property sheet -----------------------------------------------------------------------


def test_the_sheet_has_the_seven_tabs_of_exchange(view_only: User, topology: Topology) -> None:
    html = logged_in(view_only).get(sheet_url(topology.internet)).content.decode()
    tabs = [
        "General",
        "Address Space",
        "Delivery Restrictions",
        "Content Restrictions",
        "Delivery Options",
        "Advanced",
        "Details",
    ]
    positions = [html.index(f'data-tab="tab-{n}">{title}<') for n, title in enumerate(tabs)]
    assert positions == sorted(positions)
    assert "Internet Properties" in html


def test_a_view_only_administrator_sees_the_sheet_read_only(
    view_only: User, topology: Topology
) -> None:
    html = logged_in(view_only).get(sheet_url(topology.internet)).content.decode()
    assert "your role cannot change them" in html
    assert ">OK</button>" not in html
    assert ">Delete</a>" not in html
    assert "data-add-row" not in html
    assert 'class="slot" name="schedule_grid" value="0" title="Mon 00:00" disabled' in html


def test_an_administrator_saves_every_tab_in_one_post_and_it_is_audited(
    administrator: User, topology: Topology
) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    data.update(
        {
            "use_dns": "False",
            "smart_hosts": "Relay.Example.NET:587; [192.0.2.1]",
            "address_spaces-0-cost": "20",
            "address_spaces-1-domain": "Example.COM",
            "address_spaces-1-cost": "5",
            "allow_relay": "on",
            "restrictions_enforced": "on",
            "accept_by_default": "False",
            "sender_exceptions": "boss@example.com\n*@partner.example",
            "max_message_size_kb": "10240",
            "send_helo": "on",
            "tls_mode": "required",
            "admin_note": "Outbound through the ISP",
        }
    )
    data.pop("allow_priority_low")
    response = client.post(sheet_url(topology.internet), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    connector = Connector.objects.get(pk=topology.internet.pk)
    assert connector.use_dns is False
    assert connector.smart_hosts == "relay.example.net:587;[192.0.2.1]"
    assert sorted((s.domain, s.cost) for s in connector.address_spaces.all()) == [
        ("*", 20),
        ("example.com", 5),
    ]
    assert connector.allow_relay and connector.restrictions_enforced and connector.send_helo
    assert connector.accept_by_default is False
    assert connector.sender_exceptions == ["boss@example.com", "*@partner.example"]
    assert connector.allow_priority_low is False
    assert connector.max_message_size_kb == 10240
    assert connector.tls_mode == "required"
    assert connector.admin_note == "Outbound through the ISP"
    changes = {
        e.field: (e.old_value, e.new_value)
        for e in AuditEntry.objects.filter(object_type="Connector", username=administrator.username)
    }
    assert changes["use_dns"] == ("yes", "no")
    assert changes["address_spaces"] == ("* (1)", "* (20), example.com (5)")
    assert changes["allow_priority_low"] == ("yes", "no")


def test_a_sheet_posted_unchanged_writes_no_audit_entry(
    administrator: User, topology: Topology
) -> None:
    client = logged_in(administrator)
    response = client.post(
        sheet_url(topology.internet), page_form(client, sheet_url(topology.internet))
    )
    assert response.status_code == 302
    assert not AuditEntry.objects.filter(username=administrator.username).exists()


def test_a_view_only_administrator_cannot_post_the_sheet(
    administrator: User, view_only: User, topology: Topology
) -> None:
    data = page_form(logged_in(administrator), sheet_url(topology.internet))
    data["name"] = "Hijacked"
    response = logged_in(view_only).post(sheet_url(topology.internet), data)
    assert response.status_code == 403
    assert Connector.objects.get(pk=topology.internet.pk).name == "Internet"
    assert not AuditEntry.objects.exists()


def _address_space_error(client: Client, topology: Topology, **rows: str) -> tuple[int, str]:
    data = page_form(client, sheet_url(topology.internet))
    data.update(rows)
    response = client.post(sheet_url(topology.internet), data)
    return response.status_code, response.content.decode()


def _row(html: str, marker: str) -> str:
    """The <tr> of the address-space table that contains ``marker``."""
    at = html.index(marker)
    return html[html.rindex("<tr", 0, at) : html.index("</tr>", at)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"address_spaces-1-domain": "exa*mple.com"}, "is not a valid pattern"),
        (
            {"address_spaces-1-domain": "example.com", "address_spaces-1-cost": "101"},
            "Ensure this value is less than or equal to 100.",
        ),
        (
            {"address_spaces-1-domain": "example.com", "address_spaces-1-cost": "0"},
            "Ensure this value is greater than or equal to 1.",
        ),
        ({"address_spaces-1-domain": "*"}, "&#x27;*&#x27; is listed twice."),
        ({"address_spaces-1-domain": "", "address_spaces-1-cost": "7"}, "This field is required."),
    ],
)
def test_a_bad_address_space_row_opens_its_tab_with_the_error_at_the_row(
    administrator: User, topology: Topology, rows: dict[str, str], message: str
) -> None:
    status, html = _address_space_error(logged_in(administrator), topology, **rows)
    assert status == 400
    assert 'aria-selected="true" class="tab has-error" data-tab="tab-1"' in html
    row = _row(html, 'name="address_spaces-1-domain"')
    assert 'class="row has-error"' in row
    assert message in row
    assert [(s.domain, s.cost) for s in AddressSpace.objects.all()] == [("*", 1)]
    assert not AuditEntry.objects.exists()


def test_removing_every_address_space_is_refused(administrator: User, topology: Topology) -> None:
    status, html = _address_space_error(
        logged_in(administrator), topology, **{"address_spaces-0-DELETE": "on"}
    )
    assert status == 400
    assert "A connector needs at least one address space." in html
    assert AddressSpace.objects.count() == 1


def test_a_row_is_removed_with_its_checkbox(administrator: User, topology: Topology) -> None:
    AddressSpace.objects.create(connector=topology.internet, domain="example.com", cost=3)
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    # Rows are shown in the model's order: "*" then "example.com".
    data["address_spaces-1-DELETE"] = "on"
    assert client.post(sheet_url(topology.internet), data).status_code == 302
    assert [s.domain for s in AddressSpace.objects.all()] == ["*"]


def test_a_tampered_address_space_table_is_an_error_not_a_crash(
    administrator: User, topology: Topology
) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    del data["address_spaces-TOTAL_FORMS"]
    response = client.post(sheet_url(topology.internet), data)
    assert response.status_code == 400
    assert AddressSpace.objects.count() == 1


def test_a_smart_host_route_without_hosts_opens_the_general_tab(
    administrator: User, topology: Topology
) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    data.update(use_dns="False", smart_hosts="", **{"address_spaces-1-domain": "bad*"})
    response = client.post(sheet_url(topology.internet), data)
    html = response.content.decode()
    assert response.status_code == 400
    # The first tab with an error opens; the Address Space tab is marked too.
    assert 'aria-selected="true" class="tab has-error" data-tab="tab-0"' in html
    assert 'class="tab has-error" data-tab="tab-1"' in html
    assert "Enter at least one smart host, or route by DNS." in html


def test_a_connector_needs_a_bridgehead(administrator: User, topology: Topology) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    del data["bridgeheads"]
    response = client.post(sheet_url(topology.internet), data)
    assert response.status_code == 400
    assert topology.internet.bridgeheads.count() == 1


def test_bridgeheads_are_labelled_with_their_server(
    administrator: User, topology: Topology
) -> None:
    html = logged_in(administrator).get(sheet_url(topology.internet)).content.decode()
    assert "Default SMTP Virtual Server (ex1)" in html


# --- Delivery Options: the weekly schedule grid ------------------------------------------------


def test_the_schedule_grid_round_trips(administrator: User, topology: Topology) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    assert values(data, "schedule_grid") == [""] or "schedule_grid" not in data
    # Monday 08:00-08:30 (slots 32, 33) and Sunday 23:45 (the last slot).
    data["schedule_grid"] = ["32", "33", str(SCHEDULE_SLOTS - 1)]
    data["schedule_mode"] = ScheduleMode.CUSTOM
    response = client.post(sheet_url(topology.internet), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    grid = Connector.objects.get(pk=topology.internet.pk).schedule_grid
    assert len(grid) == SCHEDULE_SLOTS
    assert [i for i, c in enumerate(grid) if c == "1"] == [32, 33, SCHEDULE_SLOTS - 1]
    html = client.get(sheet_url(topology.internet)).content.decode()
    assert 'value="32" title="Mon 08:00" checked' in html
    assert 'value="33" title="Mon 08:15" checked' in html
    assert f'value="{SCHEDULE_SLOTS - 1}" title="Sun 23:45" checked' in html
    assert 'value="34" title="Mon 08:30">' in html
    assert sorted(int(v) for v in values(form_data(html), "schedule_grid")) == [
        32,
        33,
        SCHEDULE_SLOTS - 1,
    ]


def test_a_custom_schedule_that_never_runs_opens_delivery_options(
    administrator: User, topology: Topology
) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    data.pop("schedule_grid", None)
    data["schedule_mode"] = ScheduleMode.CUSTOM
    response = client.post(sheet_url(topology.internet), data)
    html = response.content.decode()
    assert response.status_code == 400
    assert 'aria-selected="true" class="tab has-error" data-tab="tab-4"' in html
    assert "The schedule never runs" in html


def test_an_empty_grid_is_stored_as_no_schedule(administrator: User, topology: Topology) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    assert client.post(sheet_url(topology.internet), data).status_code == 302
    assert Connector.objects.get(pk=topology.internet.pk).schedule_grid == ""


def test_tampered_grid_values_are_ignored(administrator: User, topology: Topology) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    data.update(schedule_mode="custom", schedule_grid=["-1", "x", "99999", "5"])
    assert client.post(sheet_url(topology.internet), data).status_code == 302
    grid = Connector.objects.get(pk=topology.internet.pk).schedule_grid
    assert [i for i, c in enumerate(grid) if c == "1"] == [5]


def test_the_oversize_schedule_has_its_own_grid(administrator: User, topology: Topology) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    data.update(
        oversize_schedule_enabled="on",
        oversize_threshold_kb="5000",
        oversize_schedule_mode="custom",
        oversize_schedule_grid=["0", "95"],
    )
    assert client.post(sheet_url(topology.internet), data).status_code == 302
    connector = Connector.objects.get(pk=topology.internet.pk)
    assert connector.oversize_schedule_grid[:96] == "1" + "0" * 94 + "1"
    assert connector.schedule_grid == ""


def test_daily_needs_a_time(administrator: User, topology: Topology) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    data.update(schedule_mode="daily", schedule_daily_time="")
    response = client.post(sheet_url(topology.internet), data)
    assert response.status_code == 400
    assert "Choose the time of day." in response.content.decode()
    data["schedule_daily_time"] = "02:30"
    assert client.post(sheet_url(topology.internet), data).status_code == 302
    assert str(Connector.objects.get(pk=topology.internet.pk).schedule_daily_time) == "02:30:00"


# --- Advanced: the write-only outbound password -----------------------------------------------


def test_the_outbound_password_is_write_only(administrator: User, topology: Topology) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    data.update(
        outbound_auth="basic", outbound_username="relay-user", outbound_password="s3cret-Pa55"
    )
    assert client.post(sheet_url(topology.internet), data).status_code == 302
    assert Connector.objects.get(pk=topology.internet.pk).outbound_password == "s3cret-Pa55"
    entry = AuditEntry.objects.get(field="outbound_password")
    assert (entry.old_value, entry.new_value) == ("", "changed")

    html = client.get(sheet_url(topology.internet)).content.decode()
    assert "s3cret-Pa55" not in html
    assert "A password is stored; leave blank to keep it." in html

    # Posting the page as shown (password blank) keeps it.
    assert client.post(sheet_url(topology.internet), form_data(html)).status_code == 302
    assert Connector.objects.get(pk=topology.internet.pk).outbound_password == "s3cret-Pa55"

    # The clear checkbox removes it.
    data = form_data(html)
    data["clear_outbound_password"] = "on"
    data["outbound_auth"] = "anonymous"
    assert client.post(sheet_url(topology.internet), data).status_code == 302
    assert Connector.objects.get(pk=topology.internet.pk).outbound_password == ""


def test_the_password_is_not_echoed_by_a_page_with_errors(
    administrator: User, topology: Topology
) -> None:
    client = logged_in(administrator)
    data = page_form(client, sheet_url(topology.internet))
    data.update(outbound_password="typed-Secret-9", name="")
    response = client.post(sheet_url(topology.internet), data)
    assert response.status_code == 400
    assert "typed-Secret-9" not in response.content.decode()


def test_the_password_is_not_in_a_view_only_page(view_only: User, topology: Topology) -> None:
    Connector.objects.filter(pk=topology.internet.pk).update(outbound_password="hidden-Pw-1")
    html = logged_in(view_only).get(sheet_url(topology.internet)).content.decode()
    assert "hidden-Pw-1" not in html


# --- New and Delete -------------------------------------------------------------------------


def test_a_new_connector_starts_with_star_at_cost_1(
    administrator: User, topology: Topology
) -> None:
    data = page_form(logged_in(administrator), "/connectors/new/")
    assert data["address_spaces-0-domain"] == "*"
    assert data["address_spaces-0-cost"] == "1"
    assert data["routing_group"] == str(topology.group.pk)
    assert data["bridgeheads"] == str(topology.virtual_server.pk)  # the only one


def test_an_administrator_creates_a_smart_host_connector_for_one_domain(
    administrator: User, topology: Topology
) -> None:
    client = logged_in(administrator)
    url = f"/connectors/routing-groups/{topology.group.pk}/connectors/new/"
    data = page_form(client, url)
    data.update(
        {
            "name": "Partner",
            "use_dns": "False",
            "smart_hosts": "mx.partner.example",
            "address_spaces-0-domain": "partner.example",
            "address_spaces-0-cost": "10",
        }
    )
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    connector = Connector.objects.get(name="Partner")
    assert response["Location"] == sheet_url(connector)
    assert [(s.domain, s.cost) for s in connector.address_spaces.all()] == [("partner.example", 10)]
    assert list(connector.bridgeheads.all()) == [topology.virtual_server]
    entries = AuditEntry.objects.filter(object_type="Connector", object_id=str(connector.pk))
    assert entries.filter(action="create", field="").exists()
    assert entries.get(field="address_spaces").new_value == "partner.example (10)"


def test_a_new_connector_with_a_taken_name_is_refused(
    administrator: User, topology: Topology
) -> None:
    client = logged_in(administrator)
    data = page_form(client, "/connectors/new/")
    data["name"] = "Internet"
    response = client.post("/connectors/new/", data)
    assert response.status_code == 400
    assert Connector.objects.count() == 1


def test_a_view_only_administrator_cannot_create(
    administrator: User, view_only: User, topology: Topology
) -> None:
    data = page_form(logged_in(administrator), "/connectors/new/")
    data["name"] = "Sneaky"
    assert logged_in(view_only).post("/connectors/new/", data).status_code == 403
    assert not Connector.objects.filter(name="Sneaky").exists()


def test_delete_asks_first_and_shows_what_goes_with_it(
    administrator: User, topology: Topology
) -> None:
    html = (
        logged_in(administrator).get(f"/connectors/{topology.internet.pk}/delete/").content.decode()
    )
    assert "Delete" in html and "Internet" in html
    assert "SMTP:*;1" in html  # the address space goes with it
    assert "Bridgehead: Default SMTP Virtual Server (ex1)" in html


def test_an_administrator_deletes_a_connector_and_it_is_audited(
    administrator: User, topology: Topology
) -> None:
    response = logged_in(administrator).post(f"/connectors/{topology.internet.pk}/delete/")
    assert response.status_code == 302
    assert not Connector.objects.exists()
    assert AddressSpace.objects.count() == 0
    entry = AuditEntry.objects.get(action="delete")
    assert (entry.object_type, entry.object_repr) == ("Connector", "Internet")


def test_a_view_only_administrator_cannot_delete(view_only: User, topology: Topology) -> None:
    assert (
        logged_in(view_only).post(f"/connectors/{topology.internet.pk}/delete/").status_code == 403
    )
    assert Connector.objects.count() == 1


# --- routing groups ----------------------------------------------------------------------------


def test_an_administrator_creates_and_renames_a_routing_group(administrator: User, db: Any) -> None:
    client = logged_in(administrator)
    response = client.post("/connectors/routing-groups/new/", {"name": "Europe"})
    assert response.status_code == 302
    group = RoutingGroup.objects.get(name="Europe")
    assert response["Location"] == f"/connectors/routing-groups/{group.pk}/"
    assert (
        client.post(f"/connectors/routing-groups/{group.pk}/", {"name": "EMEA"}).status_code == 302
    )
    entry = AuditEntry.objects.get(object_type="Routing Group", field="name", action="update")
    assert (entry.old_value, entry.new_value) == ("Europe", "EMEA")


def test_the_routing_group_sheet_shows_its_members(view_only: User, topology: Topology) -> None:
    html = (
        logged_in(view_only)
        .get(f"/connectors/routing-groups/{topology.group.pk}/")
        .content.decode()
    )
    assert "Member servers" in html and "ex1" in html and "Internet" in html


def test_an_empty_routing_group_is_deleted(administrator: User, db: Any) -> None:
    group = RoutingGroup.objects.create(name="Spare")
    response = logged_in(administrator).post(f"/connectors/routing-groups/{group.pk}/delete/")
    assert response.status_code == 302
    assert not RoutingGroup.objects.filter(name="Spare").exists()
    assert AuditEntry.objects.filter(action="delete", object_repr="Spare").exists()


def test_a_routing_group_with_servers_or_connectors_is_not_deleted(
    administrator: User, topology: Topology
) -> None:
    client = logged_in(administrator)
    url = f"/connectors/routing-groups/{topology.group.pk}/delete/"
    html = client.get(url).content.decode()
    assert "cannot be deleted" in html
    assert "Server: ex1" in html and "Connector: Internet" in html
    assert ">Delete</button>" not in html
    assert client.post(url).status_code == 409
    assert RoutingGroup.objects.filter(pk=topology.group.pk).exists()
    assert not AuditEntry.objects.exists()


def test_a_view_only_administrator_cannot_create_a_routing_group(view_only: User, db: Any) -> None:
    response = logged_in(view_only).post("/connectors/routing-groups/new/", {"name": "Nope"})
    assert response.status_code == 403
    assert not RoutingGroup.objects.filter(name="Nope").exists()
