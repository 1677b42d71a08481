"""The console in a real browser, the way an administrator uses it: log in through the form,
walk the tree, fill property sheets tab by tab, press Pause, read the Routing Simulator and the
Audit Log, log out; and a View Only administrator who can change nothing, not even by posting
behind the page's back. The assertions are on what a person sees: headings, roles, texts,
which tab is open."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from connectors.models import AddressSpace, Connector
from servers.models import RoutingGroup, VirtualServer
from tests.browser.ui import (
    fact,
    heading,
    open_tab,
    pane,
    press_ok,
    tab,
    tabpanel,
    tree,
    tree_item,
    tree_link,
)
from tests.conftest import PASSWORD
from tests.servers.console_world import World

pytestmark = pytest.mark.browser

LoggedIn = Callable[..., Page]


def add_connector(name: str, world: World, domain: str, cost: int, **fields: Any) -> Connector:
    connector = Connector.objects.create(name=name, routing_group=RoutingGroup.first(), **fields)
    connector.bridgeheads.set([world.virtual_server])
    AddressSpace.objects.create(connector=connector, domain=domain, cost=cost)
    return connector


# --- logging in and out ---------------------------------------------------------------------


def test_a_person_logs_in_through_the_form_and_logs_out(
    new_page: Callable[..., Page], console_url: Callable[[str], str], administrator: User
) -> None:
    page = new_page()
    page.goto(console_url("/login/"))
    expect(page.get_by_role("heading", name="Log in to smtpadmin")).to_be_visible()
    expect(tree(page)).to_have_count(0)  # nothing of the console before logging in

    page.get_by_label("User name").fill(administrator.username)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(pane(page).locator(".errorlist")).to_contain_text("enter a correct username")
    expect(tree(page)).to_have_count(0)

    page.get_by_label("User name").fill(administrator.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(heading(page)).to_have_text("Dashboard")  # the console opens on it
    expect(tree_link(page, "First Organization")).to_be_visible()
    banner = page.get_by_role("banner")
    expect(banner).to_contain_text(administrator.username)
    expect(banner).to_contain_text("Administrator")

    banner.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to smtpadmin")).to_be_visible()
    expect(pane(page)).to_contain_text("You have logged out.")
    page.goto(console_url("/servers/"))  # the session is gone: back to the login form
    expect(page).to_have_url(re.compile(r"/login/\?next=/servers/$"))
    expect(tree(page)).to_have_count(0)


# --- the tree -------------------------------------------------------------------------------


def test_the_tree_expands_collapses_and_leads_to_the_virtual_server(
    logged_in_page: LoggedIn, administrator: User, world: World
) -> None:
    page = logged_in_page(administrator)
    servers = tree_item(page, "Servers")
    expect(servers).to_have_attribute("aria-expanded", "true")
    expect(tree_link(page, "mx1")).to_be_visible()

    servers.get_by_role("button", name="Expand or collapse").first.click()
    expect(servers).to_have_attribute("aria-expanded", "false")
    expect(tree_link(page, "mx1")).to_be_hidden()
    expect(tree_link(page, "Routing Simulator")).to_be_visible()  # only that branch folds

    servers.get_by_role("button", name="Expand or collapse").first.click()
    expect(servers).to_have_attribute("aria-expanded", "true")
    expect(tree_link(page, "mx1")).to_be_visible()

    steps = [  # (click, the pane's heading, the node shown as selected)
        ("First Organization", "Message Delivery Properties", "Message Delivery"),
        ("Servers", "Servers", "Servers"),
        ("mx1", "mx1 Properties", "mx1"),
        ("Protocols", "Protocols (mx1)", "Protocols"),
        ("SMTP", "SMTP (mx1)", "SMTP"),
        ("Default SMTP Virtual Server", "Default SMTP Virtual Server Properties", None),
    ]
    for label, title, selected in steps:
        tree_link(page, label).click()
        expect(heading(page)).to_have_text(title)
        expect(tree_link(page, selected or label)).to_have_attribute("aria-current", "page")

    expect(pane(page).get_by_role("tablist")).to_contain_text("General")
    expect(tab(page, "General")).to_have_attribute("aria-selected", "true")
    expect(fact(page, "Server")).to_have_text("mx1")
    expect(fact(page, "Binding")).to_have_text("(All Unassigned):2525")

    # The server's contents list leads to the same sheet.
    tree_link(page, "Servers").click()
    pane(page).get_by_role("row", name=re.compile("^mx1 ")).get_by_role("link").click()
    expect(heading(page)).to_have_text("mx1 Properties")


# --- creating through property sheets -------------------------------------------------------


def test_a_virtual_server_is_created_from_a_profile_then_edited_on_its_sheet(
    logged_in_page: LoggedIn, administrator: User, world: World
) -> None:
    page = logged_in_page(administrator)
    tree_link(page, "SMTP").click()
    expect(heading(page)).to_have_text("SMTP (mx1)")
    pane(page).get_by_role("link", name="New SMTP Virtual Server").click()
    expect(heading(page)).to_have_text("New SMTP Virtual Server on mx1")

    page.get_by_role("radio", name="IIS 6 SMTP").check()
    page.get_by_label("Name:").fill("Submission")
    page.get_by_label("TCP port:").fill("587")
    press_ok(page)

    expect(heading(page)).to_have_text("Submission Properties")
    expect(pane(page).locator(".messages")).to_contain_text("Saved Submission")
    expect(fact(page, "Binding")).to_have_text("(All Unassigned):587")
    expect(tree_link(page, "Submission")).to_have_attribute("aria-current", "page")
    # The IIS 6 profile's limits, not Exchange 2003's.
    messages = open_tab(page, "Messages")
    expect(messages.get_by_label("Limit message size to (KB)")).to_have_value("2048")
    expect(messages.get_by_label("Limit session size to (KB)")).to_have_value("10240")

    # Tighten relay on the Access tab: only one subnet, and authenticated clients.
    access = open_tab(page, "Access")
    relay = access.get_by_role("group", name="Relay restrictions")
    relay.get_by_role("radio", name="Only the list below").check()
    relay.get_by_role("textbox", name="Computers:").fill("192.0.2.0/24")
    press_ok(page)

    expect(pane(page).locator(".messages")).to_contain_text("Saved Submission")
    access = open_tab(page, "Access")
    relay = access.get_by_role("group", name="Relay restrictions")
    expect(relay.get_by_role("radio", name="Only the list below")).to_be_checked()
    expect(relay.get_by_role("textbox", name="Computers:")).to_have_value("192.0.2.0/24")

    # It is listed in the SMTP container, next to the first one.
    tree_link(page, "SMTP").click()
    rows = pane(page).get_by_role("row")
    expect(rows.filter(has_text="Submission")).to_contain_text("(All Unassigned):587")
    expect(rows.filter(has_text="Default SMTP Virtual Server")).to_have_count(1)


def test_a_smart_host_connector_is_created_with_address_spaces_and_costs(
    logged_in_page: LoggedIn, administrator: User, world: World
) -> None:
    page = logged_in_page(administrator)
    tree_link(page, "Connectors").click()
    expect(heading(page)).to_have_text("Connectors of First Routing Group")
    expect(pane(page)).to_contain_text("There are no connectors.")
    pane(page).get_by_role("link", name="New SMTP Connector").click()
    expect(heading(page)).to_have_text("New SMTP Connector")

    general = tabpanel(page, "General")
    general.get_by_label("Name:").fill("Partner via smart host")
    general.get_by_role("radio", name=re.compile("^Forward all mail")).check()
    general.get_by_label("Smart hosts:").fill("relay.partner.example:587")
    bridgehead = general.get_by_role("checkbox", name="Default SMTP Virtual Server (mx1)")
    expect(bridgehead).to_be_checked()  # the only virtual server is chosen for you

    spaces = open_tab(page, "Address Space")
    rows = spaces.locator("tbody[data-rows] tr")
    expect(rows).to_have_count(2)  # "*" at cost 1, then a blank row
    rows.nth(0).get_by_label("Address").fill("partner.example")
    rows.nth(0).get_by_label("Cost").fill("5")
    rows.nth(1).get_by_label("Address").fill("*.partner.example")
    rows.nth(1).get_by_label("Cost").fill("10")
    spaces.get_by_role("button", name="Add").click()
    expect(rows).to_have_count(3)
    expect(rows.nth(2).get_by_label("Address")).to_be_focused()
    page.keyboard.type("partner.test")  # cost left blank: 1
    press_ok(page)

    expect(heading(page)).to_have_text("Partner via smart host Properties")
    expect(pane(page).locator(".messages")).to_contain_text("Saved")
    connector = tree_link(page, "Partner via smart host")
    expect(connector).to_have_attribute("aria-current", "page")
    spaces = open_tab(page, "Address Space")
    addresses = spaces.get_by_label("Address")
    costs = spaces.get_by_label("Cost")
    # Kept in the order the sheet stores them, plus a blank row for the next one.
    values = [addresses.nth(i).input_value() for i in range(3)]
    assert sorted(values) == ["*.partner.example", "partner.example", "partner.test"]
    by_address = {values[i]: costs.nth(i).input_value() for i in range(3)}
    assert by_address == {"partner.example": "5", "*.partner.example": "10", "partner.test": "1"}

    tree_link(page, "Connectors").click()
    row = pane(page).get_by_role("row", name=re.compile("^Partner via smart host"))
    expect(row).to_contain_text("partner.example (5)")
    expect(row).to_contain_text("*.partner.example (10)")
    expect(row).to_contain_text("Smart hosts: relay.partner.example:587")
    expect(row).to_contain_text("Default SMTP Virtual Server (mx1)")


# --- validation errors open the right tab ---------------------------------------------------


def test_a_session_limit_below_the_message_limit_opens_the_messages_tab(
    logged_in_page: LoggedIn, administrator: User, world: World
) -> None:
    page = logged_in_page(administrator)
    tree_link(page, "Default SMTP Virtual Server").click()
    messages = open_tab(page, "Messages")
    messages.get_by_label("Limit message size to (KB)").fill("10240")
    messages.get_by_label("Limit session size to (KB)").fill("5000")
    open_tab(page, "General")  # press OK from another tab, as people do
    press_ok(page)

    expect(tab(page, "Messages")).to_have_attribute("aria-selected", "true")
    expect(tab(page, "Messages")).to_have_text("Messages")  # ...and " ⚠" drawn after it
    expect(page.get_by_role("tab", name="Messages ⚠")).to_be_visible()
    expect(tab(page, "General")).to_have_attribute("aria-selected", "false")
    expect(page.get_by_role("tab", name="General ⚠")).to_have_count(0)
    panel = tabpanel(page, "Messages")
    expect(panel).to_be_visible()
    expect(tabpanel(page, "General")).to_be_hidden()
    expect(panel).to_contain_text("The session size limit must be at least the message size limit.")
    expect(panel.get_by_label("Limit session size to (KB)")).to_have_value("5000")
    assert VirtualServer.objects.get(pk=world.virtual_server.pk).session_size_limit_kb is None


def test_a_bad_address_space_cost_opens_the_address_space_tab(
    logged_in_page: LoggedIn, administrator: User, world: World
) -> None:
    connector = add_connector("Internet", world, "*", 1)
    page = logged_in_page(administrator)
    tree_link(page, "Internet").click()
    expect(heading(page)).to_have_text("Internet Properties")
    spaces = open_tab(page, "Address Space")
    spaces.get_by_label("Cost").first.fill("250")
    open_tab(page, "Details")
    press_ok(page)

    expect(tab(page, "Address Space")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tab", name="Address Space ⚠")).to_be_visible()
    panel = tabpanel(page, "Address Space")
    expect(panel).to_be_visible()
    expect(panel.locator("tr.has-error")).to_contain_text("less than or equal to 100")
    expect(tabpanel(page, "General")).to_be_hidden()
    assert connector.address_spaces.get().cost == 1


# --- Start / Stop / Pause -------------------------------------------------------------------


def test_pausing_a_virtual_server_sets_its_desired_state(
    logged_in_page: LoggedIn, administrator: User, world: World
) -> None:
    page = logged_in_page(administrator)
    tree_link(page, "Default SMTP Virtual Server").click()
    expect(fact(page, "Desired state")).to_have_text("Running")
    toolbar = pane(page).locator(".actions")
    expect(toolbar.get_by_role("button", name="Start")).to_have_count(0)

    with page.expect_navigation():
        toolbar.get_by_role("button", name="Pause").click()
    expect(pane(page).locator(".messages")).to_contain_text("paused requested")
    expect(fact(page, "Desired state")).to_have_text("Paused")
    expect(fact(page, "Actual state")).to_have_text("not reported")
    expect(toolbar.get_by_role("button", name="Pause")).to_have_count(0)
    expect(toolbar.get_by_role("button", name="Start")).to_be_visible()

    tree_link(page, "SMTP").click()
    row = pane(page).get_by_role("row", name=re.compile("^Default SMTP Virtual Server"))
    expect(row.get_by_role("cell", name="Paused", exact=True)).to_be_visible()
    assert VirtualServer.objects.get(pk=world.virtual_server.pk).desired_state == "paused"


# --- the View Only administrator ------------------------------------------------------------

FORBIDDEN_CONTROLS = ("OK", "New", "Delete", "Start", "Stop", "Pause", "Add", "Simulate")


def forged_post(page: Page, url: str, body: str) -> dict[str, Any]:
    """A POST from the page's own JavaScript, with the real CSRF token of the session."""
    result: dict[str, Any] = page.evaluate(
        """async ([url, body]) => {
            const token = document.cookie.split("; ")
                .find((c) => c.startsWith("csrftoken="))?.split("=")[1];
            const response = await fetch(url, {
                method: "POST", redirect: "manual", body,
                headers: {"X-CSRFToken": token,
                          "Content-Type": "application/x-www-form-urlencoded"},
            });
            return {status: response.status, text: await response.text()};
        }""",
        [url, body],
    )
    return result


def test_a_view_only_administrator_sees_everything_and_changes_nothing(
    logged_in_page: LoggedIn, view_only: User, world: World
) -> None:
    connector = add_connector("Internet", world, "*", 1)
    vs = world.virtual_server
    page = logged_in_page(view_only)
    expect(page.get_by_role("banner")).to_contain_text("View Only Administrator")

    def no_controls() -> None:
        for name in FORBIDDEN_CONTROLS:
            pattern = re.compile(rf"^{name}\b")
            expect(pane(page).get_by_role("button", name=pattern)).to_have_count(0)
            expect(pane(page).get_by_role("link", name=pattern)).to_have_count(0)

    for label in ("Default SMTP Virtual Server", "Internet", "First Organization"):
        tree_link(page, label).click()
        expect(heading(page)).to_contain_text("Properties")
        expect(pane(page)).to_contain_text("your role cannot change them")
        no_controls()
        controls = 0
        for name in [n.strip() for n in pane(page).get_by_role("tab").all_inner_texts()]:
            panel = open_tab(page, name)
            fields = "input:not([type=hidden]), select, textarea"
            expect(panel.locator(f":is({fields}):enabled")).to_have_count(0)
            controls += panel.locator(fields).count()
        assert controls > 3, label  # the fields are there, only disabled

    for label in ("SMTP", "Servers", "Connectors"):
        tree_link(page, label).click()
        expect(pane(page).get_by_role("table")).to_be_visible()
        no_controls()

    # Behind the page's back, with a valid CSRF token: refused by the role check itself.
    tree_link(page, "Default SMTP Virtual Server").click()
    for url, body in [
        (f"/servers/virtual-servers/{vs.pk}/pause/", ""),
        (f"/servers/virtual-servers/{vs.pk}/", "name=Hacked&port=2526"),
        (f"/servers/virtual-servers/{vs.pk}/delete/", ""),
        (f"/servers/{world.server.pk}/smtp/new/", "profile=iis6&name=Rogue&port=26"),
        (f"/connectors/{connector.pk}/delete/", ""),
    ]:
        answer = forged_post(page, url, body)
        assert answer["status"] == 403, (url, answer["status"])
        assert "Your role can view this but not change it." in answer["text"], url
    page.reload()
    expect(fact(page, "Desired state")).to_have_text("Running")
    expect(heading(page)).to_have_text("Default SMTP Virtual Server Properties")
    vs.refresh_from_db()
    assert (vs.name, vs.port, vs.desired_state) == ("Default SMTP Virtual Server", 2525, "running")
    assert VirtualServer.objects.count() == 1 and Connector.objects.count() == 1


# --- the tools ------------------------------------------------------------------------------


def test_the_routing_simulator_explains_a_route_with_cost_failover(
    logged_in_page: LoggedIn, view_only: User, world: World
) -> None:
    add_connector("Internet", world, "*", 1)
    add_connector(
        "Partner primary",
        world,
        "partner.example",
        1,
        smart_hosts="mx.partner.example",
        use_dns=False,
    )
    add_connector(
        "Partner backup", world, "partner.example", 10, smart_hosts="[192.0.2.25]", use_dns=False
    )
    page = logged_in_page(view_only)  # any role may ask
    tree_link(page, "Routing Simulator").click()
    expect(heading(page)).to_have_text("Routing Simulator")
    page.get_by_label("Sender:").fill("alice@example.com")
    page.get_by_label("Recipient:").fill("bob@partner.example")
    page.get_by_role("button", name="Simulate").click()

    expect(page.get_by_role("heading", name="Route for bob@partner.example")).to_be_visible()
    summary = pane(page).locator("table.route-summary")
    expect(summary.get_by_role("row", name=re.compile("^Route "))).to_contain_text("Connector")
    expect(summary.get_by_role("row", name=re.compile("^Connector "))).to_contain_text(
        "Partner primary"
    )
    expect(summary.get_by_role("row", name=re.compile("^Address space "))).to_contain_text(
        "partner.example (cost 1)"
    )
    expect(summary.get_by_role("row", name=re.compile("^Next hop "))).to_contain_text(
        "mx.partner.example"
    )
    steps = pane(page).locator("table.route-steps tbody tr")
    expect(steps.first).to_be_visible()
    assert steps.count() >= 2

    # The form keeps what was asked; the connector in the route links to its sheet.
    expect(page.get_by_label("Recipient:")).to_have_value("bob@partner.example")
    summary.get_by_role("link", name="Partner primary").click()
    expect(heading(page)).to_have_text("Partner primary Properties")

    # Someone else: the catch-all connector.
    tree_link(page, "Routing Simulator").click()
    page.get_by_label("Recipient:").fill("carol@elsewhere.example")
    page.get_by_role("button", name="Simulate").click()
    expect(pane(page).locator("table.route-summary")).to_contain_text("Internet")


def test_the_audit_log_shows_the_changes_made_in_the_console(
    logged_in_page: LoggedIn, administrator: User, view_only: User, world: World
) -> None:
    page = logged_in_page(administrator)
    tree_link(page, "Default SMTP Virtual Server").click()
    messages = open_tab(page, "Messages")
    messages.get_by_label("Limit message size to (KB)").fill("8192")
    press_ok(page)
    expect(pane(page).locator(".messages")).to_contain_text("Saved")
    with page.expect_navigation():
        pane(page).locator(".actions").get_by_role("button", name="Pause").click()

    viewer = logged_in_page(view_only)  # the log is for everyone to read
    tree_link(viewer, "Audit Log").click()
    expect(heading(viewer)).to_have_text("Audit Log")
    rows = pane(viewer).get_by_role("row")
    size = rows.filter(has_text="message_size_limit_kb")
    expect(size).to_have_count(1)
    expect(size).to_contain_text(administrator.username)
    expect(size).to_contain_text("Changed")
    expect(size).to_contain_text("Default SMTP Virtual Server")
    expect(size.locator(".old")).to_have_text("4096")
    expect(size.locator(".new")).to_have_text("8192")
    expect(rows.filter(has_text="desired_state")).to_contain_text("paused")

    # Filter by user: the viewer has changed nothing.
    viewer.get_by_label("User:").fill(view_only.username)
    viewer.get_by_role("button", name="Filter").click()
    expect(pane(viewer)).to_contain_text("No change matches these filters.")
    viewer.get_by_label("User:").fill(administrator.username)
    viewer.get_by_role("button", name="Filter").click()
    expect(pane(viewer).get_by_role("row").filter(has_text="message_size_limit_kb")).to_be_visible()
